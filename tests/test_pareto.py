"""The Pareto front and hypervolume on hand-made trials, where the answer can be worked out by hand."""

from __future__ import annotations

import math

import pytest

from sweeps.pareto import default_reference, dominates, hypervolume, pareto_front, sort_front

SAFETY_TAX = {"harmful_score": "min", "reasoning_accuracy": "max"}


def trial(harmful, accuracy, **extra):
    return {"harmful_score": harmful, "reasoning_accuracy": accuracy, **extra}


def test_dominated_points_leave_the_front():
    points = [
        trial(80, 90),   # base-like: accurate but harmful
        trial(10, 60),   # the tax: safe, less accurate
        trial(40, 85),   # a good compromise
        trial(50, 80),   # dominated by (40, 85)
        trial(10, 50),   # dominated by (10, 60): same harm, less accuracy
    ]
    assert pareto_front(points, SAFETY_TAX) == [0, 1, 2]


def test_identical_points_are_all_on_the_front():
    points = [trial(20, 70), trial(20, 70), trial(30, 60)]
    assert pareto_front(points, SAFETY_TAX) == [0, 1]


def test_a_single_point_is_the_front():
    assert pareto_front([trial(55, 12)], SAFETY_TAX) == [0]


def test_failed_trials_without_metrics_are_excluded():
    points = [
        {"error": "worker died"},                   # no metrics at all
        trial(float("nan"), 99),                    # a NaN is not a measurement
        trial(5, None),                             # one objective missing
        trial(60, 70),
    ]
    assert pareto_front(points, SAFETY_TAX) == [3]
    assert hypervolume(points, SAFETY_TAX) == pytest.approx((100 - 60) * 70)


def test_directions_are_respected():
    points = [trial(10, 10), trial(90, 90)]
    both_max = {"harmful_score": "max", "reasoning_accuracy": "max"}
    assert pareto_front(points, both_max) == [1]
    assert pareto_front(points, SAFETY_TAX) == [0, 1]
    assert dominates(points[1], points[0], both_max)
    assert not dominates(points[0], points[0], SAFETY_TAX)


def test_hypervolume_2d_by_hand():
    # Staircase against (harmful 100, accuracy 0): rectangles 40 x 60 + 30 x (85 - 60).
    points = [trial(10, 60), trial(40, 85)]
    assert hypervolume(points, SAFETY_TAX) == pytest.approx(90 * 60 + 60 * 25)
    # A dominated point adds nothing; a point outside the reference adds nothing.
    assert hypervolume(points + [trial(50, 80), trial(100, 99)], SAFETY_TAX) == pytest.approx(90 * 60 + 60 * 25)


def test_hypervolume_single_point_is_its_box():
    assert hypervolume([trial(25, 40)], SAFETY_TAX) == pytest.approx(75 * 40)
    ref = {"harmful_score": 50, "reasoning_accuracy": 20}
    assert hypervolume([trial(25, 40)], SAFETY_TAX, ref) == pytest.approx(25 * 20)


def test_hypervolume_3d_matches_inclusion_exclusion():
    objectives = {**SAFETY_TAX, "refusal_rate": "min"}
    a = trial(10, 60, refusal_rate=50)
    b = trial(40, 85, refusal_rate=20)
    # Boxes in minimised space against reference (100, 0, 100): |A| + |B| - |A and B|.
    box_a = 90 * 60 * 50
    box_b = 60 * 85 * 80
    overlap = 60 * 60 * 50
    assert hypervolume([a, b], objectives) == pytest.approx(box_a + box_b - overlap)
    assert default_reference(objectives) == {"harmful_score": 100, "reasoning_accuracy": 0, "refusal_rate": 100}


def test_sort_front_orders_along_the_first_objective():
    points = [trial(80, 90), trial(10, 60), trial(40, 85)]
    assert sort_front(points, [0, 1, 2], SAFETY_TAX) == [1, 2, 0]


def test_bad_directions_and_reference_are_reported():
    with pytest.raises(ValueError, match="'min' or 'max'"):
        pareto_front([trial(1, 1)], {"harmful_score": "down"})
    with pytest.raises(ValueError, match="reasoning_accuracy"):
        hypervolume([trial(1, 1)], SAFETY_TAX, {"harmful_score": 100})
    assert math.isclose(hypervolume([], SAFETY_TAX), 0.0)
