"""From a spec's search space to Optuna: distributions, the sampler, the searcher and the study storage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sweeps.params import ParamSpec
from sweeps.spec import SweepSpec
from sweeps.tracking import redact_uri
from trainables.schema import ConfigError


def tune_param_space(space: dict[str, ParamSpec]) -> dict[str, Any]:
    """Return {dotted path: Tune domain}; OptunaSearch converts it, and Tune's live table shows each path."""
    from ray import tune

    out = {}
    for path, param in space.items():
        if param.kind == "choice":
            out[path] = tune.choice(list(param.choice))  # a bundle is sampled by its name
        elif param.kind == "loguniform":
            out[path] = tune.loguniform(*param.loguniform)
        elif param.kind == "uniform":
            out[path] = tune.uniform(*param.uniform)
        else:
            out[path] = tune.randint(param.int_range[0], param.int_range[1] + 1)  # randint excludes its upper end
    return out


def grid_values(space: dict[str, ParamSpec]) -> dict[str, list[Any]]:
    """Return {dotted path: every value} for Optuna's GridSampler (the spec has checked there are no float ranges)."""
    return {
        path: list(param.choice) if param.kind == "choice" else list(range(param.int_range[0], param.int_range[1] + 1))
        for path, param in space.items()
    }


def build_sampler(spec: SweepSpec):
    """Return the seeded Optuna sampler the spec runs (`SweepSpec.sampler_choice`: auto resolved), picklable."""
    from sweeps import picklable_samplers as samplers

    choice = spec.sampler_choice()
    if choice.name == "grid":
        return samplers.GridSampler(grid_values(spec.search_space), seed=spec.seed)
    if choice.name == "tpe":
        return samplers.TPESampler(seed=spec.seed, multivariate=True, **choice.options)
    build = {"nsga2": samplers.NSGAIISampler, "gp": samplers.GPSampler, "random": samplers.RandomSampler}
    return build[choice.name](seed=spec.seed, **choice.options)


def build_searcher(spec: SweepSpec):
    """Return Tune's OptunaSearch in its multi-objective form: one metric and one mode per objective.

    The space itself comes from the Tuner's param_space (`tune_param_space`).
    """
    from ray.tune.search.optuna import OptunaSearch

    from sweeps.constrained_search import ConstrainedOptunaSearch
    from sweeps.study_storage import CredentialFreeRDBStorage

    searcher, options = OptunaSearch, {}
    if spec.constraints:
        searcher, options = ConstrainedOptunaSearch, {"constraints": spec.constraints}
    return searcher(
        **options,
        metric=[o.name for o in spec.objectives],
        mode=[o.direction for o in spec.objectives],
        sampler=build_sampler(spec),
        points_to_evaluate=[dict(point) for point in spec.initial_points] or None,
        # OptunaSearch takes a storage object, not a URL; it pickles with Tune's state, without its password.
        storage=CredentialFreeRDBStorage(spec.optuna.storage) if spec.optuna.storage else None,
        study_name=spec.study_name,
    )


def check_study_storage(storage_url: str | None, study_name: str, resume: bool) -> None:
    """Return None when the study storage suits a new sweep (no such study yet) or a resumed one (the study is there).

    Opening an RDB storage creates its tables; OptunaSearch would do the same later, inside Tune.
    """
    if storage_url is None:
        return
    import optuna

    shown = redact_uri(storage_url)
    if storage_url.startswith("sqlite:///"):
        folder = Path(storage_url[len("sqlite:///"):]).parent
        if not folder.is_dir():
            raise ConfigError(f"optuna.storage: {shown}: folder {folder} does not exist; create it or point the "
                              "URL elsewhere")
    try:
        storage = optuna.storages.RDBStorage(storage_url)
        names = {summary.study_name: summary.n_trials
                 for summary in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    except Exception as err:  # drivers, network and auth all fail differently; each means "unusable"
        raise ConfigError(f"optuna.storage: {shown} cannot be opened: {err}") from None
    if resume and study_name not in names:
        raise ConfigError(f"--resume: study {study_name!r} is not in optuna.storage {shown}, so the sweep's "
                          "search cannot continue; point optuna.storage at the database the sweep started with "
                          "(copy a SQLite file from the old head)")
    if not resume and names.get(study_name):
        raise ConfigError(f"optuna.study_name: study {study_name!r} already holds {names[study_name]} "
                          f"trials in {shown}; continue its sweep with --resume, set optuna.study_name to start "
                          f"another, or delete it: optuna delete-study --storage URL --study-name {study_name}")


def fail_orphan_trials(storage_url: str | None, study_name: str) -> int:
    """Mark the study's RUNNING trials FAIL once every Tune trial has ended; return how many.

    With a study in RDB storage, Optuna records a trial the moment the searcher asks for it; when the
    driver is killed before Tune saves that trial, it is never run or told, and would stay RUNNING.
    """
    if storage_url is None:
        return 0  # the study lives in Tune's searcher state, which Tune saves with its trials
    import optuna
    from optuna.trial import TrialState

    from trainables.private_apis import fail_study_trial

    storage = optuna.storages.RDBStorage(storage_url)
    study = optuna.load_study(study_name=study_name, storage=storage)
    orphans = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in orphans:
        fail_study_trial(storage, trial)
    return len(orphans)
