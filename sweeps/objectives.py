"""The front's axes and the feasibility bounds on them: objectives, constraints, and whether a trial meets them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from evaluators.metrics import HEADLINES
from trainables.schema import Strict


# Which benchmark kind produces each objective (EvalResult's headline numbers).
OBJECTIVE_SOURCES = {name: kind for name, (kind, _) in HEADLINES.items()}


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
