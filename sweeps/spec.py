"""The sweep spec's schema: one typed model of the YAML file, with the checks between its own fields.

A spec fixes a base alignment run (`base`, an AlignConfig), how each trial is evaluated
(`evaluation`, an EvalConfig), which AlignConfig fields Optuna searches (`search_space`, keyed by
dotted paths such as `train.learning_rate`, `sweeps.params`) and the objectives of the Pareto front
(`sweeps.objectives`). `sweeps.loader.load_spec` reads one and runs the checks that need more than
the schema: the searched paths and values against AlignConfig, the objectives against the benchmarks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from evaluators.config import EvalConfig
from sweeps.objectives import Constraint, ConstraintText, Objective, default_objectives
from sweeps.params import ParamSpec, discrete_points, flatten_search_space, grid_points
from sweeps.pareto import reference_point
from sweeps.sampler_choice import OPTUNA_POPULATION, SamplerChoice, choose_sampler
from trainables.config import AlignConfig
from trainables.schema import Strict


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


