"""The tiny reasoning model's architecture: a small Qwen2 causal LM, the family s1.1-32B belongs to."""

from __future__ import annotations

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

# About 0.65M parameters: large enough to learn 3-digit addition with carries, small enough
# to train to that in a few minutes on 2 CPU cores.
TINY_ARCH = dict(
    hidden_size=128,
    intermediate_size=384,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    rope_theta=10000.0,
    tie_word_embeddings=True,
)


def build_tiny_model(tokenizer, seed: int = 0, **overrides) -> Qwen2ForCausalLM:
    """Return a randomly initialised tiny Qwen2 model sized for `tokenizer`'s vocabulary."""
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **{**TINY_ARCH, **overrides},
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model
