"""Which torch dtype a run's weights use: the names a config may give, and what `auto` means on each device."""

from __future__ import annotations

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_NAMES = ("auto", *DTYPES)


def resolve_dtype(name: str, device: str) -> torch.dtype:
    """Return the torch dtype for a config name. `auto` is bf16 on GPUs, which halves a model's memory there,
    and float32 elsewhere: CPUs have no fast bf16 matmul path to rely on, and float32 reads exactly."""
    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if name not in DTYPES:
        raise ValueError(f"dtype {name!r} is not one of {', '.join(DTYPE_NAMES)}")
    return DTYPES[name]
