"""FSDP for full fine-tuning on GPUs: one shard unit per decoder layer, and loading that fits in host RAM.

A 32B model in bf16 is 64 GB; loading it once per GPU would need 8x that in host memory. Rank 0 loads
the weights, the other ranks build the model on the meta device, and FSDP broadcasts rank 0's shards.
"""

from __future__ import annotations

import functools

import torch
from torch.distributed.fsdp import (
    BackwardPrefetch,
    FullStateDictConfig,
    FullyShardedDataParallel,
    ShardingStrategy,
    StateDictType,
)
from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy


def decoder_layer_classes(model: torch.nn.Module) -> set[type[torch.nn.Module]]:
    """Return the model's decoder-layer classes (from `_no_split_modules`), the units FSDP shards by."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    classes = {type(module) for module in model.modules() if type(module).__name__ in names}
    if not classes:
        raise ValueError(f"{type(model).__name__} names no decoder-layer class in _no_split_modules, so FSDP "
                         "cannot tell where to shard; train it without train.fsdp")
    return classes


def fsdp_kwargs(model: torch.nn.Module, device: torch.device, *, weights_on_rank0_only: bool) -> dict:
    """Return FullyShardedDataParallel keyword arguments: FULL_SHARD, wrapped per decoder layer.

    With `weights_on_rank0_only`, ranks holding meta tensors materialise empty storage and receive
    rank 0's weights through `sync_module_states`.
    """
    policy = functools.partial(transformer_auto_wrap_policy, transformer_layer_cls=decoder_layer_classes(model))
    kwargs = dict(
        sharding_strategy=ShardingStrategy.FULL_SHARD,
        auto_wrap_policy=policy,
        backward_prefetch=BackwardPrefetch.BACKWARD_PRE,
        device_id=device,
        limit_all_gathers=True,
        # Original parameters keep their names, so the optimiser can skip weight decay on norms.
        use_orig_params=True,
        sync_module_states=weights_on_rank0_only,
    )
    if weights_on_rank0_only:
        kwargs["param_init_fn"] = lambda module: module.to_empty(device=device, recurse=False)
    return kwargs


def load_for_fsdp(model_path: str, *, rank: int, dtype: torch.dtype, trust_remote_code: bool) -> torch.nn.Module:
    """Return the model with real weights on rank 0 (in host RAM) and on the meta device elsewhere."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if rank == 0:
        return AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype, trust_remote_code=trust_remote_code)
    config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=trust_remote_code)


def apply_activation_checkpointing(model: torch.nn.Module, layer_classes: set[type[torch.nn.Module]]) -> None:
    """Wrap every decoder layer of an FSDP model so its activations are recomputed in the backward pass."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
        CheckpointImpl,
        apply_activation_checkpointing as wrap_layers,
        checkpoint_wrapper,
    )

    wrap_layers(model, checkpoint_wrapper_fn=functools.partial(checkpoint_wrapper,
                                                               checkpoint_impl=CheckpointImpl.NO_REENTRANT),
                check_fn=lambda module: isinstance(module, tuple(layer_classes)))


def full_state_dict(model: FullyShardedDataParallel) -> dict[str, torch.Tensor]:
    """Return the unsharded state dict on rank 0 (in host RAM) and an empty one elsewhere; call on every rank."""
    # Offloading GPU shards keeps a 32B model out of GPU memory; on CPU it is a no-op that crashes gloo.
    on_gpu = next(model.parameters()).device.type == "cuda"
    config = FullStateDictConfig(offload_to_cpu=on_gpu, rank0_only=True)
    with FullyShardedDataParallel.state_dict_type(model, StateDictType.FULL_STATE_DICT, config):
        return model.state_dict()
