"""Replicates: one sampled point trained with K training seeds, its readings combined into a mean and a 95% interval.

Seeds are where the Safety Tax of a small model is least stable: two seeds of the same point can sit far
apart on the front. With `replicates: K` a trial reports the mean of every reading (the front is built
on the means) and a Student-t 95% interval across the K seeds for each headline; every seed's own
readings stay in MLflow as `seed<k>/<name>`.
"""

from __future__ import annotations

import math
import statistics

from evaluators.metrics import CI_HIGH as HIGH
from evaluators.metrics import CI_LOW as LOW

# Two-sided 95% Student-t quantiles t(0.975, df) for df = 1..30; above 30 the normal 1.96 is within 2%.
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def seed_key(k: int, name: str) -> str:
    """Return the MLflow metric name of replicate k's reading `name` (seed0/harmful_score)."""
    return f"seed{k}/{name}"


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """Return (mean, low, high): the mean and its 95% Student-t interval; a single value has a zero-width one."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, mean, mean
    df = len(values) - 1
    half = (T_975[df - 1] if df <= len(T_975) else 1.96) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


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
            _, out[name + LOW], out[name + HIGH] = t_interval([r[name] for r in readings])
    for k, reading in enumerate(readings):
        out.update({seed_key(k, name): value for name, value in reading.items()})
    out["replicates"] = float(len(readings))
    return out
