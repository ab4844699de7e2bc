"""Reading a sweep spec: the YAML, its overrides, the schema, and the checks that need the whole spec.

Every searched path must exist in AlignConfig, and every value the search can produce (each choice, both
ends of each range, each initial point) must give a valid AlignConfig, so a bad range fails here, not in
trial 7; each objective and constraint needs a benchmark of its kind.
"""

from __future__ import annotations

from pathlib import Path

from sweeps.objectives import OBJECTIVE_SOURCES
from sweeps.params import nest_search_space
from sweeps.points import apply_point, check_path
from sweeps.spec import SweepSpec
from trainables.schema import ConfigError, apply_overrides, build, read_yaml


TINY_SPEC = Path(__file__).with_name("tiny.yaml")


def check_search_space(spec: SweepSpec) -> None:
    """Return None when every searched path exists and every value it can take gives a valid AlignConfig."""
    paths = sorted(spec.search_space)
    for path in paths:
        bundles = spec.search_space[path].bundles
        if bundles is None:
            check_path(path)
        else:
            for name, fields in bundles.items():
                for field in fields:
                    try:
                        check_path(f"{path}.{field}")
                    except ConfigError as err:
                        raise ConfigError(f"search_space.{path}.choice.{name}: {err}") from None
        clash = next((other for other in paths if other.startswith(path + ".")), None)
        if clash and bundles is None:
            raise ConfigError(f"search_space.{path}: it contains {clash}, which is searched too; keep one")
        if clash:
            inner = clash[len(path) + 1:]
            setter = next((name for name, fields in bundles.items() if inner in fields), None)
            if setter:
                raise ConfigError(f"search_space.{path}: bundle {setter!r} sets {inner}, which is searched too "
                                  f"({clash}); drop it from the bundle or stop searching {clash}")
    base = spec.base.model_dump(mode="json")
    for path, param in spec.search_space.items():
        for value in param.extremes():
            shown = f"bundle {value!r}" if param.bundles else f"value {value!r}"
            try:
                apply_point(base, {path: value}, spec.search_space)
            except ConfigError as err:
                raise ConfigError(f"search_space.{path}: the {shown} it can take is invalid: {err}") from None
    for i, point in enumerate(spec.initial_points):
        for path, value in point.items():
            if path not in spec.search_space:
                raise ConfigError(f"initial_points.{i}: {path} is not searched (searched: "
                                  f"{', '.join(spec.search_space)}); fix the point, or drop the points with "
                                  f"initial_points=[]")
            problem = spec.search_space[path].rejects(value)
            if problem:
                raise ConfigError(f"initial_points.{i}.{path}: {problem}; fix the point, or drop the points "
                                  f"with initial_points=[] when the search space was narrowed")
        try:
            apply_point(base, point, spec.search_space)
        except ConfigError as err:
            raise ConfigError(f"initial_points.{i}: {err}") from None


def check_objectives(spec: SweepSpec) -> None:
    """Return None when each objective has a benchmark of its kind; raise ConfigError naming what to add."""
    from evaluators.benchmarks import get_benchmark

    kinds = {get_benchmark(name, spec.evaluation.data_dir).kind for name in spec.evaluation.benchmarks}
    for objective in spec.objectives:
        needed = OBJECTIVE_SOURCES[objective.name]
        if needed not in kinds:
            raise ConfigError(f"objectives: {objective.name} needs a {needed} benchmark in evaluation.benchmarks "
                              f"(have {', '.join(spec.evaluation.benchmarks)})")
    for i, constraint in enumerate(spec.parsed_constraints()):
        needed = OBJECTIVE_SOURCES[constraint.name]
        if needed not in kinds:
            raise ConfigError(f"constraints.{i}: {constraint} needs a {needed} benchmark in evaluation.benchmarks "
                              f"(have {', '.join(spec.evaluation.benchmarks)})")


def load_spec(path: str | Path | None = None, overrides: list[str] = ()) -> SweepSpec:
    """Return the validated sweep spec from a YAML file (the embedded tiny.yaml when None) with overrides applied.

    Raises ConfigError naming the field path for any bad input; nothing expensive has run yet.
    """
    path = Path(path) if path else TINY_SPEC
    data = read_yaml(path)
    if isinstance(data.get("search_space"), dict):
        data["search_space"] = nest_search_space(data["search_space"])
    data = apply_overrides(data, list(overrides))
    spec = build(SweepSpec, data, source=str(path), overrides=list(overrides))
    check_search_space(spec)
    check_objectives(spec)
    return spec
