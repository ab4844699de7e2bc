"""A reading: one rate in percent, with its 95% interval and the number of items it counts.

Records hold readings flat, as MLflow metrics, Tune results and the result cache store them: NAME, and
beside it NAME_ci_low, NAME_ci_high and NAME_n. This module is the one place that knows those keys;
everything else builds a `Reading` and asks it for its flat form (`flat`), or reads one back (`Reading.read`).
A record from an older run may lack the interval or the count: they are then None, never a default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_LOW, _HIGH, _COUNT = "_ci_low", "_ci_high", "_n"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


@dataclass(frozen=True)
class Reading:
    """A rate in percent; `low`-`high` its 95% interval and `n` the items it counts, when known."""

    value: float
    low: float | None = None
    high: float | None = None
    n: int | None = None

    @property
    def interval(self) -> tuple[float, float] | None:
        """Return (low, high), or None when either bound is unknown."""
        return None if self.low is None or self.high is None else (self.low, self.high)

    def best_end(self, direction: str) -> float:
        """Return the interval's most favourable end for an objective to `direction` ("min" or "max"): its low end
        or its high end; the value itself when the interval is unknown."""
        end = self.low if direction == "min" else self.high
        return self.value if end is None else end

    def flat(self, name: str) -> dict[str, float]:
        """Return the reading as the flat keys of a record: NAME, NAME_ci_low, NAME_ci_high, NAME_n (those known)."""
        out = {name: self.value}
        if self.low is not None:
            out[name + _LOW] = self.low
        if self.high is not None:
            out[name + _HIGH] = self.high
        if self.n is not None:
            out[name + _COUNT] = self.n
        return out

    @classmethod
    def read(cls, record: Mapping[str, Any], name: str) -> Reading | None:
        """Return the reading `name` of a flat record, or None when the record holds no finite value for it."""
        value = _number(record.get(name))
        if value is None:
            return None
        low, high, n = (_number(record.get(name + suffix)) for suffix in (_LOW, _HIGH, _COUNT))
        return cls(value, low, high, None if n is None else int(n))

    def text(self, with_n: bool = False) -> str:
        """Return `4.2 [1.1–20.2]` (with ` n=24` appended when asked and known), or `4.2` without an interval."""
        text = format_reading(self.value, self.low, self.high)
        return text + f" n={self.n}" if with_n and self.n is not None else text


def flat_keys(name: str) -> tuple[str, str, str, str]:
    """Return the keys a record may hold for reading `name`: the value, the interval's ends, the count."""
    return name, name + _LOW, name + _HIGH, name + _COUNT


def is_interval_key(key: str) -> bool:
    """Return True for the key of an interval's end (NAME_ci_low, NAME_ci_high)."""
    return key.endswith((_LOW, _HIGH))


def is_count_key(key: str) -> bool:
    """Return True for the key of a reading's count (NAME_n)."""
    return key.endswith(_COUNT)


def format_reading(value: float | None, low: float | None = None, high: float | None = None) -> str:
    """Return a reading as `4.2 [1.1–20.2]`, or `4.2` without an interval, or `-` when absent."""
    if value is None:
        return "-"
    if low is None or high is None:
        return f"{value:.1f}"
    return f"{value:.1f} [{low:.1f}–{high:.1f}]"
