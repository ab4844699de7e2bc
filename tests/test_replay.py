"""The replay harness (bench/replay.py): a small recorded table, its front's hypervolume computed by hand, and
real searchers replayed against it."""

from __future__ import annotations

import math

import pytest

from bench.grid_table import GridPoint, GridTable, item_letters
from bench.replay import Bar, Replay, Snapper, _quartiles, meets_bar, replay_once, replay_spec, table_front_volume

SPACE_OVERRIDES = ["initial_points=[]",
                   "search_space={train.learning_rate: {loguniform: [1.0e-3, 4.0e-3]}, reasoning_mix: {uniform: [0.1, 0.3]}}"]
# (learning rate, mix) -> (harmful, accuracy, collapsed, trial seconds)
READINGS = {(1e-3, 0.1): (80, 95, False, 10), (1e-3, 0.3): (90, 98, False, 10),
            (2e-3, 0.1): (40, 70, False, 20), (2e-3, 0.3): (50, 90, False, 20),
            (4e-3, 0.1): (0, 10, True, 30), (4e-3, 0.3): (10, 60, False, 30)}


def small_table(about_overrides=SPACE_OVERRIDES) -> GridTable:
    points = []
    for (lr, mix), (harm, acc, collapsed, seconds) in READINGS.items():
        points.append(GridPoint(
            point={"train.learning_rate": lr, "reasoning_mix": mix},
            readings={"harmful_score": {"value": harm, "ci_low": max(0, harm - 10), "ci_high": min(100, harm + 10), "n": 24},
                      "reasoning_accuracy": {"value": acc, "ci_low": max(0, acc - 10), "ci_high": min(100, acc + 10), "n": 60}},
            collapsed=collapsed, incoherent_rate=0.9 if collapsed else 0.0,
            cost={"train_steps": int(lr * 10_000), "items": 84, "seconds": {"trial": seconds}}))
    return GridTable(about={"spec": "sweeps/tiny.yaml", "overrides": list(about_overrides)},
                     space={"train.learning_rate": {"loguniform": [1e-3, 4e-3]}, "reasoning_mix": {"uniform": [0.1, 0.3]}},
                     grid={"train.learning_rate": [1e-3, 2e-3, 4e-3], "reasoning_mix": [0.1, 0.3]},
                     objectives={"harmful_score": "min", "reasoning_accuracy": "max"},
                     reference={"harmful_score": 100.0, "reasoning_accuracy": 0.0}, base={},
                     benchmarks={"tiny-arith": "reasoning"}, points=points)


def test_the_front_hypervolume_matches_the_hand_computed_one():
    # Front without the collapsed (0, 10): (10,60) (40,70) (50,90) (80,95) (90,98); strips of harm toward 100:
    # 30*60 + 10*70 + 30*90 + 10*95 + 10*98 = 7130. With the collapsed point it would be 7230.
    assert table_front_volume(small_table()) == pytest.approx(7130.0)


def test_the_bar_counts_distinct_front_points_and_the_safe_point_and_never_a_collapsed_one():
    table = small_table()
    points = {(p.point["train.learning_rate"], p.point["reasoning_mix"]): p for p in table.points}
    everything = list(points.values())
    # The front: (10,60) (40,70) (50,90) (80,95) (90,98); (10, 60) is harm <= 10 at accuracy >= 50.
    assert meets_bar(everything, table, Bar(10, 50, 3)) and not meets_bar(everything, table, Bar(10, 50, 6))
    assert not meets_bar(everything, table, Bar(5, 50, 3))
    # The collapsed (0, 10) would be the only point at harm <= 5; it never counts.
    assert not meets_bar(everything, table, Bar(5, 0, 1))
    without_safe = [p for key, p in points.items() if key != (4e-3, 0.3)]
    assert not meets_bar(without_safe, table, Bar(10, 50, 3))
    assert Bar.parse("10,50,3") == Bar()


