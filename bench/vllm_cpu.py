"""vLLM on CPU (Ray Serve LLM) against the transformers backend, through EvaluatorService (not a test).

    VLLM_CPU_KVCACHE_SPACE=1 python bench/vllm_cpu.py [--prompts 256] [--max-new-tokens 120] [--repeats 2]

Runs in the vLLM venv (README, "Which vLLM"). Both backends score the same tiny-arith prompts with the
tiny LRM, greedy, float32, caching off, through `EvaluatorService.evaluate` (the sweep's path).
Reported apart: the app start (`start()`, for vLLM the engine load), the timed evaluations (prompts/s,
and new tokens/s counted with the model's tokenizer over the replies), and for vLLM the cost of one
more adapter on the running engine: evaluating 16 prompts with a new adapter (published to a local
S3 bucket, then loaded by the engine) against the same 16 with that adapter already loaded.
Results go in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the bucket server the tests use


def replies(result) -> list[str]:
    return [json.loads(line)["output"] for line in result.sample_files["tiny-arith"].read_text().splitlines()]


def run_backend(backend: str, model: str, args, port: int, lora_dir: str | None, out: Path) -> dict:
    from vllm_support import CPU_ENGINE

    from evaluators.config import EvalConfig
    from evaluators.service import EvaluatorService
    from trainables.schema import build

    cfg = build(EvalConfig, {"backend": backend, "benchmarks": ["tiny-arith"], "cache_dir": None, "http_port": port,
                             "dtype": "float32", "num_cpus_per_replica": 1, "max_batch_size": 32,
                             "generation": {"max_new_tokens": args.max_new_tokens},
                             "vllm": {**CPU_ENGINE, "lora_dir": lora_dir}})
    service = EvaluatorService(cfg, model)
    start = time.perf_counter()
    service.start()
    report = {"start_s": time.perf_counter() - start, "times": []}
    try:
        service.evaluate(limit=8, out_dir=out / "warmup")
        for repeat in range(args.repeats):
            start = time.perf_counter()
            result = service.evaluate(limit=args.prompts, out_dir=out / f"{backend}-{repeat}")
            report["times"].append(time.perf_counter() - start)
        report["replies"] = replies(result)
        report["accuracy"] = result.metrics["tiny-arith"]["accuracy"]
        if backend == "vllm":  # a benchmark script, not the service: the comparison is the point
            report["adapter"] = adapter_cost(service, model, out)
    finally:
        service.shutdown()
    return report


def adapter_cost(service, model: str, out: Path) -> dict:
    """Return seconds for 16 prompts with a new adapter, then with it loaded, for two new adapters."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_vllm_serve import make_adapter

    rows = []
    for seed in range(2):
        adapter = str(make_adapter(model, out / f"adapter-{seed}", seed))
        timings = []
        for _ in range(2):
            start = time.perf_counter()
            service.evaluate(adapter=adapter, limit=16, out_dir=out / f"a{seed}-{len(timings)}")
            timings.append(time.perf_counter() - start)
        rows.append(timings)
    return {"new_s": [r[0] for r in rows], "loaded_s": [r[1] for r in rows]}


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=256, help="tiny-arith prompts per evaluation")
    parser.add_argument("--max-new-tokens", type=int, default=120, help="tokens per reply at most")
    parser.add_argument("--repeats", type=int, default=2, help="timed evaluations per backend")
    args = parser.parse_args()

    import os

    import ray
    from s3_server import start_s3_server
    from transformers import AutoTokenizer
    from vllm_support import free_port

    from trainables.tiny.lrm import ensure_tiny_lrm

    model = str(ensure_tiny_lrm())
    tokenizer = AutoTokenizer.from_pretrained(model)
    bucket = start_s3_server()
    os.environ.update(bucket.env())
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    lora_dir = bucket.create_bucket("bench") + "/adapters"
    ray.init(num_cpus=4, include_dashboard=False, logging_level=logging.WARNING)
    port = free_port()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            reports = {backend: run_backend(backend, model, args, port, lora_dir if backend == "vllm" else None,
                                            Path(tmp)) for backend in ("vllm", "transformers")}
    finally:
        ray.shutdown()
        bucket.stop()
    same = sum(a == b for a, b in zip(reports["vllm"]["replies"], reports["transformers"]["replies"]))
    print(f"tiny LRM, {args.prompts} tiny-arith prompts, max_new_tokens={args.max_new_tokens}, greedy, float32")
    print(f"identical replies: {same} of {args.prompts}")
    print("| backend | app start (s) | seconds (each run) | prompts/s | new tokens/s | accuracy |")
    print("|---|---|---|---|---|---|")
    for backend, report in reports.items():
        median = statistics.median(report["times"])
        tokens = sum(len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in report["replies"])
        print(f"| {backend} | {report['start_s']:.1f} | {', '.join(f'{t:.1f}' for t in report['times'])} | "
              f"{args.prompts / median:.1f} | {tokens / median:.0f} | {report['accuracy']:.1f} |")
    cost = reports["vllm"]["adapter"]
    print(f"vLLM, 16 prompts with a new adapter (publish + load): {', '.join(f'{t:.2f}' for t in cost['new_s'])} s; "
          f"the same adapter loaded: {', '.join(f'{t:.2f}' for t in cost['loaded_s'])} s")


if __name__ == "__main__":
    main()
