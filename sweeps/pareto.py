"""The Pareto front of a sweep and its hypervolume: pure functions over trial metrics.

A point is a mapping from objective name to value (a trial's reported metrics). Objectives come as an
ordered mapping {name: "min" | "max"}. Points missing an objective, or holding NaN there (a failed
trial), are not candidates: they are neither on the front nor counted in the hypervolume.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

Directions = Mapping[str, str]

# Every objective this project reports is a percentage in [0, 100], so the worst possible value is
# the natural reference point: 100 for a score to minimise, 0 for one to maximise.
WORST_PERCENT = {"min": 100.0, "max": 0.0}


def default_reference(objectives: Directions) -> dict[str, float]:
    """Return the documented reference point: the worst percentage for every objective."""
    return {name: WORST_PERCENT[direction] for name, direction in objectives.items()}


def reference_point(objectives: Directions, given: Mapping[str, float | None]) -> dict[str, float]:
    """Return the hypervolume reference point: each objective's `given` value, or its worst percentage."""
    worst = default_reference(objectives)
    return {name: given[name] if given.get(name) is not None else worst[name] for name in objectives}


def has_objectives(point: Mapping[str, Any], objectives: Directions) -> bool:
    """Return True when `point` holds a finite number for every objective."""
    for name in objectives:
        value = point.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
    return True


def _as_minimised(point: Mapping[str, Any], objectives: Directions) -> tuple[float, ...]:
    # Negating maximised objectives lets one dominance rule and one volume rule serve every direction.
    return tuple(float(point[n]) if d == "min" else -float(point[n]) for n, d in objectives.items())


def dominates(a: Mapping[str, Any], b: Mapping[str, Any], objectives: Directions) -> bool:
    """Return True when `a` is at least as good as `b` in every objective and better in one."""
    va, vb = _as_minimised(a, objectives), _as_minimised(b, objectives)
    return all(x <= y for x, y in zip(va, vb)) and any(x < y for x, y in zip(va, vb))


def pareto_front(points: Sequence[Mapping[str, Any]], objectives: Directions) -> list[int]:
    """Return the indices of the non-dominated points, in input order.

    Identical points do not dominate each other, so ties are all on the front.
    """
    _check_directions(objectives)
    candidates = [i for i, p in enumerate(points) if has_objectives(p, objectives)]
    return [
        i for i in candidates
        if not any(dominates(points[j], points[i], objectives) for j in candidates if j != i)
    ]


def hypervolume(
    points: Sequence[Mapping[str, Any]], objectives: Directions, reference: Mapping[str, float] | None = None
) -> float:
    """Return the volume of objective space that the points dominate, bounded by `reference`.

    `reference` defaults to `default_reference(objectives)`. Points that are not strictly better than
    the reference in every objective add nothing. Exact for any number of objectives (slicing).
    """
    _check_directions(objectives)
    reference = default_reference(objectives) if reference is None else reference
    missing = [name for name in objectives if name not in reference]
    if missing:
        raise ValueError(f"reference point lacks objective(s) {', '.join(missing)}")
    ref = _as_minimised(reference, objectives)
    inside = [
        p for p in (_as_minimised(q, objectives) for q in points if has_objectives(q, objectives))
        if all(x < r for x, r in zip(p, ref))
    ]
    return _sliced_volume(inside, ref)


def _sliced_volume(points: list[tuple[float, ...]], ref: tuple[float, ...]) -> float:
    # Cut the dominated region into slabs along the last objective; each slab's cross-section is the
    # (d-1)-dimensional volume of the points already below it.
    if not points:
        return 0.0
    if len(ref) == 1:
        return ref[0] - min(p[0] for p in points)
    ordered = sorted(points, key=lambda p: p[-1])
    volume = 0.0
    for i, point in enumerate(ordered):
        upper = ordered[i + 1][-1] if i + 1 < len(ordered) else ref[-1]
        if upper > point[-1]:
            volume += (upper - point[-1]) * _sliced_volume([p[:-1] for p in ordered[: i + 1]], ref[:-1])
    return volume


def sort_front(points: Sequence[Mapping[str, Any]], front: Sequence[int], objectives: Directions) -> list[int]:
    """Return the front's indices ordered along the first objective, best first, for joining in a plot."""
    first, direction = next(iter(objectives.items()))
    return sorted(front, key=lambda i: float(points[i][first]) * (1 if direction == "min" else -1))


def _check_directions(objectives: Directions) -> None:
    if not objectives:
        raise ValueError("at least one objective is needed")
    bad = {n: d for n, d in objectives.items() if d not in WORST_PERCENT}
    if bad:
        raise ValueError(f"objective directions must be 'min' or 'max', got {bad}")
