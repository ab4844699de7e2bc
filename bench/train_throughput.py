"""Training throughput of the Ray Train path against the same loop in-process, on the tiny model (not a test).

    python bench/train_throughput.py [--finetune full|lora] [--examples 480] [--epochs 2] [--repeats 2]

Both paths run `trainables.sft.run_training` on the same tokenized data with the same seed, so they do
the same steps (the step losses are compared too). The Ray path uses one worker that reserves every CPU,
as the in-process run uses every core. Start-up (Ray workers, process group, model load, checkpoint
upload) is reported apart from training throughput. Results go in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path


def build_workload(root: Path, args) -> "AlignConfig":
    """Return a config over a random tiny Qwen2 and tiny-task examples written under `root`."""
    from trainables.config import AlignConfig
    from trainables.tiny import tasks
    from trainables.tiny.model import build_tiny_model
    from trainables.tiny.tokenizer import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    build_tiny_model(tokenizer, seed=0).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    rows = [{"prompt": e.prompt, "thinking": e.thinking, "answer": e.answer}
            for e in tasks.stage1_examples(args.examples, seed=0)]
    (root / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return AlignConfig(
        name="bench", model=str(root / "model"), output_dir=root / "runs", finetune=args.finetune,
        data={"path": str(root / "data.jsonl"), "format": "pairs", "thinking_column": "thinking",
              "response_column": "answer"},
        train={"learning_rate": 1e-3, "epochs": args.epochs, "per_device_batch_size": args.batch_size,
               "max_seq_length": 256},
        scaling={"num_workers": 1, "resources_per_worker": {"CPU": os.cpu_count()}},
    )


def training_seconds_and_tokens(epoch_metrics: list[dict]) -> tuple[float, float]:
    seconds = sum(m["epoch_seconds"] for m in epoch_metrics)
    return seconds, sum(m["tokens_per_s"] * m["epoch_seconds"] for m in epoch_metrics)


def run_in_process(cfg, run) -> dict:
    from trainables.sft import train_in_process

    start = time.perf_counter()
    _, log = train_in_process(cfg, run.features, run.model_path, progress=False)
    wall = time.perf_counter() - start
    seconds, tokens = training_seconds_and_tokens(log.epoch_metrics)
    return {"path": "in-process", "wall_s": wall, "train_s": seconds, "tokens_per_s": tokens / seconds,
            "startup_s": wall - seconds, "step_losses": log.step_losses}


def run_ray(cfg) -> dict:
    from trainables.align import run_alignment

    start = time.perf_counter()
    result = run_alignment(cfg, progress=False)
    wall = time.perf_counter() - start
    seconds, tokens = training_seconds_and_tokens(result.epoch_metrics)
    return {"path": "Ray Train", "wall_s": wall, "train_s": seconds, "tokens_per_s": tokens / seconds,
            "startup_s": wall - seconds, "step_losses": result.step_losses}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--finetune", choices=["full", "lora"], default="full", help="Fine-tuning mode.")
    parser.add_argument("--examples", type=int, default=480, help="Training examples (tiny stage-1 mix).")
    parser.add_argument("--epochs", type=int, default=2, help="Epochs per run.")
    parser.add_argument("--batch-size", type=int, default=16, help="Examples per step.")
    parser.add_argument("--repeats", type=int, default=2, help="Runs of each path, alternated.")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    import ray

    from trainables.align import prepare_run

    with tempfile.TemporaryDirectory() as root:
        cfg = build_workload(Path(root), args)
        run = prepare_run(cfg)
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False)
        try:
            results = []
            for _ in range(args.repeats):  # alternate, so drift in machine load hits both paths alike
                results += [run_in_process(cfg, run), run_ray(cfg)]
        finally:
            ray.shutdown()

    tokens = sum(len(f["input_ids"]) for f in run.features) * args.epochs
    print(f"\n{args.finetune} fine-tuning, {len(run.features)} examples x {args.epochs} epochs "
          f"({tokens} tokens), batch {args.batch_size}, {os.cpu_count()} CPUs\n")
    print("| path | run | tokens/s (training) | training s | start-up s | wall s |")
    print("|---|---|---|---|---|---|")
    for index, r in enumerate(results):
        print(f"| {r['path']} | {index // 2 + 1} | {r['tokens_per_s']:.0f} | {r['train_s']:.1f} | "
              f"{r['startup_s']:.1f} | {r['wall_s']:.1f} |")
    by_path = {p: statistics.median(r["tokens_per_s"] for r in results if r["path"] == p)
               for p in ("in-process", "Ray Train")}
    same = all(abs(a - b) < 1e-3 for a, b in zip(results[0]["step_losses"], results[1]["step_losses"]))
    print(f"\nRay Train / in-process tokens/s (medians): {by_path['Ray Train'] / by_path['in-process']:.2f}x; "
          f"same step losses on both paths: {same}")


if __name__ == "__main__":
    main()
