"""What a trial record says beyond its objective values, and how the tables and plots write it.

A record (from `sweeps.report.trial_records`, or the base-model point) may hold, per objective NAME,
a reading (`evaluators.reading`: the value, its 95% interval in percent and how many items it counts),
and per trial `collapsed` (its replies are mostly incoherent), `feasible` (meets the sweep's constraints;
None when unknown) and `group` (e.g. the safety-data source it used). Records from older runs lack
some or all of these; every reader here treats a missing field as "not known", never as a default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from evaluators.reading import Reading


def interval(record: Mapping[str, Any], name: str) -> tuple[float, float] | None:
    """Return (low, high) of the objective's 95% interval, or None when the record lacks either bound."""
    reading = Reading.read(record, name)
    return None if reading is None else reading.interval


def count(record: Mapping[str, Any], name: str) -> int | None:
    """Return how many items the objective's rate counts, or None when not recorded."""
    reading = Reading.read(record, name)
    return None if reading is None else reading.n


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
    counts = {count(r, name) for r in records if Reading.read(r, name) is not None}
    return counts.pop() if len(counts) == 1 and None not in counts else None


def format_reading(record: Mapping[str, Any], name: str, with_n: bool = False) -> str:
    """Return the objective as `4.2 [1.1–20.2]` (`n=24` appended when asked and known), `4.2` without an interval,
    or `-` when the record has no value."""
    reading = Reading.read(record, name)
    return "-" if reading is None else reading.text(with_n)
