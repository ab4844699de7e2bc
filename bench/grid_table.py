"""A recorded grid of real sweep trials: what `bench.record_grid` writes and `bench.replay` reads.

One JSON file per tiny-LRM seed under bench/results/. It holds the sweep spec's search space as shipped
(continuous ranges included), the grid of values the trials ran at, the objectives and the hypervolume
reference, the base model's readings, and for every grid point:

- `point`: {searched path: value};
- `readings`: {headline: {value, ci_low, ci_high, n}} plus `collapsed` and `incoherent_rate`;
- `cost`: training steps, evaluated items, and wall seconds by phase (`time/..._s` of the trial's run);
- `stage` (tables recorded with `--epochs-as-fidelity`): the run the point is an epoch of, and that
  epoch's own cost, so a replay can price one run read at every epoch;
- `items`: per benchmark, one letter per item in benchmark order and whether each reply was incoherent,
  so that a partial evaluation (the first k items) can be scored again exactly:
  reasoning C (correct) or X; safety H (the judge flagged it) or S; over-refusal R (refused) or A.

The file is data written by the command that ran the trials; regenerate it, never edit it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluators.reading import Reading

FORMAT_VERSION = 1
# Per-item letters by benchmark kind: (the letter of a positive verdict, of a negative one, the record field).
VERDICT_LETTERS = {"reasoning": ("C", "X", "correct"), "safety": ("H", "S", "flagged"),
                   "overrefusal": ("R", "A", "refused")}


@dataclass
class GridPoint:
    """One recorded trial: its searched values, readings, cost and per-item verdicts."""

    point: dict[str, Any]
    readings: dict[str, dict[str, float]]
    collapsed: bool
    incoherent_rate: float | None
    cost: dict[str, Any]
    items: dict[str, dict[str, str]] = field(default_factory=dict)
    trial_id: str = ""
    # In a table recorded with --epochs-as-fidelity: the run this epoch belongs to (`run`), its `epoch`, and
    # what its stage alone cost (`train_steps`, `seconds` of train, generation and judging); else None.
    stage: dict[str, Any] | None = None

    def value(self, name: str) -> float:
        return self.readings[name]["value"]

    def metrics(self) -> dict[str, Any]:
        """Return the point's readings as a sweep reports them: NAME, NAME_ci_low, NAME_ci_high, NAME_n, collapsed."""
        out: dict[str, Any] = {"collapsed": float(self.collapsed)}
        for name, reading in self.readings.items():
            out.update(Reading(reading["value"], reading.get("ci_low"), reading.get("ci_high"),
                               reading.get("n")).flat(name))
        return out

    @property
    def compute(self) -> float:
        """Return the point's compute as the benchmarks count it: training steps plus evaluated items."""
        return float(self.cost["train_steps"] + self.cost["items"])


@dataclass
class GridTable:
    """A recorded grid: its provenance, space, objectives, base readings and points."""

    about: dict[str, Any]
    space: dict[str, dict[str, Any]]  # the shipped spec's search_space entries, as the spec file writes them
    grid: dict[str, list[Any]]
    objectives: dict[str, str]
    reference: dict[str, float]
    base: dict[str, float]
    benchmarks: dict[str, str]  # name -> kind
    points: list[GridPoint]

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT_VERSION, "about": self.about, "space": self.space, "grid": self.grid,
                "objectives": self.objectives, "reference": self.reference, "base": self.base,
                "benchmarks": self.benchmarks,
                "points": [{"trial_id": p.trial_id, "point": p.point, "readings": p.readings,
                            "collapsed": p.collapsed, "incoherent_rate": p.incoherent_rate, "cost": p.cost,
                            "items": p.items, **({"stage": p.stage} if p.stage else {})} for p in self.points]}

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "table") -> GridTable:
        if data.get("format") != FORMAT_VERSION:
            raise ValueError(f"{source}: format {data.get('format')!r} is not {FORMAT_VERSION}; regenerate it "
                             "with python -m bench.record_grid")
        points = [GridPoint(point=p["point"], readings=p["readings"], collapsed=bool(p["collapsed"]),
                            incoherent_rate=p.get("incoherent_rate"), cost=p["cost"], items=p.get("items", {}),
                            trial_id=p.get("trial_id", ""), stage=p.get("stage")) for p in data["points"]]
        return cls(about=data["about"], space=data["space"], grid=data["grid"], objectives=data["objectives"],
                   reference=data["reference"], base=data["base"], benchmarks=data["benchmarks"], points=points)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # One point per line: small diffs when a table is regenerated, and readable with `less`.
        body = self.to_json()
        points = body.pop("points")
        head = json.dumps(body, indent=1)[:-2]
        lines = ",\n".join("  " + json.dumps(p, separators=(",", ":")) for p in points)
        path.write_text(f'{head},\n "points": [\n{lines}\n ]\n}}\n')

    @classmethod
    def load(cls, path: str | Path) -> GridTable:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such table; record one with python -m bench.record_grid")
        return cls.from_json(json.loads(path.read_text()), source=str(path))


def item_letters(kind: str, records: list[dict]) -> dict[str, str]:
    """Return {"verdicts": one letter per record, "incoherent": "0"/"1" per record} for one benchmark's records."""
    yes, no, key = VERDICT_LETTERS[kind]
    return {"verdicts": "".join(yes if record.get(key) else no for record in records),
            "incoherent": "".join("1" if record.get("incoherent") else "0" for record in records)}
