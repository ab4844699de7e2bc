"""What a sweep checks before Ray starts, shared by the dry run and the run: its resume state and its data."""

from __future__ import annotations

from typing import Any

from sweeps.params import ParamSpec
from sweeps.points import apply_point
from sweeps.spec import SweepSpec
from trainables.config import AlignConfig
from trainables.schema import ConfigError


def data_paths(base: AlignConfig, search_space: dict[str, ParamSpec]) -> list[str]:
    """Return every data path a trial can read: base data, reasoning data and any searched path."""
    paths = [base.data.path] + ([base.reasoning_data.path] if base.reasoning_data else [])
    for field in ("data.path", "reasoning_data.path"):
        if field in search_space:
            paths += [str(v) for v in search_space[field].extremes()]
        section = field.partition(".")[0]
        bundles = search_space[section].bundles if section in search_space else None
        paths += [str(fields["path"]) for fields in (bundles or {}).values() if "path" in fields]
    return list(dict.fromkeys(paths))


def check_resume_state(spec: SweepSpec, resume: bool) -> None:
    """Return None when `--resume` matches what is on disk; raise ConfigError before Ray starts otherwise."""
    from ray import tune

    exists = tune.Tuner.can_restore(spec.experiment_path)
    if resume and not exists:
        raise ConfigError(f"--resume: no sweep state at {spec.experiment_path} (name={spec.name}, "
                          f"storage_path={spec.storage_path}); run without --resume to start it")
    if not resume and exists:
        raise ConfigError(f"name: a sweep named {spec.name!r} already has state at {spec.experiment_path}; "
                          f"continue it with --resume, or start another with name={spec.name}-2")


def check_data(base: AlignConfig, search_space: dict[str, ParamSpec]) -> None:
    """Return None when the largest data the search can ask for exists, with every data source it can pick.

    Numeric fields (data.size, reasoning_mix) are checked at their largest value; every other searched data
    value (a file, a bundle of path and format) is checked in each combination with them. ConfigError names
    the field, and the bundle when one is at fault.
    """
    import itertools

    from trainables.data import training_examples

    largest: dict[str, Any] = {}
    sources: dict[str, list[Any]] = {}
    for path, param in search_space.items():
        if not (path in ("data", "reasoning_data") or path.startswith(("data.", "reasoning_data."))
                or path == "reasoning_mix"):
            continue
        numbers = [v for v in param.extremes() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if numbers and len(numbers) == len(param.extremes()) and not param.bundles:
            largest[path] = max(numbers)
        else:  # e.g. a choice of data files or of data bundles: each must load
            sources[path] = param.extremes()
    for combination in itertools.product(*sources.values()):
        picked = dict(zip(sources, combination))
        cfg = apply_point(base, {**largest, **picked}, search_space)
        try:
            training_examples(cfg.data, cfg.reasoning_data, cfg.reasoning_mix, cfg.train.seed)
        except ConfigError as err:
            if not picked:
                raise
            where = ", ".join(f"search_space.{path}={value}" for path, value in picked.items())
            raise ConfigError(f"{err} (with {where})") from None
