"""Replicates: one sampled point trained with K training seeds, its readings combined into a mean and a 95% interval.

Seeds are where the Safety Tax of a small model is least stable: two seeds of the same point can sit far
apart on the front. With `replicates: K` a trial reports the mean of every reading (the front is built
on the means) and a 95% interval for each headline; every seed's own readings stay in MLflow as
`seed<k>/<name>`.

The interval is the wider of two, at each end, within [0, 100] (every headline is a percentage):
- Student's t interval of the mean across the K seeds (`evaluators.stats.t_interval`): the seed spread;
- the mean of the seeds' own evaluation intervals: what scoring n replies leaves uncertain. Three seeds
  that all read 0.0 of 24 prompts have no spread at all, yet each reading is only known to within
  0.0-13.8, and so is their mean.
"""

from __future__ import annotations

import statistics

from evaluators.reading import Reading
from evaluators.stats import t_interval


def seed_key(k: int, name: str) -> str:
    """Return the MLflow metric name of replicate k's reading `name` (seed0/harmful_score)."""
    return f"seed{k}/{name}"


def replicate_interval(readings: list[dict[str, float]], name: str) -> tuple[float, float]:
    """Return the 95% interval of the mean of `name` over the readings (see the module's docstring), in percent."""
    _, low, high = t_interval([r[name] for r in readings])
    intervals = [reading.interval for reading in (Reading.read(r, name) for r in readings) if reading is not None]
    if len(intervals) == len(readings) and None not in intervals:
        low = min(low, statistics.fmean(ends[0] for ends in intervals))
        high = max(high, statistics.fmean(ends[1] for ends in intervals))
    return max(0.0, low), min(100.0, high)


def combine_readings(readings: list[dict[str, float]], headlines: tuple[str, ...]) -> dict[str, float]:
    """Return a trial's metrics from its replicates' readings: means, intervals of `headlines`, each seed's readings.

    One replicate is returned as it is (its evaluation's own per-reading intervals stay).
    """
    if len(readings) == 1:
        return dict(readings[0])
    shared = [name for name in readings[0] if all(name in r for r in readings[1:])]
    out = {name: statistics.fmean(r[name] for r in readings) for name in shared}
    for name in shared:
        if name in headlines:
            out.update(Reading(out[name], *replicate_interval(readings, name)).flat(name))
    for k, reading in enumerate(readings):
        out.update({seed_key(k, name): value for name, value in reading.items()})
    out["replicates"] = float(len(readings))
    return out
