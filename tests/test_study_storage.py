"""The study storage pickles into Tune's searcher state without the database password."""

from __future__ import annotations

import pickle

import optuna
import pytest

from sweeps import study_storage
from sweeps.study_storage import CredentialFreeRDBStorage


def test_the_pickled_storage_holds_no_password_and_reconnects_in_the_driver(tmp_path, monkeypatch):
    storage = CredentialFreeRDBStorage(f"sqlite:///{tmp_path}/optuna.db")
    optuna.create_study(study_name="s", storage=storage).optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    # The URL a PostgreSQL study would have; the engine behind it stays the SQLite one opened above.
    secret_url = "postgresql://safetytax:hunter2-secret@127.0.0.1:5432/studies"
    monkeypatch.setitem(study_storage._FULL_URLS, "postgresql://safetytax:***@127.0.0.1:5432/studies", secret_url)
    storage.url = secret_url
    state = pickle.dumps(storage)
    assert b"hunter2-secret" not in state
    assert b"postgresql://safetytax:***@127.0.0.1:5432/studies" in state
    # Unpickled in a process that opened the storage, it gets its full URL back (here: the SQLite one).
    storage.url = f"sqlite:///{tmp_path}/optuna.db"
    restored = pickle.loads(pickle.dumps(storage))
    assert len(optuna.load_study(study_name="s", storage=restored).trials) == 2


def test_unpickling_without_the_password_says_how_to_fix_it(tmp_path):
    storage = CredentialFreeRDBStorage(f"sqlite:///{tmp_path}/optuna.db")
    storage.url = "postgresql://safetytax:pw-never-opened@127.0.0.1:5432/other"
    state = pickle.dumps(storage)
    with pytest.raises(RuntimeError, match=r"postgresql://safetytax:\*\*\*@127.0.0.1:5432/other.*open the storage"):
        pickle.loads(state)
