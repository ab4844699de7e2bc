"""Tune's OptunaSearch with constraints: each finished trial's constraint values reach Optuna before its sampler sees it.

Optuna 5 reads constraints from the trial itself (`Trial.set_constraint`, stored as system attributes)
when `study.tell` hands the finished trial to the sampler's `after_trial`; its `constraints_func`
argument is deprecated. Ray's OptunaSearch tells the study without setting any, so this subclass sets
them from the reported result first. NSGA-II and TPE then rank feasible trials above infeasible ones.
"""

from __future__ import annotations

from ray.tune.search.optuna import OptunaSearch

from sweeps.objectives import Constraint
from trainables.private_apis import optuna_trial_to_tell


class ConstrainedOptunaSearch(OptunaSearch):
    """OptunaSearch that records `constraints` (spec strings such as "harmful_score <= 10") on every finished trial."""

    def __init__(self, *args, constraints: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self._constraints = list(constraints)  # plain strings: Tune pickles the searcher with its state

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        ot_trial = optuna_trial_to_tell(self, trial_id)
        if result and not error and ot_trial is not None:
            for text in self._constraints:
                constraint = Constraint.parse(text)
                value = result.get(constraint.name)
                if isinstance(value, (int, float)):
                    ot_trial.set_constraint(text, constraint.violation(float(value)))
        super().on_trial_complete(trial_id, result=result, error=error)
