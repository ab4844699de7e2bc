"""Uncertainty of the readings: intervals for rates, for means of rates, and agreement between judges.

Every reading here is a percent of n replies, so its uncertainty is that of a binomial proportion. The
95% Wilson score interval is the one lm-eval-style reports and the statistics literature recommend for
small n (it never leaves [0, 100] and is not zero-width at 0% or 100%, unlike the normal interval).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Z_95 = 1.959963984540054  # the standard normal's 97.5th percentile


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Return the Wilson score interval of successes/n, in percent; (0, 100) when n is 0."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 100.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # Exact ends at 0 and n; rounding could otherwise leave 1e-17 outside [0, 1].
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return 100.0 * low, 100.0 * high


def mean_rate_interval(rates: Sequence[tuple[float, int]], z: float = Z_95) -> tuple[float, float]:
    """Return a 95% interval, in percent, of the unweighted mean of several independent rates (percent, n).

    One rate gets its Wilson interval. For several, the normal interval of the mean is used with each
    rate's variance taken at the Agresti-Coull estimate (x + 2) / (n + 4), so 0% and 100% readings still
    carry their uncertainty; the ends are clipped to [0, 100].
    """
    if not rates:
        raise ValueError("no rates to combine")
    if len(rates) == 1:
        percent, n = rates[0]
        return wilson_interval(round(percent * n / 100.0), n, z)
    k = len(rates)
    mean = sum(percent for percent, _ in rates) / k
    variance = 0.0
    for percent, n in rates:
        adjusted = (percent * n / 100.0 + 2) / (n + 4)
        variance += adjusted * (1 - adjusted) / (n + 4)
    half = 100.0 * z * math.sqrt(variance) / k
    return max(0.0, mean - half), min(100.0, mean + half)


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Return (mean, low, high): Student's t interval of the mean of replicate readings (one value: no width)."""
    if not values:
        raise ValueError("no values")
    k = len(values)
    mean = sum(values) / k
    if k == 1:
        return mean, mean, mean
    from scipy.stats import t

    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (k - 1))
    half = float(t.ppf(0.5 + confidence / 2, k - 1)) * sd / math.sqrt(k)
    return mean, mean - half, mean + half


def agreement(a: Sequence[bool], b: Sequence[bool]) -> tuple[float, float]:
    """Return (percent of items two judges label alike, Cohen's kappa) for paired boolean labels.

    Kappa is 1.0 when both judges give one same label throughout (no disagreement to explain), and
    0.0 when they disagree while one of them never varies.
    """
    if len(a) != len(b):
        raise ValueError(f"{len(a)} labels against {len(b)}; agreement needs pairs")
    if not a:
        raise ValueError("no labels")
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b)) / n
    p_a, p_b = sum(a) / n, sum(b) / n
    expected = p_a * p_b + (1 - p_a) * (1 - p_b)
    if expected >= 1.0:
        kappa = 1.0 if observed == 1.0 else 0.0
    else:
        kappa = (observed - expected) / (1 - expected)
    return 100.0 * observed, kappa
