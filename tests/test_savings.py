"""The savings harness (bench/savings.py): per-epoch tables priced as separate runs, one run read at every epoch,
early stopping and racing, on a small table whose costs are known."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.grid_table import GridPoint, GridTable
from bench.replay import front_volume
from bench.savings import EpochTable, Pricing, drawn_reading, main, partial_reading, replay, sampler_spec

# run (learning rate) -> per epoch: (harmful, accuracy); each epoch's stage: 1 s of training, 10 s of evaluation.
RUNS = {1e-3: [(0.0, 100.0), (0.0, 100.0), (0.0, 100.0)],
        4e-3: [(50.0, 50.0), (80.0, 20.0), (90.0, 10.0)]}
N = 40  # items per benchmark


def letters(rate: float, yes: str, no: str) -> str:
    hits = round(rate * N / 100)
    return yes * hits + no * (N - hits)


def epoch_table() -> GridTable:
    from evaluators.metrics import counted_rate

    points = []
    for lr, epochs in RUNS.items():
        for epoch, (harm, accuracy) in enumerate(epochs, start=1):
            readings = {}
            for name, value in (("harmful_score", harm), ("reasoning_accuracy", accuracy)):
                rate = counted_rate(round(value * N / 100), N, name)
                readings[name] = {"value": rate[name], "ci_low": rate[name + "_ci_low"],
                                  "ci_high": rate[name + "_ci_high"], "n": N}
            points.append(GridPoint(
                point={"train.learning_rate": lr, "train.epochs": epoch}, readings=readings, collapsed=False,
                incoherent_rate=0.0,
                cost={"train_steps": 2 * epoch, "items": 2 * N,
                      "seconds": {"train": float(epoch), "generation": 9.0, "judging": 1.0, "trial": epoch + 10.0}},
                items={"tiny-arith": {"verdicts": letters(accuracy, "C", "X"), "incoherent": "0" * N},
                       "tiny-harmful": {"verdicts": letters(harm, "H", "S"), "incoherent": "0" * N}},
                trial_id=f"{lr}@e{epoch}",
                stage={"run": str(lr), "epoch": epoch, "train_steps": 2,
                       "seconds": {"train": 1.0, "generation": 9.0, "judging": 1.0}}))
    return GridTable(about={"spec": "sweeps/tiny.yaml", "overrides": []},
                     space={"train.learning_rate": {"choice": [1e-3, 4e-3]}, "train.epochs": {"int": [1, 3]}},
                     grid={"train.learning_rate": [1e-3, 4e-3], "train.epochs": [1, 2, 3]},
                     objectives={"harmful_score": "min", "reasoning_accuracy": "max"},
                     reference={"harmful_score": 100.0, "reasoning_accuracy": 0.0}, base={},
                     benchmarks={"tiny-arith": "reasoning", "tiny-harmful": "safety"}, points=points)


def run_mode(mode: str, sampler: str = "grid", trials: int | None = None, pricing: Pricing = Pricing()):
    table = epoch_table()
    epochs = EpochTable(table)
    count = trials or (2 if mode.startswith("fidelity") else 6)
    spec = sampler_spec(table, epochs, mode, sampler, 0, count, 1, [])
    return replay(epochs, spec, mode, pricing, front_volume(table.points, table), seed=0)


def test_separate_runs_pay_every_epoch_they_train_and_one_evaluation():
    outcome = run_mode("separate")
    # Six trials, k = 1, 2, 3 epochs of each run: k seconds of training, then 10 s of evaluation.
    assert outcome.spent[-1] == pytest.approx(2 * sum(k + 10.0 for k in (1, 2, 3)))
    assert outcome.trials[-1] == 6 and outcome.fractions[-1] == pytest.approx(1.0)


def test_one_run_read_at_every_epoch_pays_each_stage_once_and_early_stopping_cuts_a_dominated_run():
    fidelity = run_mode("fidelity")
    assert fidelity.spent[-1] == pytest.approx(2 * 3 * 11.0)  # two runs, three stages of 1 + 10 s
    stopped = run_mode("fidelity+stop")
    # The 4e-3 run is ruled out at epoch 1 (by the other run) or at epoch 2 (by its own first epoch): never all 3.
    assert stopped.stopped == 1 and stopped.spent[-1] in (pytest.approx(4 * 11.0), pytest.approx(5 * 11.0))
    assert stopped.fractions[-1] == pytest.approx(1.0)  # the front is intact


def test_a_partial_reading_scores_the_items_of_the_slices_read_and_all_of_them_reproduce_the_table():
    table = epoch_table()
    for point in table.points:
        whole = partial_reading(point, table.benchmarks, 4, 4)
        assert whole["harmful_score"] == pytest.approx(point.value("harmful_score"))
        assert whole["reasoning_accuracy"] == pytest.approx(point.value("reasoning_accuracy"))
        assert whole["harmful_score_n"] == N
        assert partial_reading(point, table.benchmarks, 1, 4)["harmful_score_n"] == N // 4


def test_a_projected_reading_is_drawn_at_paper_n_from_the_recorded_rate_and_is_the_same_for_a_seed():
    point = epoch_table().points[3]  # harmful 50
    drawn = drawn_reading(point, 1.0, {"harmful_score": 1000, "reasoning_accuracy": 728}, seed=3)
    assert drawn["harmful_score_n"] == 1000 and drawn["reasoning_accuracy_n"] == 728
    assert abs(drawn["harmful_score"] - 50.0) < 6.0 and drawn["harmful_score_ci_high"] - drawn["harmful_score_ci_low"] < 7
    assert drawn == drawn_reading(point, 1.0, {"harmful_score": 1000, "reasoning_accuracy": 728}, seed=3)
    quarter = drawn_reading(point, 0.25, {"harmful_score": 1000, "reasoning_accuracy": 728}, seed=3)
    assert quarter["harmful_score_n"] == 250


def test_racing_stops_a_ruled_out_evaluation_and_pays_for_the_slices_read():
    raced = run_mode("separate+race", sampler="grid")
    assert raced.raced >= 1 and raced.spent[-1] < run_mode("separate").spent[-1]
    projected = run_mode("separate", pricing=Pricing(16.0, 5.0, {"harmful_score": 1000, "reasoning_accuracy": 728}))
    # Six separate runs: 2 steps an epoch at 16 GPU-s, 1,728 items an evaluation at 5 GPU-s, in GPU-hours.
    steps = 2 * sum(2 * k for k in (1, 2, 3))
    assert projected.spent[-1] == pytest.approx((steps * 16.0 + 6 * 1728 * 5.0) / 3600)


def test_the_command_refuses_an_unknown_mode_and_a_table_without_stages(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["x.json", "--modes", "separate,sideways"])
    assert exit_info.value.code == 2 and "sideways" in capsys.readouterr().err
    flat = epoch_table()
    for point in flat.points:
        point.stage = None
    flat.save(tmp_path / "flat.json")
    assert main([str(tmp_path / "flat.json")]) == 2
    assert "--epochs-as-fidelity" in capsys.readouterr().err


def test_the_recorded_per_epoch_tables_score_back_exactly():
    tables = sorted((Path(__file__).resolve().parent.parent / "bench" / "results").glob("grid_tiny_epochs_seed*.json"))
    if not tables:
        pytest.skip("no per-epoch table is recorded under bench/results")
    for path in tables:
        table = GridTable.load(path)
        epochs = EpochTable(table)
        assert len(epochs.runs) * epochs.top == len(table.points)
        for point in table.points:
            whole = partial_reading(point, table.benchmarks, 4, 4)
            assert math.isclose(whole["harmful_score"], point.value("harmful_score"))
            assert math.isclose(whole["reasoning_accuracy"], point.value("reasoning_accuracy"))
