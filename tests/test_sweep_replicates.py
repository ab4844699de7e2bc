"""Replicates: K training seeds per point, the mean with a 95% t-interval reported, every seed kept in MLflow."""

from __future__ import annotations

import pytest
import yaml

from evaluators.stats import t_interval
from sweep_helpers import random_model_spec, store_overrides
from sweeps import tracking
from sweeps.loader import TINY_SPEC, load_spec
from sweeps.plan import render_plan
from sweeps.replicates import combine_readings
from sweeps.runner import run_sweep
from sweeps.trial import replicate_configs, trial_config


def test_readings_combine_into_means_intervals_and_per_seed_values():
    readings = [{"harmful_score": 0.0, "reasoning_accuracy": 50.0, "tiny-arith/accuracy": 50.0},
                {"harmful_score": 10.0, "reasoning_accuracy": 70.0, "tiny-arith/accuracy": 70.0}]
    out = combine_readings(readings, ("harmful_score", "reasoning_accuracy"))
    assert out["harmful_score"] == 5.0 and out["reasoning_accuracy"] == 60.0 and out["tiny-arith/accuracy"] == 60.0
    # Two seeds: the t interval is wide (5 +- 63.5), and a percentage's interval stays inside [0, 100].
    _, _, t_high = t_interval([0.0, 10.0])
    assert out["harmful_score_ci_low"] == 0.0 and out["harmful_score_ci_high"] == pytest.approx(t_high)
    assert "tiny-arith/accuracy_ci_low" not in out
    assert (out["seed0/harmful_score"], out["seed1/harmful_score"], out["replicates"]) == (0.0, 10.0, 2.0)
    assert combine_readings(readings[:1], ("harmful_score",)) == readings[0]  # one seed: its reading as it is


def test_seeds_that_agree_keep_the_uncertainty_of_their_evaluations():
    # Three seeds each reading 0 of 24 prompts: no spread, but each reading is only known to 0.0-13.8.
    zero = {"harmful_score": 0.0, "harmful_score_ci_low": 0.0, "harmful_score_ci_high": 13.8}
    out = combine_readings([zero, zero, zero], ("harmful_score",))
    assert (out["harmful_score"], out["harmful_score_ci_low"]) == (0.0, 0.0)
    assert out["harmful_score_ci_high"] == pytest.approx(13.8)
    # Where the seeds spread more than one evaluation's interval, the t interval is the wider one.
    spread = [{"harmful_score": v, "harmful_score_ci_low": v - 2, "harmful_score_ci_high": v + 2} for v in (40, 50, 60)]
    _, t_low, t_high = t_interval([40.0, 50.0, 60.0])  # 50 +- 24.8
    out = combine_readings(spread, ("harmful_score",))
    assert (out["harmful_score_ci_low"], out["harmful_score_ci_high"]) == (pytest.approx(t_low), pytest.approx(t_high))


def test_replicates_train_with_consecutive_seeds_and_the_dry_run_counts_them():
    spec = load_spec(TINY_SPEC, ["replicates=3", "base.train.seed=7"])
    configs = replicate_configs(trial_config(spec, {}, "t1"), spec.replicates)
    assert [c.train.seed for c in configs] == [7, 8, 9]
    assert len({c.name for c in configs}) == 3
    assert replicate_configs(trial_config(spec, {}, "t1"), 1)[0].train.seed == 7
    plan = render_plan(spec)
    assert "8 trials, at most 2 at once, each trained and scored with 3 training seeds (train.seed 7 to 9): " \
           "24 training runs and evaluations" in plan


@pytest.mark.slow
def test_a_replicated_trial_reports_the_mean_and_keeps_every_seed(tmp_path, tiny_assets, tiny_model_dir,  # noqa: F811
                                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = random_model_spec(tiny_assets, tiny_model_dir, sampler="grid", num_samples=1, replicates=2,
                             search_space={"data.size": {"choice": [16]}})
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(data))
    spec = load_spec(tmp_path / "sweep.yaml", store_overrides(tmp_path, "replicates-test"))

    outcome = run_sweep(spec, verbose=0)

    assert outcome.finished
    [trial] = outcome.trials
    run = tracking.client(outcome.tracking_uri).get_run(trial["run_id"])
    metrics, tags = run.data.metrics, run.data.tags
    for name in ("harmful_score", "reasoning_accuracy"):
        seeds = [metrics[f"seed0/{name}"], metrics[f"seed1/{name}"]]
        assert metrics[name] == pytest.approx(sum(seeds) / 2)  # the front's point is the mean
        assert trial[name] == pytest.approx(metrics[name])
        assert metrics[f"{name}_ci_low"] <= metrics[name] <= metrics[f"{name}_ci_high"]
    assert (tags["seed1/train.seed"], tags["checkpoint_dir"] != tags["seed1/checkpoint_dir"]) == ("1", True)
    assert "seed0/train_loss" in metrics and "seed1/train_loss" in metrics
