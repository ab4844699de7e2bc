"""The fixed cost of one alignment run on Ray Train: a one-step `run_alignment`, before and after its speed-ups.

    python bench/train_fixed_cost.py [--repeats 2]

All settings run in one Ray session, alternating, after one warm-up run each, on a random tiny Qwen2
(one LoRA step, so the run is nearly all fixed cost). "Ray defaults" is Ray Train as it comes: the
controller polling every 2 s, the preemption watcher on, and Ray's TorchConfig (a gloo process group for
the single worker, and torch imported by the controller). "project" is what `run_alignment` does with one
worker (`trainables/ray_backend.py`). "local mode" is `scaling.num_workers: 0` (the tiny sweeps): the loop
runs in this process, as it runs in a sweep's trial process, which Tune keeps from trial to trial; its
warm-up run, which pays the imports, is printed too. Each run's phases come from
`AlignmentResult.phase_seconds`. Results go in docs/benchmarks.md; state the load average (printed) with them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path


def build_config(root: Path):
    """Return a one-step LoRA config over a random tiny Qwen2 and a few refusals written under `root`."""
    from trainables.config import AlignConfig
    from trainables.tiny import tasks
    from trainables.tiny.model import build_tiny_model
    from trainables.tiny.tokenizer import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    build_tiny_model(tokenizer, seed=0).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    rows = [{"prompt": e.prompt, "response": e.answer}
            for e in (tasks.refusal_example(r) for r in tasks.harmful_requests("train")[:8])]
    (root / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return AlignConfig(name="fixed-cost", model=str(root / "model"), output_dir=root / "runs", finetune="lora",
                       data={"path": str(root / "data.jsonl"), "format": "pairs"},
                       train={"max_steps": 1, "per_device_batch_size": 8, "max_seq_length": 256},
                       scaling={"num_workers": 1, "resources_per_worker": {"CPU": 1}})


def run_once(cfg, setting: str) -> dict:
    """Return the wall time and phases of one `run_alignment` call under `setting`."""
    from ray.train.torch import TorchConfig

    from trainables import align, ray_backend

    if setting == "local mode":
        cfg = cfg.model_copy(update={"scaling": cfg.scaling.model_copy(update={"num_workers": 0})})
    original = ray_backend.backend_config
    if setting == "Ray defaults":
        os.environ[ray_backend.POLL_INTERVAL_ENV] = "2.0"
        os.environ[ray_backend.PREEMPTION_WATCHER_ENV] = "1"
        ray_backend.backend_config = lambda num_workers: TorchConfig()
    else:
        os.environ.pop(ray_backend.POLL_INTERVAL_ENV, None)
        os.environ.pop(ray_backend.PREEMPTION_WATCHER_ENV, None)
    try:
        start = time.perf_counter()
        result = align.run_alignment(cfg, progress=False)
        wall = time.perf_counter() - start
    finally:
        ray_backend.backend_config = original
    return {"setting": setting, "wall_s": wall, **{f"{k}_s": v for k, v in result.phase_seconds.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="Timed runs per setting, after one warm-up each.")
    args = parser.parse_args()
    import ray

    from trainables.local_ray import init_local_ray

    print(f"load average at start: {os.getloadavg()}", flush=True)
    init_local_ray(num_cpus=2, logging_level=logging.WARNING)
    settings = ["Ray defaults", "project", "local mode"]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = build_config(Path(tmp))
        for setting in settings:
            warm_up = run_once(cfg, setting)  # first imports, first actors
            print(json.dumps({**warm_up, "setting": f"{setting} (warm-up)"}), flush=True)
        for index in range(args.repeats):
            for setting in settings:
                row = run_once(cfg, setting)
                results.append(row)
                print(json.dumps(row), flush=True)
    ray.shutdown()
    print(f"load average at end: {os.getloadavg()}")
    phases = ["wall_s", "startup_s", "model_load_s", "train_steps_s", "checkpoint_s"]
    print("| setting | " + " | ".join(phases) + " |")
    print("|---" * (len(phases) + 1) + "|")
    for setting in settings:
        rows = [r for r in results if r["setting"] == setting]
        cells = [", ".join(f"{r.get(p, float('nan')):.1f}" for r in rows) for p in phases]
        print(f"| {setting} | " + " | ".join(cells) + " |")
    medians = {s: statistics.median(r["wall_s"] for r in results if r["setting"] == s) for s in settings}
    print(f"median wall s: {medians}")


if __name__ == "__main__":
    main()
