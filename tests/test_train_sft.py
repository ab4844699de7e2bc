"""The SFT loop without Ray: the assistant-only loss mask, batching, LoRA and full fine-tuning, checkpoints."""

from __future__ import annotations

import pytest
import torch

from trainables.config import AlignConfig
from trainables.formats import IGNORE_INDEX, Example
from trainables.schema import ConfigError
from trainables.checkpoints import read_training_log
from trainables.sft import (
    build_optimizer,
    collate,
    load_model,
    run_training,
    steps_per_epoch,
    tokenize_examples,
    train_in_process,
)
from trainables.tiny import tasks

EXAMPLE = Example("Is 2+2 4?", "2+2=4", "Answer: yes")
EXPECTED_COMPLETION = {
    "s1": "<|im_start|>think\n2+2=4<|im_start|>answer\nAnswer: yes<|im_end|>",
    "r1": "<think>\n2+2=4\n</think>\n\nAnswer: yes<|im_end|>",
}


def tiny_config(model_dir, tmp_path, **fields) -> AlignConfig:
    """An AlignConfig for the tiny random model; the data section is unused by in-process runs."""
    data_file = tmp_path / "unused.jsonl"
    data_file.write_text('{"prompt": "p", "response": "r"}\n')
    base = dict(model=str(model_dir), output_dir=tmp_path / "runs",
                data={"path": str(data_file), "format": "pairs"},
                train={"learning_rate": 5e-3, "epochs": 3, "per_device_batch_size": 8, "max_seq_length": 256,
                       "warmup_ratio": 0.0})
    return AlignConfig(**{**base, **fields})


def refusal_features(tokenizer, n: int = 24):
    examples = [tasks.refusal_example(r) for r in tasks.harmful_requests("train")[:n]]
    return tokenize_examples(tokenizer, examples, "s1", 256)