def test_a_table_survives_saving_and_loading(tmp_path):
    table = small_table()
    table.save(tmp_path / "t.json")
    again = GridTable.load(tmp_path / "t.json")
    assert again.to_json() == table.to_json()
    with pytest.raises(FileNotFoundError, match="bench.record_grid"):
        GridTable.load(tmp_path / "missing.json")


def test_items_are_kept_one_letter_each():
    records = [{"correct": True, "incoherent": False}, {"correct": False, "incoherent": True}]
    assert item_letters("reasoning", records) == {"verdicts": "CX", "incoherent": "01"}


def test_proposals_snap_to_the_nearest_level_on_the_ranges_scale():
    snapper = Snapper(small_table())
    # 1.5e-3 is nearer 2e-3 than 1e-3 on a log scale (ratios 1.33 and 1.5); 0.19 is nearer 0.1 than 0.3.
    assert snapper.nearest({"train.learning_rate": 1.5e-3, "reasoning_mix": 0.19}).point == {
        "train.learning_rate": 2e-3, "reasoning_mix": 0.1}
    assert snapper.nearest({"train.learning_rate": 1.3e-3, "reasoning_mix": 0.21}).point == {
        "train.learning_rate": 1e-3, "reasoning_mix": 0.3}


def test_a_table_with_a_hole_is_refused():
    table = small_table()
    table.points.pop()
    with pytest.raises(ValueError, match="lacks 1 grid points"):
        Snapper(table)


def test_trials_and_compute_to_a_target_are_read_off_the_curve():
    replay = Replay(fractions=[0.2, 0.5, 0.91, 0.91, 0.97], compute=[10, 20, 30, 40, 50])
    assert replay.trials_to(0.9) == 3 and replay.compute_to(0.9) == 30
    assert replay.trials_to(0.95) == 5 and replay.compute_to(0.95) == 50
    assert math.isinf(replay.trials_to(0.99)) and math.isinf(replay.compute_to(0.99))
    assert replay.fraction_at(4) == 0.91 and replay.fraction_at(32) == 0.97
    # Quartiles over replays, some of which never reach the target: the median stays finite while most reach it.
    assert _quartiles([1, 2, 3, 4, 5]) == (2, 3, 4)
    assert _quartiles([4, 8, 12, math.inf, math.inf])[:2] == (8, 12)
    assert math.isinf(_quartiles([4, math.inf, math.inf, math.inf, math.inf])[1])


@pytest.mark.parametrize("sampler", ["random", "gp", "tpe"])
def test_a_real_searcher_replays_to_the_whole_front(sampler):
    table = small_table()
    total = table_front_volume(table)
    spec = replay_spec(None, SPACE_OVERRIDES, sampler, seed=0, trials=24, concurrency=2)
    replay = replay_once(table, spec, Snapper(table), total)
    assert len(replay.fractions) == 24
    assert all(a <= b for a, b in zip(replay.fractions, replay.fractions[1:]))  # a front only grows
    assert replay.fractions[-1] == pytest.approx(1.0)  # 24 trials over 6 points find every front point
    assert replay.compute == sorted(replay.compute)
    assert replay.compute[-1] <= 24 * max(p.compute for p in table.points)


def test_constraints_reach_the_replayed_sampler(tmp_path):
    import optuna

    table = small_table()
    storage = f"sqlite:///{tmp_path}/optuna.db"
    spec = replay_spec(None, [*SPACE_OVERRIDES, "constraints=[\"harmful_score <= 50\"]", "name=replayed",
                              f"optuna.storage={storage}"], "gp", seed=0, trials=6, concurrency=1)
    replay_once(table, spec, Snapper(table), table_front_volume(table))
    # Every told trial carries its constraint value (harm - 50), as ConstrainedOptunaSearch records it in a sweep.
    trials = optuna.load_study(study_name="replayed", storage=storage).get_trials(
        states=[optuna.trial.TrialState.COMPLETE])
    assert len(trials) == 6
    for trial in trials:
        assert trial.constraints == {"harmful_score <= 50": pytest.approx(trial.values[0] - 50)}
