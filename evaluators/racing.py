"""Evaluation in slices that stops when the answer is known.

A raced evaluation scores every benchmark in `slices` slices. Each slice is a seeded random subset of
the benchmark's items (the same subsets on every call), so the reading after any number of slices is a
random sample of the whole benchmark and its 95% interval is honest for the whole. After each slice but
the last, the caller's `rule` sees the readings so far and may stop the evaluation; the result then
keeps its partial n and interval. Each slice's replies are cached on their own (keyed by the slice's
items), so an evaluation completed or repeated later generates none of them again.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Race:
    """How to race one evaluation: `slices` slices, and `rule(result) -> reason or None` after each but the last."""

    slices: int
    rule: Callable[[object], str | None]


def slice_order(benchmark: str, n: int, slices: int) -> list[list[int]]:
    """Return the item indices of each slice: a seeded shuffle of range(n) (the seed is the benchmark's name),
    cut into `slices` parts of nearly equal size, each sorted."""
    order = list(range(n))
    random.Random(hashlib.sha256(benchmark.encode()).hexdigest()).shuffle(order)
    bounds = [round(k * n / slices) for k in range(slices + 1)]
    return [sorted(order[bounds[k]:bounds[k + 1]]) for k in range(slices)]
