"""Which Optuna sampler a sweep runs, with its options and the reason: the spec's own choice, or `auto`'s.

`auto` follows the replays of recorded grids in docs/benchmarks.md ("Which sampler finds the front"):
- an all-discrete space with no more points than the budget: the grid, which tries each point once;
- up to GP_MAX_TRIALS trials: the Gaussian-process sampler. On the recorded grids it reached 95% of the
  front's hypervolume in about half the trials random search needed, and ahead of multivariate TPE and
  NSGA-II (whose first generation is random), one trial at a time and five at a time;
- beyond: multivariate TPE. A GP proposal grows with the study (0.9 s at 200 trials on 2 cores, against
  0.03 s for TPE: `python -m bench.sampler_cost`); no replay measured search past 128 trials.

At 8 trials every sampler, random search included, reached about 80% of the recorded fronts: the model
has too few readings to beat chance there, so auto keeps GP with few random trials first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Optuna's own defaults, stated where a plan or a tag shows them.
OPTUNA_STARTUP_TRIALS = 10
OPTUNA_POPULATION = 50
# auto: GP up to this many trials (a GP proposal took 0.9 s at 200 trials on 2 cores), TPE beyond.
GP_MAX_TRIALS = 200
# auto: random trials before GP's model takes over, by budget: a quarter of the trials, at least 2 and at
# most Optuna's 10. At 32 trials, 8 random ones first reached 95% in 22 and 21 trials on the two recorded
# grids, against 22 and 26 with Optuna's 10 (docs/benchmarks.md).
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
                                 "95% of the recorded grids' fronts in the fewest trials")
        return SamplerChoice("tpe", {"n_startup_trials": startup},
                             f"auto: {num_samples} trials, over {GP_MAX_TRIALS}: TPE, whose proposals stay cheap "
                             "as trials accumulate")
    if sampler == "nsga2":
        return SamplerChoice("nsga2", {"population_size": population_size} if population_size else {})
    if sampler in ("tpe", "gp"):
        return SamplerChoice(sampler, {"n_startup_trials": startup_trials} if startup_trials else {})
    return SamplerChoice(sampler)
