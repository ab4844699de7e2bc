"""One resolver for model and data locations: it decides every kind, builds nothing, and sits below `align`."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from trainables import locations
from trainables.schema import ConfigError

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("location, model, data", [
    ("tiny://lrm?seed=1", "tiny", "tiny"),
    ("s3://bucket/checkpoints/trial-1", "bucket", "local"),
    ("./runs/final", "local", "local"),
    ("org/name", "hub", "hub"),
    ("gpt2", "hub", "local"),
    ("data/train.jsonl", "hub", "local"),   # a file suffix keeps a data path off the Hub
])
def test_every_location_has_one_kind(location, model, data):
    assert locations.model_kind(location) == model
    assert locations.data_kind(location) == data


def test_an_unbuilt_tiny_model_is_an_error_that_says_how_to_build_it_and_nothing_is_built(tmp_path, monkeypatch):
    monkeypatch.setenv("SAFETYTAX_CACHE", str(tmp_path))
    with pytest.raises(ConfigError, match=r"tiny://lrm\?seed=3: .* not built.*python -m trainables.tiny.lrm --seed 3"):
        locations.resolve_model("tiny://lrm?seed=3")
    with pytest.raises(ConfigError, match="not built"):
        locations.resolve_data("tiny://directrefusal.jsonl?seed=3")
    assert list(tmp_path.iterdir()) == []


def test_a_built_tiny_path_resolves_into_the_cache(tmp_path, monkeypatch):
    from trainables.tiny import cache

    monkeypatch.setenv("SAFETYTAX_CACHE", str(tmp_path))
    directory = cache.lrm_dir(0)
    (directory / "model").mkdir(parents=True)
    (directory / "model" / "config.json").write_text("{}")
    (directory / "directrefusal.jsonl").write_text("{}\n")
    (directory / "manifest.json").write_text(json.dumps({"version": cache.VERSION, "seed": 0}))
    assert locations.resolve_model("tiny://lrm") == str(directory / "model")
    assert locations.resolve_data("tiny://directrefusal.jsonl") == str(directory / "directrefusal.jsonl")
    assert locations.tiny_ready("tiny://lrm") and not locations.tiny_ready("tiny://safechain.jsonl")


def test_bucket_models_resolve_only_where_the_backend_loads_them(tmp_path):
    with pytest.raises(ConfigError, match="model s3://b/ckpt/: only the vllm evaluation backend"):
        locations.resolve_model("s3://b/ckpt/")
    assert locations.resolve_model("s3://b/ckpt/", bucket_ok=True) == "s3://b/ckpt"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=f"model {tmp_path / 'empty'}: .*has no config.json"):
        locations.resolve_model(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="is a data file; the tiny model is tiny://lrm"):
        locations.check_model_location("tiny://stage1.jsonl")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_only_entry_points_import_the_build_and_align_never_imports_it():
    importers = sorted(str(p.relative_to(REPO)) for folder in ("trainables", "evaluators", "sweeps")
                       for p in (REPO / folder).rglob("*.py") if "trainables.tiny.lrm" in _imports(p))
    assert importers == ["evaluators/cli.py", "sweeps/runner.py", "trainables/cli.py"]
    # The import circle align -> tiny/lrm -> align is gone: loading align and the resolver loads no recipe.
    loaded = subprocess.run([sys.executable, "-c", "import sys, trainables.align, trainables.locations, "
                             "evaluators.service; print('trainables.tiny.lrm' in sys.modules)"],
                            cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "False"
