"""The model shapes and workload sizes the GPU check runs: the paper-scale anchor and the smoke size."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    """Model shape and workload sizes of one check."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    batch: int
    seq_len: int
    warmup_steps: int
    timed_steps: int
    gen_batch: int
    gen_prompt_tokens: int
    gen_new_tokens: int


QWEN25_05B = Sizes(hidden=896, layers=24, heads=14, kv_heads=2, intermediate=4864, vocab=151936,
                   batch=8, seq_len=2048, warmup_steps=3, timed_steps=10,
                   gen_batch=64, gen_prompt_tokens=128, gen_new_tokens=256)


SMOKE = Sizes(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, vocab=512,
              batch=2, seq_len=64, warmup_steps=1, timed_steps=2,
              gen_batch=4, gen_prompt_tokens=48, gen_new_tokens=16)
