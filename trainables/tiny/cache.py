"""The tiny LRM's cache: where each seed's model and generated data files live, and the data files themselves.

Nothing here trains. `trainables.tiny.lrm` is the recipe that builds a model into this layout (through
`run_alignment`); `trainables.locations` maps `tiny://` paths onto it. Keeping the layout apart from the
recipe is what lets the resolver sit below `align` while the build sits above it.

Layout, under $SAFETYTAX_CACHE (default ~/.cache/safetytax):

    tiny-lrm-v{VERSION}-seed{N}/model/            the built model (`tiny://lrm?seed=N`)
    tiny-lrm-v{VERSION}-seed{N}/{DATA_FILES}      the generated data (`tiny://directrefusal.jsonl?seed=N`, ...)
    tiny-lrm-v{VERSION}-seed{N}/manifest.json     written last: its presence marks a complete build
    tiny-lrm-v{VERSION}-seed{N}/data_versions.json   which generator version wrote each data file
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import asdict
from pathlib import Path

from trainables.schema import ConfigError
from trainables.tiny import tasks

# Bump when tasks, architecture or stage-1 settings change, so stale caches are rebuilt, not reused.
VERSION = 2
SEED = 0
STAGE1_EXAMPLES = 800 * 32  # 800 steps of batch 32: ~90% held-out accuracy (measured, see docs/benchmarks.md)
REASONING_POOL = 4000  # reasoning examples available to stage 2's reasoning_mix
DATA_FILES = ("directrefusal.jsonl", "safechain.jsonl", "reasoning.jsonl", "stage1.jsonl")
# Bump a file's version when its generator changes without touching stage 1: the file is rewritten in
# every cache on next use, the model kept. reasoning.jsonl 2: tiny-arith's test pairs are held out.
DATA_VERSIONS = {"reasoning.jsonl": 2}


def cache_root() -> Path:
    """Return where tiny LRMs are cached: $SAFETYTAX_CACHE, else ~/.cache/safetytax."""
    return Path(os.environ.get("SAFETYTAX_CACHE", Path.home() / ".cache" / "safetytax")).expanduser()


def lrm_dir(seed: int = SEED) -> Path:
    return cache_root() / f"tiny-lrm-v{VERSION}-seed{seed}"


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    tmp.replace(path)


def dataset_rows(name: str, seed: int = SEED) -> list[dict]:
    """Return the rows of the generated data file `name` (one of DATA_FILES) for the tiny LRM of `seed`."""
    if name == "directrefusal.jsonl":
        return [tasks.refusal_row(r) for r in tasks.harmful_requests("train")]
    if name == "safechain.jsonl":
        # The same requests as directrefusal.jsonl, plus harmless rows of another label (as SafeChain has).
        return ([tasks.safechain_row(r) for r in tasks.harmful_requests("train")]
                + [tasks.safechain_benign_row(e) for e in tasks.alarming_examples("train")])
    if name == "reasoning.jsonl":
        # Reasoning pool for stage 2's reasoning_mix: drawn from a seed stage 1 did not use, and never
        # a pair tiny-arith scores (the benchmark's pairs are those of BENCHMARK_SEED, whatever the seed).
        return [asdict(e) for e in tasks.reasoning_examples(REASONING_POOL, seed + 1,
                                                            held_out_seeds=(tasks.BENCHMARK_SEED,))]
    if name == "stage1.jsonl":
        return [asdict(e) for e in tasks.stage1_examples(STAGE1_EXAMPLES, seed)]
    raise ValueError(f"no generated data file {name!r}; known: {', '.join(DATA_FILES)}")


def write_datasets(directory: Path, seed: int = SEED) -> None:
    """Write every generated data file: DirectRefusal- and SafeChain-shaped refusals, reasoning examples, stage 1."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in DATA_FILES:
        write_data_file(directory, name, seed)


def _versions_file(directory: Path) -> Path:
    return directory / "data_versions.json"


def _recorded_versions(directory: Path) -> dict[str, int]:
    """Return {data file: generator version it was written by}; files from before versions count as 1."""
    return json.loads(_versions_file(directory).read_text()) if _versions_file(directory).is_file() else {}


def data_file_current(directory: Path, name: str) -> bool:
    """Return whether `name` exists in `directory` and was written by this version of its generator."""
    return (directory / name).is_file() and _recorded_versions(directory).get(name, 1) == DATA_VERSIONS.get(name, 1)


def write_data_file(directory: Path, name: str, seed: int) -> None:
    _write_jsonl(directory / name, dataset_rows(name, seed))
    versions = _recorded_versions(directory)
    versions[name] = DATA_VERSIONS.get(name, 1)
    tmp = _versions_file(directory).with_suffix(".tmp")
    tmp.write_text(json.dumps(versions, sort_keys=True))
    tmp.replace(_versions_file(directory))


@contextlib.contextmanager
def build_lock(directory: Path):
    """Hold an exclusive file lock so concurrent first uses build the model once."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f"{directory.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield



def is_built(seed: int = SEED) -> bool:
    """Return whether the tiny LRM of `seed` is completely built in the cache."""
    return (lrm_dir(seed) / "manifest.json").is_file()


def parse_tiny_path(path: str) -> tuple[str, int]:
    """Return (NAME, seed) of `tiny://NAME` or `tiny://NAME?seed=N`; raise ConfigError naming the known paths."""
    name, _, query = path.removeprefix("tiny://").strip("/").partition("?")
    name = name.strip("/")
    if name not in ("lrm", *DATA_FILES):
        known = ", ".join(f"tiny://{n}" for n in ("lrm", *DATA_FILES))
        raise ConfigError(f"unknown tiny path {path!r}; known: {known} (each may end in ?seed=N)")
    seed = SEED
    if query:
        key, _, value = query.partition("=")
        if key != "seed" or not value.isdigit():
            raise ConfigError(f"tiny path {path!r}: the only option is ?seed=N with N a whole number, e.g. "
                              f"tiny://{name}?seed=1")
        seed = int(value)
    return name, seed
