"""Generation half of the GPU check: the project's transformers engine against plain `generate`.

Run through `python -m bench.gpu_check`, which builds the model and prints the table.
"""

from __future__ import annotations

import sys
import time
import types
from pathlib import Path
import torch

from bench.gpu_sizes import Sizes


def synchronize(device: torch.device) -> None:
    """Return once the device has finished its queued work (at once on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def import_engine():
    """Return the TransformersEngine class, importing its module even where Ray is not installed.

    The engine is plain transformers; only the Serve deployment beside it in the module needs Ray, so
    on a machine without Ray its two decorators are replaced by ones that return what they decorate.
    """
    try:
        import ray  # noqa: F401
    except ImportError:
        def passthrough(*args, **kwargs):
            return lambda target: target

        serve = types.SimpleNamespace(deployment=passthrough, batch=passthrough)
        sys.modules["ray"] = types.SimpleNamespace(serve=serve)
        sys.modules["ray.serve"] = serve
    from evaluators.transformers_backend import TransformersEngine

    return TransformersEngine


def prompts_of_length(tokenizer, planner_prompt_text, count: int, tokens: int) -> list[str]:
    """Return `count` distinct user prompts whose templated prompts (chat template, prefill) are `tokens` long."""
    overhead = len(tokenizer(planner_prompt_text(""), add_special_tokens=False)["input_ids"])
    if tokens <= overhead:
        raise ValueError(f"--gen-prompt-tokens must exceed the template's {overhead} tokens")
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(letters[(row * 7 + i * 3) % 26] for i in range(tokens - overhead)) for row in range(count)]


def measure_generation(model_dir: Path, sizes: Sizes, device: torch.device, deadline: float,
                       diagnose: bool = False) -> dict:
    """Return new tokens/s of the project's engine (via ReplyPlanner requests) and of plain `generate`.

    With `diagnose`, the engine also runs without stop strings (no StopOnText criterion) and the
    static-cache variant is skipped.
    """
    from evaluators.config import GenerationSettings
    from evaluators.generation import Completion, ReplyPlanner

    engine = import_engine()(str(model_dir), dtype="auto")
    settings = GenerationSettings(max_new_tokens=sizes.gen_new_tokens)
    planner = ReplyPlanner(settings, engine.tokenizer)
    texts = prompts_of_length(engine.tokenizer, lambda p: planner.start(p, None)[0].prompt, sizes.gen_batch,
                              sizes.gen_prompt_tokens)
    requests = [planner.start(text, None)[1] for text in texts]
    widths = {len(engine.tokenizer(r["prompt"], add_special_tokens=False)["input_ids"]) for r in requests}
    results = {"prompt_tokens": sorted(widths), "attention": engine.model.config._attn_implementation}

    engine_runs = [("engine", requests)]
    if diagnose:
        engine_runs.append(("engine_without_stop_strings", [{**r, "stop": []} for r in requests]))
    for name, batch in engine_runs:
        engine.generate([{**r, "max_tokens": 8} for r in batch])  # warm-up: kernels, allocator, tokenizer
        synchronize(device)
        start = time.perf_counter()
        responses = engine.generate(batch)
        synchronize(device)
        seconds = time.perf_counter() - start
        errors = [r for r in responses if isinstance(r, Exception)]
        if errors:
            raise errors[0]
        new_tokens = sum(Completion.from_openai(r).completion_tokens for r in responses)
        results[name] = {"new_tokens": new_tokens, "new_tokens_per_s": new_tokens / seconds, "seconds": seconds}

    # The baseline: same weights, random prompt ids, exactly gen_new_tokens per row.
    prompt_ids = torch.randint(0, sizes.vocab, (sizes.gen_batch, sizes.gen_prompt_tokens),
                               generator=torch.Generator().manual_seed(0)).to(device)
    plain = dict(attention_mask=torch.ones_like(prompt_ids), max_new_tokens=sizes.gen_new_tokens,
                 min_new_tokens=sizes.gen_new_tokens, do_sample=False, pad_token_id=engine.tokenizer.pad_token_id)
    for name, extra in (("plain_generate", {}), ("plain_generate_static_cache", {"cache_implementation": "static"})):
        if extra and (diagnose or time.perf_counter() > deadline):
            results[name] = {"skipped": "diagnose mode or time budget spent"}
            continue
        try:
            # A static cache is sized by max_new_tokens and compiled for it, so warm up at full length.
            warm_tokens = sizes.gen_new_tokens if extra else 8
            engine.model.generate(prompt_ids, **{**plain, "max_new_tokens": warm_tokens,
                                                 "min_new_tokens": warm_tokens}, **extra)
            synchronize(device)
            start = time.perf_counter()
            engine.model.generate(prompt_ids, **plain, **extra)
            synchronize(device)
            seconds = time.perf_counter() - start
            new_tokens = sizes.gen_batch * sizes.gen_new_tokens
            results[name] = {"new_tokens": new_tokens, "new_tokens_per_s": new_tokens / seconds, "seconds": seconds}
        except Exception as err:  # noqa: BLE001 - an optional variant must not lose the figures above
            results[name] = {"error": f"{type(err).__name__}: {err}"[:400]}
    return results
