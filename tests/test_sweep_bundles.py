"""Tied parameters: a choice of named bundles of fields, checked before Ray starts and shown by its name."""

from __future__ import annotations

import json

import pytest
import ray

from sweeps import tracking
from sweeps.loader import TINY_SPEC, load_spec
from sweeps.points import apply_point
from sweeps.preflight import check_data
from sweeps.report import SweepLayout, trial_records
from sweeps.runner import _loggable_spec
from sweeps.search_space import grid_values, tune_param_space
from sweeps.trial import bundle_params
from trainables.schema import ConfigError


@pytest.fixture
def sources(tmp_path):
    """Two local data sets of different shapes: 20 pairs rows and 12 SafeChain rows (8 of them harmful)."""
    pairs = tmp_path / "refusals.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"bad {i}", "response": "No."}) + "\n" for i in range(20)))
    chain = tmp_path / "chain.jsonl"
    chain.write_text("".join(json.dumps({"instruction": f"bad {i}", "response": "Harm ahead.</think>No.",
                                         "label": "vanilla_harmful" if i < 8 else "vanilla_benign"}) + "\n"
                             for i in range(12)))
    return pairs, chain


def bundled(pairs, chain, *overrides, sizes="[4, 8]"):
    space = (f"search_space={{data: {{choice: {{refusals: {{path: {pairs}, format: pairs}}, "
             f"chain: {{path: {chain}, format: safechain}}}}}}, data.size: {{choice: {sizes}}}}}")
    return load_spec(TINY_SPEC, ["base.reasoning_data=null", "base.data.selection=first", "initial_points=[]", space,
                                 "num_samples=4",  # the space has 4 points
                                 *overrides])


def test_a_bundle_sets_its_fields_together_and_is_sampled_by_name(sources):
    pairs, chain = sources
    spec = bundled(pairs, chain)
    assert spec.search_space["data"].bundles["chain"] == {"path": str(chain), "format": "safechain"}
    cfg = apply_point(spec.base, {"data": "chain", "data.size": 4}, spec.search_space)
    assert (cfg.data.path, cfg.data.format, cfg.data.size) == (str(chain), "safechain", 4)
    assert cfg.data.selection == "first"  # fields the bundle does not name stay as in base
    assert tune_param_space(spec.search_space)["data"].categories == ["refusals", "chain"]
    assert grid_values(spec.search_space)["data"] == ["refusals", "chain"]
    assert bundle_params(spec, {"data": "chain", "data.size": 4}) == {"data": "chain"}


def test_every_bundle_is_checked_with_the_largest_data_before_ray_starts(sources):
    pairs, chain = sources
    spec = bundled(pairs, chain)
    check_data(spec.base, spec.search_space)  # 8 harmful SafeChain rows, 20 pairs rows: size 8 fits both
    with pytest.raises(ConfigError, match=r"data.size: 9 rows asked for.*only 8 rows with label.*search_space.data=chain"):
        wider = bundled(pairs, chain, sizes="[4, 9]")
        check_data(wider.base, wider.search_space)
    assert not ray.is_initialized()


@pytest.mark.parametrize("override, named", [
    ("search_space.data.choice.chain.formt=safechain", "search_space.data.choice.chain: search_space.data.formt"),
    ("search_space.data.choice.chain.format=sharegpt", "search_space.data: the bundle 'chain' it can take is invalid"),
    ("search_space.data.choice.chain.size=3", "bundle 'chain' sets size, which is searched too (data.size)"),
    ("search_space.data.choice={'bad name': {path: x}}", "bundle name 'bad name'"),
])
def test_bad_bundles_are_named(sources, override, named):
    pairs, chain = sources
    with pytest.raises(ConfigError) as err:
        bundled(pairs, chain, override)
    assert named in str(err.value)


def test_the_bundle_name_reaches_the_layout_and_the_trial_records_as_group(sources, tmp_path):
    pairs, chain = sources
    spec = bundled(pairs, chain)
    layout = SweepLayout.from_params(tracking.flatten_params(_loggable_spec(spec)))
    assert layout.searched == ["data", "data.size"] and layout.group_by == "data"

    client = tracking.client(tracking.check_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db"))
    experiment = tracking.experiment_id(client, "bundles")
    parent = tracking.start_sweep_run(client, experiment, str(tmp_path / "tune"), "sweep", {}).info.run_id
    for trial_id, name in (("a", "refusals"), ("b", "chain")):
        run = tracking.trial_run(client, experiment, parent, trial_id, run_name=trial_id).info.run_id
        tracking.log_params(client, run, {**bundle_params(spec, {"data": name, "data.size": 4}), "data.size": "4"})
        tracking.log_metrics(client, run, {"harmful_score": 5.0, "reasoning_accuracy": 50.0})
        client.set_terminated(run, "FINISHED")
    records = trial_records(client, experiment, parent, layout)
    assert [(r["trial_id"], r["group"], r["params"]["data"]) for r in records] == [
        ("a", "refusals", "refusals"), ("b", "chain", "chain")]
