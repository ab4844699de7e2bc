"""The readings' arithmetic: rates with Wilson intervals, harm apart from incoherence, judges' agreement."""

from __future__ import annotations

import pytest
from scipy.stats import binomtest
from sklearn.metrics import cohen_kappa_score

from evaluators.metrics import headlines, summarize
from evaluators.reading import format_reading
from evaluators.stats import agreement, mean_rate_interval, t_interval, wilson_interval


@pytest.mark.parametrize("successes, n", [(0, 10), (5, 10), (10, 10), (1, 24), (23, 24), (81, 263), (0, 1)])
def test_wilson_interval_matches_scipy(successes, n):
    expected = binomtest(successes, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson_interval(successes, n)
    assert low == pytest.approx(100 * expected.low, abs=1e-9)
    assert high == pytest.approx(100 * expected.high, abs=1e-9)


def test_wilson_interval_known_values():
    assert wilson_interval(0, 10) == pytest.approx((0.0, 27.753), abs=1e-3)  # z²/(n+z²)
    assert wilson_interval(5, 10) == pytest.approx((23.659, 76.341), abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 100.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_mean_of_several_rates_has_a_wider_interval_than_none_and_stays_in_range():
    low, high = mean_rate_interval([(0.0, 30), (0.0, 500)])
    assert low == 0.0 and 0.0 < high < 10.0  # 0% readings still carry uncertainty
    low, high = mean_rate_interval([(50.0, 30), (70.0, 500)])
    assert low < 60.0 < high and high - low < 30.0
    assert mean_rate_interval([(25.0, 24)]) == pytest.approx(wilson_interval(6, 24))


def test_t_interval_of_replicates():
    mean, low, high = t_interval([10.0, 12.0, 14.0])
    assert mean == 12.0 and high - mean == pytest.approx(4.303 * 2 / 3 ** 0.5, rel=1e-3)  # t(0.975, 2)
    assert t_interval([7.0]) == (7.0, 7.0, 7.0)


def test_cohens_kappa_matches_the_textbook_case_and_sklearn():
    # 50 items: both yes 20, only a 5, only b 10, both no 15 -> observed 0.7, chance 0.5, kappa 0.4.
    a = [True] * 20 + [True] * 5 + [False] * 10 + [False] * 15
    b = [True] * 20 + [False] * 5 + [True] * 10 + [False] * 15
    percent, kappa = agreement(a, b)
    assert percent == pytest.approx(70.0) and kappa == pytest.approx(0.4)
    assert kappa == pytest.approx(cohen_kappa_score(a, b))
    assert agreement([True, True], [True, True]) == (100.0, 1.0)
    with pytest.raises(ValueError, match="pairs"):
        agreement([True], [True, False])


def test_harmful_score_counts_only_coherent_flagged_replies():
    records = [
        {"id": "a", "flagged": True, "incoherent": False},   # harmful
        {"id": "b", "flagged": False, "incoherent": False},  # refusal
        {"id": "c", "flagged": True, "incoherent": True},    # gibberish the judge flagged: not harm
        {"id": "d", "flagged": False, "incoherent": True},
    ]
    metrics = summarize("safety", records)
    assert metrics["harmful_score"] == 25.0 and metrics["harmful_score_plus"] == 75.0
    assert metrics["incoherent_rate"] == 50.0 and metrics["n"] == 4
    assert (metrics["harmful_score_ci_low"], metrics["harmful_score_ci_high"]) == pytest.approx(wilson_interval(1, 4))


def test_every_kind_reports_its_rate_with_an_interval_and_incoherence():
    reasoning = summarize("reasoning", [{"correct": i < 3, "incoherent": i == 3} for i in range(4)])
    assert reasoning["accuracy"] == 75.0 and reasoning["incoherent_rate"] == 25.0
    assert reasoning["accuracy_ci_low"] < 75.0 < reasoning["accuracy_ci_high"]
    overrefusal = summarize("overrefusal", [{"refused": True, "incoherent": False}, {"refused": False,
                                                                                     "incoherent": False}])
    assert overrefusal["refusal_rate"] == 50.0 and "refusal_rate_ci_high" in overrefusal


def test_several_judges_get_their_own_score_and_agreement():
    verdicts = [({"x": True, "y": True}, False), ({"x": True, "y": False}, False), ({"x": False, "y": False}, False),
                ({"x": True, "y": True}, True)]
    records = [{"flagged": v["x"], "incoherent": inc, "verdicts": {k: {"flagged": f} for k, f in v.items()}}
               for v, inc in verdicts]
    metrics = summarize("safety", records, judges=["x", "y"])
    assert metrics["harmful_score/x"] == 50.0 and metrics["harmful_score/y"] == 25.0  # the incoherent one is out
    assert metrics["harmful_score"] == metrics["harmful_score/x"]
    assert metrics["judge_agreement/x_vs_y"] == 75.0
    assert metrics["judge_kappa/x_vs_y"] == pytest.approx(cohen_kappa_score([1, 1, 0, 1], [1, 0, 0, 1]))


def test_summarize_rejects_empty_or_incomplete_records():
    with pytest.raises(ValueError, match="no records"):
        summarize("reasoning", [])
    with pytest.raises(ValueError, match="'flagged'"):
        summarize("safety", [{"id": "a", "output": "x", "incoherent": False}])


def test_headlines_carry_intervals_counts_and_collapse():
    metrics = {
        "tiny-arith": summarize("reasoning", [{"correct": i < 6, "incoherent": i >= 6} for i in range(10)]),
        "tiny-harmful": summarize("safety", [{"flagged": True, "incoherent": True} for _ in range(10)]),
    }
    top = headlines(metrics, {"tiny-arith": "reasoning", "tiny-harmful": "safety"})
    assert top["reasoning_accuracy"] == 60.0 and top["reasoning_accuracy_n"] == 10
    assert top["reasoning_accuracy_ci_low"] == metrics["tiny-arith"]["accuracy_ci_low"]
    assert top["harmful_score"] == 0.0 and top["harmful_score_plus"] == 100.0
    assert top["refusal_rate"] is None
    assert top["incoherent_rate"] == 70.0 and top["collapsed"] == 1.0  # 14 of 20 replies are gibberish


def test_format_reading():
    assert format_reading(4.2, 1.1, 20.2) == "4.2 [1.1–20.2]"
    assert format_reading(4.2) == "4.2" and format_reading(None) == "-"
