"""Prompts per second through the Serve transformers backend, batched against one prompt at a time (not a test).

    python bench/serve_batching.py [--prompts 128] [--max-new-tokens 96] [--batch-size 32] [--repeats 2]

Both runs go through the same path a sweep uses (`EvaluatorService.evaluate` on tiny-arith, caching
off), with the same model and prompts and greedy decoding, so they must give the same replies (checked).
"Batched" lets one replica generate up to --batch-size requests together (`@serve.batch`); "one at a
time" sets max_batch_size=1. The model is the tiny LRM when it is already built, else the random tiny
model. Deployment start-up is excluded; a warm-up evaluation runs first. The replica reserves one CPU
(one torch thread): on 2 shared cores, two threads waiting on each other made both runs many times
slower. Results go in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import statistics
import tempfile
import time
from pathlib import Path


def pick_model(root: Path) -> tuple[str, str]:
    """Return (model folder, description): the built tiny LRM if present, else a random tiny Qwen2."""
    from trainables.tiny import cache

    if cache.is_built():
        return str(cache.lrm_dir() / "model"), "tiny LRM (tiny://lrm)"
    from trainables.tiny.model import build_tiny_model
    from trainables.tiny.tokenizer import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    build_tiny_model(tokenizer, seed=0).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    return str(root / "model"), "random tiny Qwen2 (tiny LRM not built)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def measure(model: str, batch_size: int, args, port: int, out: Path) -> tuple[list[float], str]:
    """Return (seconds of each timed evaluation, the replies file of the last one)."""
    from evaluators.config import EvalConfig
    from evaluators.service import EvaluatorService
    from trainables.schema import build

    cfg = build(EvalConfig, {"benchmarks": ["tiny-arith"], "cache_dir": None, "http_port": port,
                             "max_batch_size": batch_size, "num_cpus_per_replica": 1,
                             "generation": {"max_new_tokens": args.max_new_tokens}})
    times = []
    with EvaluatorService(cfg, model) as service:
        service.evaluate(limit=4, out_dir=out / "warmup")
        for repeat in range(args.repeats):
            start = time.perf_counter()
            result = service.evaluate(limit=args.prompts, out_dir=out / f"b{batch_size}-{repeat}")
            times.append(time.perf_counter() - start)
    replies = [json.loads(line)["output"] for line in result.sample_files["tiny-arith"].read_text().splitlines()]
    return times, json.dumps(replies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=128, help="tiny-arith prompts per evaluation")
    parser.add_argument("--max-new-tokens", type=int, default=96, help="tokens per reply at most")
    parser.add_argument("--batch-size", type=int, default=32, help="max_batch_size of the batched run")
    parser.add_argument("--repeats", type=int, default=2, help="timed evaluations per setting")
    args = parser.parse_args()

    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    port = free_port()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            model, description = pick_model(Path(tmp))
            batched, batched_replies = measure(model, args.batch_size, args, port, Path(tmp))
            single, single_replies = measure(model, 1, args, port, Path(tmp))
    finally:
        ray.shutdown()
    rate = {name: args.prompts / statistics.median(times) for name, times in [("batched", batched), ("single", single)]}
    print(f"model: {description}; {args.prompts} prompts, max_new_tokens={args.max_new_tokens}, greedy")
    print(f"same replies batched and one at a time: {batched_replies == single_replies}")
    print("| mode | max_batch_size | seconds (each run) | prompts/s (median) |")
    print("|---|---|---|---|")
    print(f"| batched | {args.batch_size} | {', '.join(f'{t:.1f}' for t in batched)} | {rate['batched']:.2f} |")
    print(f"| one at a time | 1 | {', '.join(f'{t:.1f}' for t in single)} | {rate['single']:.2f} |")
    print(f"speed-up: {rate['batched'] / rate['single']:.1f}x (target >= 4x)")


if __name__ == "__main__":
    main()