@pytest.mark.parametrize("reasoning_format", ["s1", "r1"])
def test_loss_mask_covers_exactly_the_prompt_and_padding(char_tokenizer, reasoning_format):
    longer = Example("A much longer prompt than the first one?", "think", "Answer: no")
    features = tokenize_examples(char_tokenizer, [EXAMPLE, longer], reasoning_format, 256)
    batch = collate(features, pad_id=char_tokenizer.pad_token_id)
    ids, labels, attention = batch["input_ids"][0], batch["labels"][0], batch["attention_mask"][0]
    real = int(attention.sum())
    masked = [i for i in range(len(labels)) if labels[i] == IGNORE_INDEX]
    prompt = "<|im_start|>user\nIs 2+2 4?<|im_end|>\n<|im_start|>assistant\n"

    # The masked positions are the prompt (a prefix) and the right padding, nothing else.
    prompt_length = len(char_tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert masked == list(range(prompt_length)) + list(range(real, len(labels)))
    assert char_tokenizer.decode(ids[:prompt_length]) == prompt
    assert char_tokenizer.decode(labels[prompt_length:real]) == EXPECTED_COMPLETION[reasoning_format]
    assert torch.equal(labels[prompt_length:real], ids[prompt_length:real])
    assert set(ids[real:].tolist()) == {char_tokenizer.pad_token_id}
    assert attention[:real].all() and not attention[real:].any()


def test_examples_cut_before_their_reply_are_dropped_and_all_cut_is_an_error(char_tokenizer):
    short = Example("hi", "t", "Answer: a")
    long = Example("x" * 200, "t", "Answer: a")
    kept = tokenize_examples(char_tokenizer, [short, long], "s1", 64)
    assert len(kept) == 1 and len(kept[0]["input_ids"]) <= 64
    with pytest.raises(ConfigError, match="train.max_seq_length=16"):
        tokenize_examples(char_tokenizer, [long], "s1", 16)


def test_steps_per_epoch_counts_each_workers_shard(tiny_model_dir, tmp_path):
    cfg = tiny_config(tiny_model_dir, tmp_path, train={"per_device_batch_size": 4, "gradient_accumulation_steps": 2})
    assert steps_per_epoch(48, 1, cfg) == 6  # 12 batches, 2 per step
    assert steps_per_epoch(48, 2, cfg) == 3  # each worker: 24 examples, 6 batches
    assert steps_per_epoch(49, 2, cfg) == 4  # 25 per worker (the sampler pads): 7 batches


def test_weight_decay_skips_biases_and_norms(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    cfg = tiny_config(tiny_model_dir, tmp_path, finetune="full", train={"weight_decay": 0.1})
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    decayed, plain = build_optimizer(model, cfg).param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all("norm" in names[id(p)] or names[id(p)].endswith("bias") for p in plain["params"])
    assert any(names[id(p)].endswith("q_proj.weight") for p in decayed["params"])


def test_lora_checkpoint_loads_through_peft_with_the_trained_logits(tiny_model_dir, tmp_path, char_tokenizer):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = tiny_config(tiny_model_dir, tmp_path, finetune="lora", lora={"r": 4, "dropout": 0.1})
    model, log = train_in_process(cfg, refusal_features(char_tokenizer), str(tiny_model_dir),
                                  checkpoint_dir=tmp_path / "adapter", progress=False)
    assert log.epoch_metrics[-1]["epoch_loss"] < log.epoch_metrics[0]["epoch_loss"]

    ids = char_tokenizer("How do I build a zip gun?", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        trained_logits = model.eval()(ids).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        base_logits = base(ids).logits
        reloaded_logits = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()(ids).logits
    torch.testing.assert_close(reloaded_logits, trained_logits)
    assert (trained_logits - base_logits).abs().max() > 1e-2
    assert read_training_log(tmp_path / "adapter").step_losses == log.step_losses


def test_full_finetune_changes_every_layer_and_saves_a_loadable_model(tiny_model_dir, tmp_path, char_tokenizer):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = tiny_config(tiny_model_dir, tmp_path, finetune="full",
                      train={"learning_rate": 2e-3, "epochs": 2, "per_device_batch_size": 4,
                             "gradient_accumulation_steps": 2, "gradient_checkpointing": True, "max_steps": 5})
    model, log = train_in_process(cfg, refusal_features(char_tokenizer), str(tiny_model_dir),
                                  checkpoint_dir=tmp_path / "full", progress=False)
    assert len(log.step_losses) == 5  # max_steps stops the second epoch early
    assert log.step_losses[-1] < log.step_losses[0]

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "full", dtype=torch.float32)
    base_weights, saved_weights = base.state_dict(), saved.state_dict()
    for layer in range(base.config.num_hidden_layers):
        key = f"model.layers.{layer}.mlp.down_proj.weight"
        assert not torch.equal(base_weights[key], saved_weights[key]), key
    for key, value in model.state_dict().items():
        torch.testing.assert_close(saved_weights[key], value, msg=key)
    assert AutoTokenizer.from_pretrained(tmp_path / "full").chat_template == char_tokenizer.chat_template


@pytest.mark.parametrize("interval, step_calls, epoch_calls", [
    (0.0, [[1], [2], [3], [4], [5], [6]], [(False, []), (True, [])]),  # every step reported at once
    (1e9, [], [(False, [1, 2, 3]), (True, [4, 5, 6])]),  # nothing due: each epoch's report carries its steps
])
def test_step_reports_are_batched_by_interval_and_flushed_at_epoch_end(tiny_model_dir, tmp_path, char_tokenizer,
                                                                       interval, step_calls, epoch_calls):
    cfg = tiny_config(tiny_model_dir, tmp_path, finetune="lora", train={"epochs": 2, "per_device_batch_size": 8})
    model = load_model(str(tiny_model_dir), cfg, torch.device("cpu"))
    step_reports, epoch_reports = [], []
    log = run_training(model, refusal_features(char_tokenizer), cfg, device=torch.device("cpu"),
                       pad_id=char_tokenizer.pad_token_id, progress=False, report_interval_s=interval,
                       on_step=lambda steps: step_reports.append([s["step"] for s in steps]),
                       on_epoch_end=lambda log, last, steps: epoch_reports.append((last, [s["step"] for s in steps])))
    # 24 examples at batch 8: 3 steps per epoch; each step reaches exactly one callback.
    assert step_reports == step_calls
    assert epoch_reports == epoch_calls
    assert len(log.step_losses) == 6
