"""Which Optuna sampler a sweep runs, with its options and the reason: the spec's own choice, or `auto`'s.

`auto` follows the replays of recorded grids in docs/benchmarks.md ("Which sampler finds the front"),
not folklore: on budgets of 8 to 32 trials the Gaussian-process sampler reached 95% of a table's front
hypervolume in a fraction of the trials random search needed, ahead of multivariate TPE, while NSGA-II,
whose first generation is random, had not left its first generations. GP's proposal time grows with the
trials it has seen, so beyond GP_MAX_TRIALS auto hands over to TPE, whose cost stays flat.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Optuna's own defaults, stated where a plan or a tag shows them.
OPTUNA_STARTUP_TRIALS = 10
OPTUNA_POPULATION = 50
# auto: GP up to this many trials (a GP proposal took under 3 s at 200 trials on 2 cores), TPE beyond.
GP_MAX_TRIALS = 200
# auto: random trials before GP's model takes over, by budget: a quarter of the trials, at least 2 and at
# most Optuna's 10 (docs/benchmarks.md: fewer random trials reached the front sooner at 8 to 32 trials).
AUTO_STARTUP_FRACTION, AUTO_STARTUP_MIN = 0.25, 2

LABELS = {"nsga2": "NSGA-II", "tpe": "multi-objective TPE", "gp": "Gaussian process (GPSampler, log EHVI)",
          "random": "random search", "grid": "grid (Optuna's GridSampler)"}


@dataclass(frozen=True)
class SamplerChoice:
    """The sampler a sweep runs: its name, the options it is built with (beyond the seed), and why."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    reason: str = "named in the spec"

    def describe(self) -> str:
        """Return the sampler as the plan and the parent run show it, e.g. "NSGA-II (population 16)"."""
        detail = ""
        if self.name == "nsga2":
            detail = f" (population {self.options.get('population_size', OPTUNA_POPULATION)})"
        elif self.name in ("tpe", "gp"):
            detail = f" ({self.options.get('n_startup_trials', OPTUNA_STARTUP_TRIALS)} random trials first)"
        return LABELS[self.name] + detail


def auto_startup_trials(num_samples: int) -> int:
    """Return the random trials before the model-based ones that auto gives a budget of `num_samples` trials."""
    return max(AUTO_STARTUP_MIN, min(OPTUNA_STARTUP_TRIALS, round(num_samples * AUTO_STARTUP_FRACTION)))


def choose_sampler(sampler: str, num_samples: int, population_size: int | None = None,
                   startup_trials: int | None = None, discrete_points: int | None = None) -> SamplerChoice:
    """Return the sampler a sweep runs: `sampler` as named (with the spec's options), or auto's choice.

    `discrete_points` is the size of the search space when every field is a choice or int (None otherwise).
    """
    if sampler == "auto":
        if discrete_points is not None and discrete_points <= num_samples:
            return SamplerChoice("grid", {}, f"auto: the search space has {discrete_points} points and the sweep "
                                             f"{num_samples} trials: the grid tries each point once, where a "
                                             "sampler would repeat some")
        startup = startup_trials or auto_startup_trials(num_samples)
        if num_samples <= GP_MAX_TRIALS:
            return SamplerChoice("gp", {"n_startup_trials": startup},
                                 f"auto: {num_samples} trials, at most {GP_MAX_TRIALS}: the Gaussian process reached "
                                 "the front in the fewest trials on the recorded grids")
        return SamplerChoice("tpe", {"n_startup_trials": startup},
                             f"auto: {num_samples} trials, over {GP_MAX_TRIALS}: TPE, whose proposals stay cheap "
                             "as trials accumulate")
    if sampler == "nsga2":
        return SamplerChoice("nsga2", {"population_size": population_size} if population_size else {})
    if sampler in ("tpe", "gp"):
        return SamplerChoice(sampler, {"n_startup_trials": startup_trials} if startup_trials else {})
    return SamplerChoice(sampler)
