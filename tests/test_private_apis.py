"""Each private API of Ray and Optuna that `trainables/private_apis.py` fences, checked against what is installed.

A failure here means an upgrade moved an internal the project relies on: the message names the version and
the entry of trainables/private_apis.py to mend. These run in seconds, so CI meets the move before a sweep does.
"""

from __future__ import annotations

import importlib.util
import logging
import pickle
import threading
from pathlib import Path

import optuna
import pytest
import ray

from trainables import private_apis
from trainables.local_ray import start_ray  # ray.init, started again if Ray's node start times out

RAY, OPTUNA = f"Ray {ray.__version__}", f"Optuna {optuna.__version__}"


def test_the_head_node_still_carries_the_resource_that_places_a_driver_there():
    start_ray(num_cpus=1, include_dashboard=False, logging_level=logging.WARNING)
    try:
        [node] = ray.nodes()
        assert private_apis.HEAD_NODE_RESOURCE in node["Resources"], (
            f"{RAY} no longer gives the head node {private_apis.HEAD_NODE_RESOURCE}: mend HEAD_NODE_RESOURCE "
            f"(its resources are {sorted(node['Resources'])})")
    finally:
        ray.shutdown()


def test_the_train_loggers_named_by_module_and_file_still_exist():
    cleaner = private_apis.PLACEMENT_GROUP_CLEANER_LOGGER
    assert importlib.util.find_spec(cleaner) is not None, (
        f"{RAY} moved the placement-group cleaner {cleaner}: mend PLACEMENT_GROUP_CLEANER_LOGGER")
    names = private_apis.train_report_logger_names()
    assert Path(names[-1]).is_file(), f"{RAY} moved Train V2's report context: mend train_report_logger_names"


def test_rays_cluster_lookup_still_answers_as_the_project_reads_it(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6390")
    found = private_apis.existing_cluster_address()  # localhost comes back as this node's address
    assert found is not None and found.endswith(":6390"), (
        f"{RAY} changed its cluster lookup ({found}): mend existing_cluster_address")
    monkeypatch.setenv("RAY_ADDRESS", "local")
    assert private_apis.existing_cluster_address() is None, f"{RAY} changed its cluster lookup"


def test_tunes_list_of_propagated_variables_is_still_a_set_that_can_lose_names(monkeypatch):
    from ray.tune.execution import class_cache

    assert isinstance(class_cache.ENV_VARS_TO_PROPAGATE, set), (
        f"{RAY} changed ENV_VARS_TO_PROPAGATE: mend stop_tune_propagating, or credentials reach trial actors")
    monkeypatch.setattr(class_cache, "ENV_VARS_TO_PROPAGATE", {"AWS_SECRET_ACCESS_KEY", "KEEP_ME"})
    private_apis.stop_tune_propagating(("AWS_SECRET_ACCESS_KEY",))
    assert class_cache.ENV_VARS_TO_PROPAGATE == {"KEEP_ME"}


def test_a_saved_search_state_extended_by_two_samples_restores_with_the_new_count(tmp_path):
    from ray import tune
    from ray.tune.experiment import Experiment
    from ray.tune.search.optuna import OptunaSearch
    from ray.tune.search.search_generator import SearchGenerator

    def searcher() -> SearchGenerator:
        return SearchGenerator(OptunaSearch(space={"x": tune.uniform(0, 1)}, metric="a", mode="min"))

    saved = searcher()
    saved.add_configurations(Experiment("e", lambda config: None, num_samples=3, storage_path=str(tmp_path)))
    saved.save_to_dir(str(tmp_path), "session")
    assert private_apis.extend_search_state(str(tmp_path), 5) == 3, (
        f"{RAY} saves its search state differently: mend SEARCH_STATE_FILES and extend_search_state "
        f"(the folder holds {sorted(p.name for p in tmp_path.iterdir())})")
    assert private_apis.extend_search_state(str(tmp_path), 4) is None  # never lowered
    restored = searcher()
    restored.restore_from_dir(str(tmp_path))
    assert restored.get_state()["total_samples"] == 5 and not restored.is_finished()


def test_optuna_search_still_holds_the_trial_to_tell_until_it_is_told():
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    search = OptunaSearch(space={"x": tune.uniform(0, 1)}, metric="a", mode="min")
    search.suggest("t1")
    trial = private_apis.optuna_trial_to_tell(search, "t1")
    assert isinstance(trial, optuna.Trial), f"{RAY} changed OptunaSearch's trials: mend optuna_trial_to_tell"
    search.on_trial_complete("t1", {"a": 1.0})
    assert private_apis.optuna_trial_to_tell(search, "t1") is None, (
        f"{RAY} no longer marks told trials in _completed_trials: mend optuna_trial_to_tell")


def test_a_frozen_trial_of_an_rdb_study_can_still_be_failed_by_its_storage_id(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/study.db")
    study = optuna.create_study(study_name="s", storage=storage)
    study.ask()
    [frozen] = study.get_trials(deepcopy=False)
    private_apis.fail_study_trial(storage, frozen)
    assert study.get_trials()[0].state == optuna.trial.TrialState.FAIL, f"{OPTUNA}: mend fail_study_trial"


def test_optunas_rdb_storage_still_pickles_its_url_under_the_key_the_sweep_redacts(tmp_path):
    url = f"sqlite:///{tmp_path}/study.db"
    state = optuna.storages.RDBStorage(url).__getstate__()
    assert state.get(private_apis.RDB_STORAGE_STATE_URL) == url, (
        f"{OPTUNA} pickles RDBStorage differently (keys {sorted(state)}): mend RDB_STORAGE_STATE_URL, or a "
        "database password reaches Tune's saved state")


def test_rays_per_process_config_can_still_be_read_again():
    try:
        private_apis.reread_ray_config()
    except (ImportError, AttributeError) as err:
        pytest.fail(f"{RAY} moved ray._raylet.Config.initialize ({err}): mend reread_ray_config")


@pytest.mark.parametrize("name", ["NSGAIISampler", "TPESampler", "GPSampler", "RandomSampler"])
def test_optunas_samplers_still_pickle_once_their_locks_are_dropped(name):
    from sweeps import picklable_samplers

    sampler = getattr(picklable_samplers, name)(seed=0)
    restored = pickle.loads(pickle.dumps(sampler))
    assert type(restored) is type(sampler), f"{OPTUNA}: mend LocksRecreatedOnUnpickle"
    locks = (type(threading.Lock()), type(threading.RLock()))
    assert {k for k, v in vars(sampler).items() if isinstance(v, locks)} == {
        k for k, v in vars(restored).items() if isinstance(v, locks)}, f"{OPTUNA}: a lock was not given back"
