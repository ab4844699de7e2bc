"""Fixtures shared by the test suite: tiny models built in code and the optional ../shared/data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Keep every test off the network and off the user's caches.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only folder of real benchmark samples; tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent (real data samples are only present on dev and CI machines)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def char_tokenizer():
    from trainables.tiny.tokenizer import build_char_tokenizer

    return build_char_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, char_tokenizer) -> Path:
    """A randomly initialised tiny Qwen2 model and its tokenizer saved in HF format."""
    from trainables.tiny.model import build_tiny_model

    out = tmp_path_factory.mktemp("tiny-random")
    build_tiny_model(char_tokenizer, seed=0).save_pretrained(out)
    char_tokenizer.save_pretrained(out)
    return out
