"""The sweep spec: one YAML file, checked by one typed schema before Ray starts.

A spec fixes a base alignment run (`base`, an AlignConfig), how each trial is evaluated
(`evaluation`, an EvalConfig), which AlignConfig fields Optuna searches (`search_space`, keyed by
dotted paths such as `train.learning_rate`) and the objectives of the Pareto front. Every searched
path must exist in AlignConfig, and every value the search can produce (each choice, both ends of
each range) must give a valid AlignConfig, so a bad range fails here, not in trial 7.
"""

from __future__ import annotations

import copy
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from evaluators.config import EvalConfig
from evaluators.metrics import HEADLINES
from sweeps.pareto import reference_point
from sweeps.sampler_choice import OPTUNA_POPULATION, SamplerChoice, choose_sampler
from trainables.config import AlignConfig
from trainables.schema import ConfigError, Strict, apply_overrides, build, read_yaml

PARAM_KINDS = ("choice", "loguniform", "uniform", "int")
BUNDLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Which benchmark kind produces each objective (EvalResult's headline numbers).
OBJECTIVE_SOURCES = {name: kind for name, (kind, _) in HEADLINES.items()}
TINY_SPEC = Path(__file__).with_name("tiny.yaml")


class ParamSpec(Strict):
    """How Optuna samples one AlignConfig field: exactly one of choice, loguniform, uniform or int."""

    choice: list[Any] | dict[str, dict[str, Any]] | None = Field(
        None, min_length=1, description="Values to choose from (numbers, strings, booleans or null), or named "
        "bundles of fields that change together, e.g. data: {choice: {directrefusal: {path: ..., format: "
        "directrefusal}, safechain: {path: ..., format: safechain}}}: each bundle's fields are set under the "
        "searched path, and params, tables and plots show the bundle's name.")
    loguniform: tuple[float, float] | None = Field(None, description="[low, high]: a float sampled uniformly in "
                                                                     "log space; low > 0.")
    uniform: tuple[float, float] | None = Field(None, description="[low, high]: a float sampled uniformly.")
    int_range: tuple[int, int] | None = Field(None, alias="int", description="[low, high]: an integer sampled "
                                                                             "uniformly, both ends included.")

    model_config = ConfigDict(**Strict.model_config, validate_by_name=True)

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> "ParamSpec":
        given = [kind for kind in PARAM_KINDS if self.bounds_or_choices(kind) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(PARAM_KINDS)} (got {', '.join(given) or 'none'})")
        if isinstance(self.choice, dict):
            for name, fields in self.choice.items():
                if not BUNDLE_NAME.match(name):
                    raise ValueError(f"choice: bundle name {name!r} must be letters, digits, _ . - (it is shown "
                                     "in tables and MLflow)")
                if not fields:
                    raise ValueError(f"choice.{name}: a bundle sets at least one field")
        elif self.choice is not None:
            bad = [v for v in self.choice if v is not None and not isinstance(v, (bool, int, float, str))]
            if bad:
                raise ValueError(f"choice values must be numbers, strings, booleans or null; got {bad[0]!r} "
                                 "(fix a list-valued field in base instead of searching it)")
        else:
            low, high = self.bounds_or_choices(self.kind)
            if not low < high:
                raise ValueError(f"{self.kind}: low must be below high, got [{low}, {high}]")
            if self.kind == "loguniform" and low <= 0:
                raise ValueError(f"loguniform: low must be > 0, got {low}")
        return self

    def bounds_or_choices(self, kind: str) -> Any:
        return {"choice": self.choice, "loguniform": self.loguniform, "uniform": self.uniform,
                "int": self.int_range}[kind]

    @property
    def kind(self) -> str:
        return next(kind for kind in PARAM_KINDS if self.bounds_or_choices(kind) is not None)

    def rejects(self, value: Any) -> str | None:
        """Return why `value` is not one this parameter can take (a reason for an error message), or None."""
        if self.kind == "choice":
            names = list(self.choice)
            return None if any(value == v and type(value) is type(v) for v in names) else (
                f"{value!r} is not one of its choices ({', '.join(map(repr, names))})")
        low, high = self.bounds_or_choices(self.kind)
        number = (int,) if self.kind == "int" else (int, float)
        if isinstance(value, bool) or not isinstance(value, number):
            return f"{value!r} is not {'an integer' if self.kind == 'int' else 'a number'}"
        return None if low <= value <= high else f"{value!r} is outside its {self.kind} range [{low}, {high}]"

    def extremes(self) -> list[Any]:
        """Return the values that bound what can be sampled: every choice (a bundle's name), or both ends of the range."""
        return list(self.bounds_or_choices(self.kind))

    @property
    def bundles(self) -> dict[str, dict[str, Any]] | None:
        """Return {bundle name: {dotted field: value}} of a choice of bundles, or None for any other kind."""
        if not isinstance(self.choice, dict):
            return None
        return {name: _flatten_fields(fields) for name, fields in self.choice.items()}


def _flatten_fields(fields: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in fields.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten_fields(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class Objective(Strict):
    """One axis of the Pareto front: an evaluation headline and whether lower or higher is better."""

    name: Literal["harmful_score", "harmful_score_plus", "reasoning_accuracy", "refusal_rate"] = Field(
        description="Evaluation headline (percent): harmful_score, harmful_score_plus, reasoning_accuracy or "
                    "refusal_rate (over-refusal, needs an overrefusal benchmark such as xstest).")
    direction: Literal["min", "max"] = Field(description="min: lower is better; max: higher is better.")
    reference: float | None = Field(None, description="Hypervolume reference value; null takes the worst "
                                                      "percentage (100 for min, 0 for max).")


CONSTRAINT = re.compile(r"^\s*([a-z_]+)\s*(<=|>=)\s*(-?\d+(?:\.\d+)?)\s*$")


@dataclass(frozen=True)
class Constraint:
    """One feasibility bound on a reported headline, such as `harmful_score <= 10`."""

    name: str
    op: str  # "<=" or ">="
    bound: float

    @classmethod
    def parse(cls, text: str) -> "Constraint":
        """Return the constraint `text` states; raise ValueError saying the accepted form."""
        match = CONSTRAINT.match(text)
        if not match or match.group(1) not in OBJECTIVE_SOURCES:
            raise ValueError(f"{text!r} is not NAME <= NUMBER or NAME >= NUMBER with NAME one of "
                             f"{', '.join(OBJECTIVE_SOURCES)} (e.g. \"harmful_score <= 10\")")
        return cls(match.group(1), match.group(2), float(match.group(3)))

    def __str__(self) -> str:
        return f"{self.name} {self.op} {self.bound:g}"

    def violation(self, value: float) -> float:
        """Return how far `value` breaks the bound (<= 0 when it holds): Optuna's constraint value."""
        return value - self.bound if self.op == "<=" else self.bound - value


def feasible(record: dict[str, Any], constraints: list[Constraint]) -> bool | None:
    """Return whether a trial's values meet every constraint; None when a constrained value is missing."""
    values = [record.get(c.name) for c in constraints]
    if any(not isinstance(v, (int, float)) for v in values):
        return None
    return all(c.violation(v) <= 0 for c, v in zip(constraints, values))


# A constraint as the spec holds it: checked item by item (errors name constraints.N), kept in its normal form.
ConstraintText = Annotated[str, AfterValidator(lambda text: str(Constraint.parse(text)))]


def default_objectives() -> list[Objective]:
    return [Objective(name="harmful_score", direction="min"), Objective(name="reasoning_accuracy", direction="max")]


class MlflowSettings(Strict):
    """Where the sweep's runs are tracked."""

    tracking_uri: str = Field("sqlite:///mlflow.db", description="MLflow tracking URI: sqlite:///FILE (relative "
                                                                 "to the working directory), a folder, or "
                                                                 "http(s)://server. Checked before any trial runs.")
    experiment: str | None = Field(None, description="MLflow experiment name; null uses the sweep's name.")


class OptunaSettings(Strict):
    """Where Optuna keeps the study: in memory (inside Tune's state) or in an RDB next to MLflow."""

    storage: str | None = Field(None, description="Optuna RDB storage URL, e.g. sqlite:///optuna.db (relative to "
                                "the working directory) or postgresql://user@host/db; optuna-dashboard reads it. "
                                "--resume needs the same database again. null keeps the study in Tune's state "
                                "only. A password in the URL is masked in MLflow and in plans.")
    study_name: str | None = Field(None, min_length=1, description="Name of the study in the storage; null uses "
                                   "the sweep's name.")

    @field_validator("storage")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from sqlalchemy.engine import make_url  # Optuna's own dependency; parses without connecting
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(value)
        except ArgumentError:
            raise ValueError(f"{value!r} is not a database URL; give e.g. sqlite:///optuna.db or "
                             "postgresql://user@host/db") from None
        if url.get_backend_name() == "sqlite":
            if not url.database or url.database == ":memory:":
                raise ValueError("an in-memory SQLite database is lost with the driver; name a file, e.g. "
                                 "sqlite:///optuna.db, or use null")
            # Trials and --resume may run in another working directory: pin the file now.
            return "sqlite:///" + str(Path(url.database).expanduser().resolve())
        return value


class Estimate(Strict):
    """What you expect one trial to cost; the dry run turns it into the sweep's GPU-hours."""

    gpu_hours_per_trial: float | None = Field(None, gt=0, description="GPU-hours of one trial's own resources (one "
                                              "training seed; replicates multiply it): "
                                              "its Train workers, and a full-weights checkpoint's evaluator "
                                              "while it is scored. null: no estimate.")
    gpu_hours_per_evaluation: float | None = Field(None, gt=0, description="GPU-hours of scoring one checkpoint "
                                                   "(part of gpu_hours_per_trial): with evaluate_epochs every or "
                                                   "fidelity the dry run adds one per extra epoch read, and prices "
                                                   "what early stopping can save. null: not split.")
    hours_per_trial: float | None = Field(None, gt=0, description="Wall-clock hours of one trial (one training "
                                          "seed), training and evaluation; gives the sweep's duration and the GPU-hours of the "
                                          "evaluator and judge held for all of it.")


class Switch(Strict):
    """Settings that `true` turns on with their defaults (`early_stopping: true`), as well as a mapping of them."""

    @model_validator(mode="before")
    @classmethod
    def _from_switch(cls, value: Any) -> Any:
        return {} if value is True else value


class EarlyStopping(Switch):
    """Stop a trial whose readings at an epoch are dominated by the sweep's points (sweeps.early_stopping)."""

    grace_epochs: int = Field(1, ge=1, description="The first epoch at which a trial may be stopped; earlier "
                              "epochs always go on.")
    stop_collapsed: bool = Field(False, description="Also stop a trial whose readings at an epoch are flagged "
                                 "collapsed (mostly incoherent replies, never a point of the front). Off by default: "
                                 "on the tiny LRM a run collapsed at one epoch can recover at the next "
                                 "(docs/benchmarks.md, \"What the savings save\").")


class Racing(Switch):
    """Score each trial's benchmarks in slices and stop when its readings cannot reach the front (evaluators.racing)."""

    slices: int = Field(4, ge=2, description="Slices of every benchmark's items (seeded random subsets); after "
                        "each but the last the evaluation stops when a recorded point beats the best end of every "
                        "95% interval so far.")


class SweepSpec(Strict):
    """A multi-objective search over safety-alignment settings, scored by the evaluator service."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Sweep name: the Tune experiment "
                      "folder under storage_path and the default MLflow experiment. Letters, digits, _ . -")
    base: AlignConfig = Field(description="The alignment run every trial starts from; searched fields "
                                          "override it, all others stay fixed.")
    evaluation: EvalConfig = Field(description="How every trial's checkpoint, and the base model once, is "
                                               "evaluated.")
    search_space: dict[str, ParamSpec] = Field(min_length=1, description="Searched fields, keyed by dotted "
                                               "AlignConfig path (data.size, train.learning_rate, train.epochs, "
                                               "reasoning_mix, ...), each with one of choice / loguniform / "
                                               "uniform / int. Nested mappings are read as dotted paths.")
    objectives: list[Objective] = Field(default_factory=default_objectives, min_length=2, description="The front's "
                                        "axes: harmful_score min and reasoning_accuracy max by default; add "
                                        "refusal_rate min as a third.")
    constraints: list[ConstraintText] = Field(default_factory=list, description="Feasibility bounds on reported headlines, "
                                   "e.g. [\"harmful_score <= 10\", \"reasoning_accuracy >= 50\"]. Optuna's samplers "
                                   "(GP, NSGA-II, TPE) prefer trials that meet them; tables and plots mark each trial "
                                   "feasible or not, and `safetytax pareto` names the cheapest feasible trial (the "
                                   "feasible one with the highest reasoning_accuracy). The grid and random "
                                   "search ignore them when sampling.")
    sampler: Literal["auto", "gp", "tpe", "nsga2", "random", "grid"] = Field(
        "auto", description="Optuna sampler: auto (chosen from the search space and num_samples, following the "
        "replays in docs/benchmarks.md; the dry run and the parent run's tags say what it chose and why), gp (Gaussian "
        "process, log expected hypervolume improvement), tpe (multi-objective TPE), nsga2 (NSGA-II), random, or "
        "grid (every combination of choice/int values).")
    seed: int = Field(0, description="Seed of the sampler, so the same spec proposes the same trials.")
    population_size: int | None = Field(None, ge=2, description="NSGA-II population (trials per generation); null "
                                        "uses Optuna's 50. Its first generation is random, so num_samples must be at "
                                        "least twice the population.")
    startup_trials: int | None = Field(None, ge=1, description="gp and tpe: random trials before the model-based "
                                       "ones; null uses Optuna's 10, and auto a quarter of num_samples (2 to 10).")
    num_samples: int = Field(8, ge=1, description="Trials to run (for grid: at most the number of grid points).")
    initial_points: list[dict[str, Any]] = Field(default_factory=list, description="Points tried first, before "
                                                 "the sampler proposes any (Tune's points_to_evaluate), e.g. "
                                                 "[{data.size: 60, train.learning_rate: 2.0e-3}]: each maps "
                                                 "searched paths to values inside their ranges (a bundle by its "
                                                 "name); paths left out are sampled. With nsga2 they are part of "
                                                 "the first generation; with fewer trials than points, the first "
                                                 "num_samples are tried. Not with grid; [] drops them (needed "
                                                 "when an override stops searching a path they set).")
    replicates: int = Field(1, ge=1, description="Training seeds per sampled point: each trial trains and scores "
                            "the point K times (train.seed, train.seed + 1, ...) and reports the mean of each reading "
                            "with a 95% Student-t interval across seeds (NAME_ci_low, NAME_ci_high); the front is "
                            "built on the means and every seed's readings stay in MLflow as seed<k>/NAME. 1 keeps "
                            "one run per point.")
    evaluate_epochs: Literal["last", "every", "fidelity"] = Field(
        "last", description="Checkpoints a trial evaluates: last (the end of training); every (each epoch's, so one "
        "run of E epochs reads the whole curve: each reading goes to Tune with training_iteration = epoch and to "
        "MLflow at step = epoch, and the trial's readings are its last epoch's); or fidelity (as every, and each "
        "epoch K is a point of its own on the front, the K-epoch run, so train.epochs is not searched: "
        "base.train.epochs is the longest run; needs base.train.scheduler: constant, since with a decaying "
        "schedule or warm-up epoch K of a longer run is not the K-epoch run). Not with replicates above 1.")
    early_stopping: EarlyStopping | None = Field(
        None, description="Stop a trial at an epoch when a recorded point beats the best end of every 95% interval "
        "of its readings there (true, or {grace_epochs: K, stop_collapsed: bool}); needs evaluate_epochs every or "
        "fidelity (a sweep always has two objectives or more). The stopped trial keeps its last readings, tagged "
        "early_stopping.epoch and early_stopping.reason. null (the default) runs every trial to its end.")
    racing: Racing | None = Field(
        None, description="Evaluate a trial's checkpoints in slices (true, or {slices: K}) and stop once a recorded "
        "point beats the best end of every 95% interval of the readings so far; the reading keeps its partial n and "
        "interval, and the run its tag racing.stopped. The base model is always read in full. Needs "
        "evaluation.cache_dir (each slice's replies are cached) and replicates=1. null reads every item.")
    max_concurrent_trials: int = Field(1, ge=1, description="Trials running at once; each runs its own Ray "
                                       "Train workers, so size this to the cluster.")
    resources_per_trial: dict[str, float] = Field(
        default_factory=lambda: {"CPU": 0.0, "memory": 512 * 2**20},
        description="Ray resources the trial's driver function reserves (CPU, GPU, memory in bytes, custom). It "
                    "only coordinates: Train workers (base.scaling) and evaluator replicas reserve their own.")
    max_failures: int = Field(1, ge=0, description="Retries of a failed trial (Tune FailureConfig); a trial that "
                              "still fails is recorded with its error and the sweep goes on.")
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings, description="MLflow tracking store.")
    storage_path: str = Field("safetytax_runs/sweeps", description="Where Tune keeps the sweep's state (for "
                              "--resume): a local folder (relative to the working directory) or s3://, gs://.")
    optuna: OptunaSettings = Field(default_factory=OptunaSettings, description="Optuna study storage.")
    estimate: Estimate = Field(default_factory=Estimate, description="Cost estimate that the dry run "
                               "(--dry-run) prints.")

    @field_validator("search_space", mode="before")
    @classmethod
    def _flatten_nested_paths(cls, value: Any) -> Any:
        return flatten_search_space(value) if isinstance(value, dict) else value

    @field_validator("storage_path")
    @classmethod
    def _absolute_local_storage(cls, value: str) -> str:
        # Tune needs an absolute local path, and trials run in other working directories.
        return value if "://" in value else str(Path(value).expanduser().resolve())

    @field_validator("resources_per_trial")
    @classmethod
    def _non_negative(cls, value: dict[str, float]) -> dict[str, float]:
        for name, amount in value.items():
            if amount < 0:
                raise ValueError(f"{name} must be >= 0, got {amount}")
        if not any(value.values()):
            raise ValueError("reserve something (Tune cannot place a trial that needs nothing), e.g. "
                             "{CPU: 0, memory: 536870912}")
        return value

    @model_validator(mode="after")
    def _check_search(self) -> "SweepSpec":
        names = [o.name for o in self.objectives]
        if len(set(names)) != len(names):
            raise ValueError(f"objectives: each objective may appear once, got {names}")
        if self.sampler == "grid":
            grid = grid_points(self.search_space)
            if self.num_samples > grid:
                raise ValueError(f"num_samples: {self.num_samples} trials asked for, but the grid has only {grid} "
                                 "points; lower num_samples or add values")
        if self.sampler == "nsga2":
            population = self.population_size or OPTUNA_POPULATION
            if self.num_samples < 2 * population:
                fix = (f"set population_size to at most {self.num_samples // 2}, " if self.num_samples >= 4 else "")
                raise ValueError(f"population_size: NSGA-II's first generation of {population} trials is random, and "
                                 f"num_samples={self.num_samples} leaves {max(0, self.num_samples - population)} bred "
                                 f"trials, less than one generation; {fix}raise num_samples to {2 * population}, or "
                                 "use sampler=auto")
        points = discrete_points(self.search_space)
        if self.sampler == "auto" and points is not None and self.num_samples > points:
            raise ValueError(f"num_samples: the search space has only {points} points (every searched field is a "
                             f"choice or int), so {self.num_samples} trials would repeat points, and a repeat only "
                             f"reuses the earlier result; set num_samples={points} (auto then runs the grid), or "
                             "fewer")
        if self.evaluate_epochs == "fidelity":
            if self.base.train.scheduler != "constant":
                raise ValueError(f"evaluate_epochs: fidelity reads epoch K of a {self.base.train.epochs}-epoch run as "
                                 f"the K-epoch run, which holds only for a constant schedule, and "
                                 f"base.train.scheduler is {self.base.train.scheduler}; set "
                                 "base.train.scheduler=constant, or use evaluate_epochs=every (epochs read as points "
                                 "of the longer run)")
            if "train.epochs" in self.search_space:
                raise ValueError("evaluate_epochs: fidelity makes every epoch up to base.train.epochs a point of its "
                                 "own, so search_space.train.epochs would search it twice; drop it "
                                 "(search_space.train.epochs=null) and set base.train.epochs to the longest run")
        if self.evaluate_epochs != "last" and self.replicates > 1:
            raise ValueError(f"evaluate_epochs: {self.evaluate_epochs} evaluates one training run's epochs, and replicates="
                             f"{self.replicates} trains several; use evaluate_epochs=last with replicates, or "
                             "replicates=1")
        if (self.evaluate_epochs != "last" and self.base.finetune == "full"
                and self.evaluation.backend == "vllm"):
            raise ValueError(f"evaluate_epochs: {self.evaluate_epochs} with finetune full and backend vllm is not supported (the "
                             "replicas read the final checkpoint from the bucket only); use evaluate_epochs=last, "
                             "LoRA, or backend=transformers")
        if self.early_stopping is not None:
            if self.evaluate_epochs == "last":
                raise ValueError("early_stopping: a trial can only be stopped at an epoch it reads; set "
                                 "evaluate_epochs=every (or fidelity), or early_stopping=null")
            if self.early_stopping.grace_epochs > self.base.train.epochs:
                raise ValueError(f"early_stopping.grace_epochs: {self.early_stopping.grace_epochs} is past the "
                                 f"last epoch (base.train.epochs={self.base.train.epochs}); lower it")
        if self.racing is not None:
            if self.evaluation.cache_dir is None:
                raise ValueError("racing: each slice's replies are cached, so that completing an evaluation later "
                                 "pays for none of them again, and evaluation.cache_dir is null; set it, or "
                                 "racing=null")
            if self.replicates > 1:
                raise ValueError(f"racing: the intervals of replicates={self.replicates} come from the seeds, not the "
                                 "items, so slices cannot show a trial is out; set replicates=1, or racing=null")
        choice = self.sampler_choice()
        if self.initial_points and choice.name == "grid":
            chosen = "" if self.sampler == "grid" else f" ({choice.reason})"
            raise ValueError(f"initial_points: the grid sampler tries every point itself{chosen}; drop them "
                             "(initial_points=[]) or use another sampler")
        return self

    @property
    def experiment_name(self) -> str:
        return self.mlflow.experiment or self.name

    @property
    def study_name(self) -> str:
        return self.optuna.study_name or self.name

    @property
    def experiment_path(self) -> str:
        """Return where Tune keeps this sweep's state: storage_path/name."""
        return f"{self.storage_path.rstrip('/')}/{self.name}"

    def sampler_choice(self) -> SamplerChoice:
        """Return the sampler this sweep runs, with its options and the reason (auto's choice, or the spec's)."""
        return choose_sampler(self.sampler, self.num_samples, self.population_size, self.startup_trials,
                              discrete_points(self.search_space))

    def parsed_constraints(self) -> list[Constraint]:
        return [Constraint.parse(text) for text in self.constraints]

    def directions(self) -> dict[str, str]:
        """Return {objective: "min" | "max"} in the spec's order."""
        return {o.name: o.direction for o in self.objectives}

    def reference_point(self) -> dict[str, float]:
        """Return the hypervolume reference point: each objective's `reference` or its worst percentage."""
        return reference_point(self.directions(), {o.name: o.reference for o in self.objectives})


def flatten_search_space(space: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Return `space` with nested mappings folded into dotted keys; a null entry (un-searched by an override) is dropped."""
    flat = {}
    for key, value in space.items():
        path = f"{prefix}{key}"
        if value is None:
            continue
        if isinstance(value, dict) and value and not any(k in PARAM_KINDS for k in value):
            flat.update(flatten_search_space(value, path + "."))
        else:
            flat[path] = value
    return flat


def nest_search_space(space: dict[str, Any]) -> dict[str, Any]:
    """Return `space` with dotted keys split into nested mappings, so `key=value` overrides merge into it."""
    nested: dict[str, Any] = {}
    for path, value in flatten_search_space(space).items():
        node = nested
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def discrete_points(space: dict[str, ParamSpec]) -> int | None:
    """Return the number of points of a space whose every field is a choice or int, or None when a range is a float."""
    if any(param.kind not in ("choice", "int") for param in space.values()):
        return None
    return grid_points(space)


def grid_points(space: dict[str, ParamSpec]) -> int:
    """Return the number of grid points; raise ValueError when a float range cannot be enumerated."""
    total = 1
    for path, param in space.items():
        if param.kind == "choice":
            total *= len(param.choice)
        elif param.kind == "int":
            total *= param.int_range[1] - param.int_range[0] + 1
        else:
            raise ValueError(f"search_space.{path}: the grid sampler needs choice or int values, not {param.kind}")
    return total


def _field_model(annotation: Any) -> type[BaseModel] | None:
    """Return the pydantic model inside an annotation such as `DataSource | None`, or None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        return models[0] if len(models) == 1 else None
    return None


def check_path(path: str, model: type[BaseModel] = AlignConfig) -> None:
    """Return None when `path` names a field of `model`; raise ConfigError naming the path otherwise."""
    parts = path.split(".")
    current: type[BaseModel] | None = model
    for depth, part in enumerate(parts):
        so_far = ".".join(parts[: depth + 1])
        if current is None:
            raise ConfigError(f"search_space.{path}: {'.'.join(parts[:depth])} is not a section, so it has no "
                              f"field {part!r}")
        if part not in current.model_fields:
            known = ", ".join(current.model_fields)
            raise ConfigError(f"search_space.{path}: {so_far} is not an AlignConfig field (known here: {known})")
        current = _field_model(current.model_fields[part].annotation)
    if current is not None:
        raise ConfigError(f"search_space.{path}: {path} is a whole section; search one of its fields "
                          f"({', '.join(current.model_fields)})")


def set_path(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Return a copy of config data with the dotted `path` set to `value`."""
    data = copy.deepcopy(data)
    node = data
    *parents, leaf = path.split(".")
    for depth, part in enumerate(parents):
        if not isinstance(node.get(part), dict):
            where = ".".join(parents[: depth + 1])
            raise ConfigError(f"search_space.{path}: base.{where} is not set, so {path} cannot be searched; "
                              f"give base.{where} first")
        node = node[part]
    node[leaf] = value
    return data


def expand_point(space: dict[str, ParamSpec], point: dict[str, Any]) -> dict[str, Any]:
    """Return a sampled point with each bundle's name replaced by its fields, sections before their fields.

    `{data: safechain, data.size: 30}` becomes `{data.path: ..., data.format: safechain, data.size: 30}`.
    """
    out: dict[str, Any] = {}
    for path in sorted(point, key=lambda p: p.count(".")):
        bundles = space[path].bundles if path in space else None
        if bundles is None:
            out[path] = point[path]
        else:
            out.update({f"{path}.{field}": value for field, value in bundles[point[path]].items()})
    return out


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
                _build_point(spec, base, {path: value})
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
            _build_point(spec, base, point)
        except ConfigError as err:
            raise ConfigError(f"initial_points.{i}: {err}") from None


def _build_point(spec: SweepSpec, base: dict[str, Any], point: dict[str, Any]) -> AlignConfig:
    """Return the AlignConfig of the base with `point` applied; raise ConfigError when it is invalid."""
    data = base
    for field, value in expand_point(spec.search_space, point).items():
        data = set_path(data, field, value)
    shown = ", ".join(f"{path}={value!r}" for path, value in point.items())
    return build(AlignConfig, data, source=f"(base with {shown})")


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
