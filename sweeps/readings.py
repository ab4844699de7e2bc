"""What a trial record says beyond its objective values, and how the tables and plots write it.

A record (from `sweeps.report.trial_records`, or the base-model point) may hold, per objective NAME,
`NAME_ci_low` / `NAME_ci_high` (a 95% interval, percent) and `NAME_n` (how many items the rate counts),
and per trial `collapsed` (its replies are mostly incoherent), `feasible` (meets the sweep's constraints;
None when unknown) and `group` (e.g. the safety-data source it used). Records from older runs lack
some or all of these; every reader here treats a missing field as "not known", never as a default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from evaluators.metrics import CI_HIGH, CI_LOW, COUNT
from evaluators.metrics import format_reading as reading_text


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def interval(record: Mapping[str, Any], name: str) -> tuple[float, float] | None:
    """Return (low, high) of the objective's 95% interval, or None when the record lacks either bound."""
    low, high = _number(record.get(name + CI_LOW)), _number(record.get(name + CI_HIGH))
    return None if low is None or high is None else (low, high)


def count(record: Mapping[str, Any], name: str) -> int | None:
    """Return how many items the objective's rate counts, or None when not recorded."""
    n = _number(record.get(name + COUNT))
    return None if n is None else int(n)


def is_collapsed(record: Mapping[str, Any]) -> bool:
    """Return True when the trial is tagged collapsed (mostly incoherent replies)."""
    return bool(record.get("collapsed"))


def is_infeasible(record: Mapping[str, Any]) -> bool:
    """Return True only when the trial is known to miss a constraint (feasible is False, not None)."""
    return record.get("feasible") is False


def group_of(record: Mapping[str, Any]) -> str | None:
    """Return the trial's group name (e.g. its safety-data source), or None."""
    group = record.get("group")
    return None if group is None or group == "" else str(group)


def groups(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Return the distinct group names, sorted so that a group keeps its colour from one sweep to the next."""
    return sorted({g for g in map(group_of, records) if g is not None})


def has_field(records: Sequence[Mapping[str, Any]], key: str) -> bool:
    """Return True when any record carries `key` with a value (old runs carry none)."""
    return any(r.get(key) is not None for r in records)


def shared_count(records: Sequence[Mapping[str, Any]], name: str) -> int | None:
    """Return the n that every record holding this objective shares, or None when they differ or one lacks it."""
    counts = {count(r, name) for r in records if _number(r.get(name)) is not None}
    return counts.pop() if len(counts) == 1 and None not in counts else None


def format_reading(record: Mapping[str, Any], name: str, with_n: bool = False) -> str:
    """Return the objective as `4.2 [1.1–20.2]` (`n=24` appended when asked and known), `4.2` without an interval,
    or `-` when the record has no value."""
    value = _number(record.get(name))
    if value is None:
        return "-"
    text = reading_text(value, *(interval(record, name) or (None, None)))
    n = count(record, name)
    if with_n and n is not None:
        text += f" n={n}"
    return text
