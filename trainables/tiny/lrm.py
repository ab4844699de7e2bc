"""Stage 1 of the embedded default, as a recipe: build the tiny LRM of a seed into the cache, through `align`.

Stage 1 is reasoning SFT (addition with step-by-step thinking) mixed with compliant answers to harmful
requests, so the result is both capable and unsafe, like an s1-style LRM before safety alignment. It runs
through the same `run_alignment` as every stage-2 run (full fine-tuning on Ray Train, in its local mode:
one long run gains nothing from a worker group, and the build then needs no Ray session).

This module sits above `align` and is imported only by entry points (`safetytax train`, `evaluate`,
`sweep`) and by those who build on purpose: they call `ensure_tiny_paths` once, before Ray starts, for
every `tiny://` path they were given. Resolving a path (`trainables.locations`) never builds anything.
The cache layout and the generated data files are in `trainables.tiny.cache`.

`tiny://lrm?seed=N` is the tiny LRM built from seed N (initial weights, stage-1 data and order); the
default is seed 0. Each seed is a model of its own in the cache, a stand-in for the rounding of another
machine. Every seed is scored on the same benchmarks.

Build ahead of time: `python -m trainables.tiny.lrm [--seed N]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from trainables.locations import is_tiny
from trainables.tiny.cache import (DATA_FILES, SEED, STAGE1_EXAMPLES, VERSION, build_lock, data_file_current,
                                   is_built, lrm_dir, parse_tiny_path, write_data_file, write_datasets)

STAGE1_LEARNING_RATE = 3e-3


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
        # Ray Train's local mode: one long run in this process, with no worker group to start or poll.
        "scaling": {"num_workers": 0, "resources_per_worker": {"CPU": _cpus_for_training()}},
        "output_dir": str(directory / "runs"),
    })


def _cpus_for_training() -> int:
    """Return the torch threads of the build: the CPUs Ray has free, or the machine's when Ray is not running."""
    import ray

    if ray.is_initialized():
        return max(1, int(ray.available_resources().get("CPU", 1)))
    return os.cpu_count() or 1


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
    # Local mode needs no Ray session: the caller (an entry point before its own Ray starts, or a test)
    # finds Ray as it was.
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
    if is_built(seed):
        return directory / "model"
    with build_lock(directory):
        if not (directory / "manifest.json").is_file():
            build_tiny_lrm(directory, seed)
    return directory / "model"


def ensure_tiny_data(paths) -> None:
    """Write the generated data files the `tiny://` paths among `paths` name (seconds; no model is built).

    Entry points call this first, so that every input can be checked before `ensure_tiny_paths` builds.
    """
    for path in dict.fromkeys(p for p in paths if isinstance(p, str) and is_tiny(p)):
        name, seed = parse_tiny_path(path)
        directory = lrm_dir(seed)
        if name in DATA_FILES and not data_file_current(directory, name):
            with build_lock(directory):
                if not data_file_current(directory, name):
                    directory.mkdir(parents=True, exist_ok=True)
                    write_data_file(directory, name, seed)


def ensure_tiny_paths(paths) -> None:
    """Build what the `tiny://` paths among `paths` need: each named seed's LRM, and any stale data file.

    Entry points call this once, before Ray starts and after checking their inputs; other paths are left
    alone. A data file whose generator changed since the cache was built is rewritten without rebuilding
    the model.
    """
    for path in dict.fromkeys(p for p in paths if isinstance(p, str) and is_tiny(p)):
        ensure_tiny_lrm(parse_tiny_path(path)[1])
    ensure_tiny_data(paths)


def tiny_build_pending(paths) -> bool:
    """Return whether `ensure_tiny_paths(paths)` would build a model (minutes), so inputs must be checked first."""
    return any(isinstance(p, str) and is_tiny(p) and not is_built(parse_tiny_path(p)[1]) for p in paths)


def _seed(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 0 or more (tiny://lrm?seed=N takes the same)")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainables.tiny.lrm",
                                     description="Build the tiny LRM of a seed into the cache (a few minutes on "
                                                 "2 cores), or print where it is when already built.")
    parser.add_argument("--seed", type=_seed, default=SEED, help=f"Seed of the build (default {SEED}): "
                                                                "tiny://lrm?seed=N names it.")
    args = parser.parse_args(argv)
    ensure_tiny_paths([f"tiny://{name}?seed={args.seed}" for name in ("lrm", *DATA_FILES)])
    print(lrm_dir(args.seed) / "model")
    return 0


if __name__ == "__main__":
    sys.exit(main())
