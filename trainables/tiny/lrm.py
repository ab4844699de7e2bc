"""Stage 1 of the embedded default: build the tiny LRM once from a seed and cache it on disk.

Stage 1 is reasoning SFT (addition with step-by-step thinking) mixed with compliant answers to harmful
requests, so the result is both capable and unsafe, like an s1-style LRM before safety alignment. It runs
through the same `run_alignment` as every stage-2 run (full fine-tuning on Ray Train).

`tiny://NAME` paths point into the cache: `tiny://lrm` is the model directory, and the data files the
embedded default aligns on are `tiny://directrefusal.jsonl`, `tiny://safechain.jsonl`,
`tiny://reasoning.jsonl` and `tiny://stage1.jsonl`. The first use builds everything (a few minutes on 2
cores); later uses are instant. A data file missing from an existing cache (one added to the project
after the model was built) is written on its first use, without rebuilding the model.

`tiny://lrm?seed=N` is the tiny LRM built from seed N (initial weights, stage-1 data and order); the
default is seed 0. Each seed is a model of its own in the cache, a stand-in for the rounding of another
machine. The data files are the same for every seed, and every seed is scored on the same benchmarks.

Run `python -m trainables.tiny.lrm` to build it ahead of time.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

from trainables.schema import ConfigError
from trainables.tiny import tasks

# Bump when tasks, architecture or stage-1 settings change, so stale caches are rebuilt, not reused.
VERSION = 2
SEED = 0
STAGE1_EXAMPLES = 800 * 32  # 800 steps of batch 32: ~90% held-out accuracy (measured, see docs/benchmarks.md)
STAGE1_LEARNING_RATE = 3e-3
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
        _write_data_file(directory, name, seed)


def _versions_file(directory: Path) -> Path:
    return directory / "data_versions.json"


def _recorded_versions(directory: Path) -> dict[str, int]:
    """Return {data file: generator version it was written by}; files from before versions count as 1."""
    return json.loads(_versions_file(directory).read_text()) if _versions_file(directory).is_file() else {}


def _data_file_current(directory: Path, name: str) -> bool:
    """Return whether `name` exists in `directory` and was written by this version of its generator."""
    return (directory / name).is_file() and _recorded_versions(directory).get(name, 1) == DATA_VERSIONS.get(name, 1)


def _write_data_file(directory: Path, name: str, seed: int) -> None:
    _write_jsonl(directory / name, dataset_rows(name, seed))
    versions = _recorded_versions(directory)
    versions[name] = DATA_VERSIONS.get(name, 1)
    tmp = _versions_file(directory).with_suffix(".tmp")
    tmp.write_text(json.dumps(versions, sort_keys=True))
    tmp.replace(_versions_file(directory))


def stage1_config(directory: Path, init_dir: Path, seed: int = SEED):
    """Return the AlignConfig of stage 1: full fine-tuning of the random model on the stage-1 mix."""
    from trainables.config import AlignConfig

    return AlignConfig.model_validate({
        "name": "tiny-lrm-stage1",
        "model": str(init_dir),
        "data": {"path": str(directory / "stage1.jsonl"), "format": "pairs", "prompt_column": "prompt",
                 "response_column": "answer", "thinking_column": "thinking"},
        "finetune": "full",
        "train": {"learning_rate": STAGE1_LEARNING_RATE, "epochs": 1, "per_device_batch_size": 32,
                  "max_seq_length": 256, "weight_decay": 0.01, "adam_beta1": 0.9, "adam_beta2": 0.95,
                  "warmup_ratio": 0.05, "seed": seed},
        "scaling": {"num_workers": 1, "resources_per_worker": {"CPU": _cpus_for_training()}},
        "output_dir": str(directory / "runs"),
    })


def _cpus_for_training() -> int:
    import ray

    if ray.is_initialized():
        return max(1, int(ray.available_resources().get("CPU", 1)))
    return max(1, min(os.cpu_count() or 1, 4))


@contextlib.contextmanager
def _build_lock(directory: Path):
    """Hold an exclusive file lock so concurrent first uses build the model once."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f"{directory.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def build_tiny_lrm(directory: Path, seed: int = SEED) -> Path:
    """Return the model directory after running stage 1 into `directory` (data, init weights, training)."""
    from trainables.align import run_alignment
    from trainables.tiny.model import build_tiny_model
    from trainables.tiny.tokenizer import build_char_tokenizer

    start = time.time()
    print(f"[tiny-lrm] building the tiny LRM in {directory} (first use; a few minutes on 2 cores)", flush=True)
    write_datasets(directory, seed)
    tokenizer = build_char_tokenizer()
    init_dir = directory / "init"
    build_tiny_model(tokenizer, seed=seed).save_pretrained(init_dir)
    tokenizer.save_pretrained(init_dir)
    result = run_alignment(stage1_config(directory, init_dir, seed), progress=True)
    model_dir = directory / "model"
    shutil.rmtree(model_dir, ignore_errors=True)
    shutil.copytree(result.checkpoint_dir, model_dir)
    shutil.rmtree(directory / "runs", ignore_errors=True)
    shutil.rmtree(init_dir, ignore_errors=True)
    manifest = {"version": VERSION, "seed": seed, "stage1_examples": STAGE1_EXAMPLES,
                "final_loss": result.step_losses[-1] if result.step_losses else None,
                "build_seconds": round(time.time() - start, 1)}
    # Written last: its presence marks a complete build.
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2))
    print(f"[tiny-lrm] built in {manifest['build_seconds']:.0f} s: {model_dir}", flush=True)
    return model_dir


def ensure_tiny_lrm(seed: int = SEED) -> Path:
    """Return the cached tiny LRM's model directory, building it first if it is missing or incomplete."""
    directory = lrm_dir(seed)
    if (directory / "manifest.json").is_file():
        return directory / "model"
    with _build_lock(directory):
        if not (directory / "manifest.json").is_file():
            build_tiny_lrm(directory, seed)
    return directory / "model"


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


def resolve_tiny_path(path: str) -> str:
    """Return the local path behind `tiny://NAME[?seed=N]`, building the tiny LRM (or a missing data file) on first use."""
    name, seed = parse_tiny_path(path)
    model_dir = ensure_tiny_lrm(seed)
    if name == "lrm":
        return str(model_dir)
    directory = model_dir.parent
    # A data file added or changed after this cache was built is (re)written; the model stays as it is.
    if not _data_file_current(directory, name):
        with _build_lock(directory):
            if not _data_file_current(directory, name):
                _write_data_file(directory, name, seed)
    return str(directory / name)


def main() -> int:
    print(ensure_tiny_lrm())
    return 0


if __name__ == "__main__":
    sys.exit(main())
