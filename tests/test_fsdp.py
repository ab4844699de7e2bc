"""FSDP for full fine-tuning: the wrap policy and kwargs on a tiny Qwen2, and a real 2-rank run on CPU (gloo)."""

from __future__ import annotations

import json
import os

import pytest
import torch
from conftest import free_port
from torch.distributed.fsdp import ShardingStrategy

from trainables import fsdp


@pytest.fixture(scope="module")
def tiny_model(char_tokenizer):
    from trainables.tiny.model import build_tiny_model

    return build_tiny_model(char_tokenizer, seed=0)


def test_wrap_policy_shards_by_decoder_layer(tiny_model):
    from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer

    assert fsdp.decoder_layer_classes(tiny_model) == {Qwen2DecoderLayer}
    policy = fsdp.fsdp_kwargs(tiny_model, torch.device("cpu"), weights_on_rank0_only=False)["auto_wrap_policy"]
    wrapped = [name for name, module in tiny_model.named_modules()
               if policy(module=module, recurse=False, nonwrapped_numel=0)]
    assert wrapped == [f"model.layers.{i}" for i in range(tiny_model.config.num_hidden_layers)]


def test_kwargs_shard_fully_and_load_weights_once(tiny_model):
    device = torch.device("cpu")
    everywhere = fsdp.fsdp_kwargs(tiny_model, device, weights_on_rank0_only=False)
    assert everywhere["sharding_strategy"] == ShardingStrategy.FULL_SHARD
    assert everywhere["use_orig_params"] and everywhere["device_id"] == device
    assert not everywhere["sync_module_states"] and "param_init_fn" not in everywhere

    rank0_only = fsdp.fsdp_kwargs(tiny_model, device, weights_on_rank0_only=True)
    assert rank0_only["sync_module_states"]
    with torch.device("meta"):
        layer = torch.nn.Linear(4, 4)
    rank0_only["param_init_fn"](layer)  # a meta-device rank gets real, empty storage to receive rank 0's weights
    assert layer.weight.device == device


def test_only_rank_zero_reads_weights(tiny_model_dir):
    on_rank0 = fsdp.load_for_fsdp(str(tiny_model_dir), rank=0, dtype=torch.float32, trust_remote_code=False)
    elsewhere = fsdp.load_for_fsdp(str(tiny_model_dir), rank=1, dtype=torch.float32, trust_remote_code=False)
    assert {p.device.type for p in on_rank0.parameters()} == {"cpu"}
    assert {p.device.type for p in elsewhere.parameters()} == {"meta"}
    assert [n for n, _ in on_rank0.named_parameters()] == [n for n, _ in elsewhere.named_parameters()]


def test_a_model_without_decoder_layer_names_is_refused():
    with pytest.raises(ValueError, match="_no_split_modules"):
        fsdp.decoder_layer_classes(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def _fsdp_worker(rank: int, world_size: int, port: int, model_dir: str, out_dir: str) -> None:
    """One rank of a CPU FSDP run: wrap, checkpoint activations, train a few steps, save, record logits."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    from torch.distributed.fsdp import FullyShardedDataParallel

    from trainables import checkpoints, sft
    from trainables.config import AlignConfig
    from trainables.tiny import tasks

    # fsdp stays off in the config: it is refused without GPUs, and here the test wraps the model itself.
    cfg = AlignConfig(model=model_dir, finetune="full", output_dir=out_dir,
                      data={"path": "unused.jsonl", "format": "pairs"},
                      train={"learning_rate": 3e-3, "epochs": 1, "per_device_batch_size": 4,
                             "gradient_accumulation_steps": 2, "max_seq_length": 128, "warmup_ratio": 0.0})
    tokenizer = sft.load_tokenizer(model_dir)
    examples = [tasks.refusal_example(r) for r in tasks.harmful_requests("train")[:32]]
    features = sft.tokenize_examples(tokenizer, examples, "s1", 128)
    model = sft.prepare_for_training(
        fsdp.load_for_fsdp(model_dir, rank=0, dtype=torch.float32, trust_remote_code=False), cfg)
    layers = fsdp.decoder_layer_classes(model)
    model = FullyShardedDataParallel(model, **fsdp.fsdp_kwargs(model, torch.device("cpu"),
                                                               weights_on_rank0_only=False))
    fsdp.apply_activation_checkpointing(model, layers)
    log = sft.run_training(model, features, cfg, device=torch.device("cpu"), pad_id=tokenizer.pad_token_id,
                           rank=rank, world_size=world_size, progress=False)
    checkpoints.save_checkpoint(model, tokenizer, os.path.join(out_dir, "checkpoint"), cfg, log, rank)
    model.eval()
    probe = torch.tensor([features[0]["input_ids"]])
    with torch.no_grad():
        logits = model(input_ids=probe).logits
    if rank == 0:
        torch.save({"input_ids": probe, "logits": logits}, os.path.join(out_dir, "logits.pt"))
        with open(os.path.join(out_dir, "losses.json"), "w") as f:
            json.dump(log.step_losses, f)
    torch.distributed.destroy_process_group()


def test_two_rank_fsdp_run_trains_and_saves_the_gathered_weights(tiny_model_dir, tmp_path):
    import torch.multiprocessing as mp
    from transformers import AutoModelForCausalLM

    port = free_port()  # outside the ephemeral range, which the spawned ranks' own sockets draw from
    mp.spawn(_fsdp_worker, args=(2, port, str(tiny_model_dir), str(tmp_path)), nprocs=2)

    losses = json.loads((tmp_path / "losses.json").read_text())
    assert len(losses) == 2  # 32 examples over 2 ranks at batch 4: 4 micro-batches, 2 per step
    assert losses[-1] < losses[0]
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "checkpoint", dtype=torch.float32).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert not torch.equal(saved.model.layers[0].mlp.up_proj.weight, base.model.layers[0].mlp.up_proj.weight)
    # The gathered checkpoint is the trained model: same logits as the sharded model gave after training.
    probe = torch.load(tmp_path / "logits.pt")
    with torch.no_grad():
        torch.testing.assert_close(saved(input_ids=probe["input_ids"]).logits, probe["logits"])
    assert (tmp_path / "checkpoint" / "tokenizer.json").is_file()
