"""GPU check: throughput and memory of the alignment loop and of the transformers generation backend.

Drives the project's own code without Ray, on a Qwen2.5-0.5B-shaped model with random weights:
  - `trainables.sft.run_training` in bf16: full fine-tuning, and LoRA r=16 on all linear layers with
    gradient checkpointing, at batch 8 x 2,048 tokens; a plain transformers loop runs beside it as the reference;
  - `evaluators.transformers_backend.TransformersEngine.generate` at batch 64, 128 prompt tokens and 256 new
    tokens, against plain `model.generate` on the same weights.

    python -m bench.gpu_check --out results/      # on a GPU (about 4 minutes on an H200)
    python -m bench.gpu_check --smoke             # tiny shapes on CPU: checks the script end to end

Prints a table last and writes every figure to OUT/gpu_check.json. Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import platform
import tempfile
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import torch

from bench.gpu_generate import measure_generation, synchronize
from bench.gpu_sizes import QWEN25_05B, SMOKE, Sizes

PEAK_BF16_FLOPS = 989e12  # H100/H200 SXM dense bf16, the vendor's datasheet figure the baseline used


def padded_char_tokenizer(vocab_size: int):
    """Return the tiny character tokenizer with filler tokens up to `vocab_size`, so every id the model emits decodes.

    The filler tokens are never produced by encoding (no merges lead to them); they only give a
    random-weight model's outputs a text, as a real vocabulary would.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from trainables.tiny.tokenizer import CHARACTERS, CHAT_TEMPLATE, SPECIAL_TOKENS

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + CHARACTERS)}
    vocab.update({f"\u00a7{i}\u00a7": i for i in range(len(vocab), vocab_size)})
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        unk_token="<unk>", additional_special_tokens=["<|im_start|>"],
                                        padding_side="left")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model_dir(sizes: Sizes, directory: Path, device: torch.device) -> int:
    """Return the parameter count of a random-weight Qwen2 model saved with its tokenizer in `directory`."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = padded_char_tokenizer(sizes.vocab)
    config = Qwen2Config(
        vocab_size=sizes.vocab, hidden_size=sizes.hidden, num_hidden_layers=sizes.layers,
        num_attention_heads=sizes.heads, num_key_value_heads=sizes.kv_heads, intermediate_size=sizes.intermediate,
        max_position_embeddings=32768, tie_word_embeddings=True,  # Qwen2.5-0.5B ties its embeddings
        bos_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    with torch.device(device):  # initialising 0.5B weights on the GPU takes a fraction of a second
        model = Qwen2ForCausalLM(config).to(torch.bfloat16 if device.type == "cuda" else torch.float32)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    params = sum(p.numel() for p in model.parameters())
    del model
    return params


def random_features(sizes: Sizes, count: int) -> list[dict[str, list[int]]]:
    """Return `count` full-length examples of random tokens, every token a training target (no padding)."""
    generator = torch.Generator().manual_seed(0)
    rows = torch.randint(0, sizes.vocab, (count, sizes.seq_len), generator=generator).tolist()
    return [{"input_ids": row, "labels": list(row)} for row in rows]


def align_config(model_dir: Path, finetune: str, gradient_checkpointing: bool, sizes: Sizes, use_gpu: bool):
    """Return the AlignConfig of one measured run (the data source is required by the schema but unused here)."""
    from trainables.config import AlignConfig

    return AlignConfig(
        model=str(model_dir), finetune=finetune,
        data={"path": "tiny://directrefusal.jsonl", "format": "directrefusal"},
        lora={"r": 16, "alpha": 32, "target_modules": "all-linear"},
        train={"learning_rate": 1e-5, "epochs": 1, "per_device_batch_size": sizes.batch,
               "max_seq_length": sizes.seq_len, "warmup_ratio": 0.0,
               "max_steps": sizes.warmup_steps + sizes.timed_steps,
               "gradient_checkpointing": gradient_checkpointing},
        scaling={"use_gpu": use_gpu},
    )


def flops_per_token(params: int, sizes: Sizes, finetune: str) -> float:
    """Return model FLOPs per trained token: 6N for full, 4N for LoRA (no weight gradients), plus attention.

    Attention scores add 12 * layers * hidden * seq_len per token (PaLM's count, as if not causal);
    recomputation under gradient checkpointing is not counted, so MFU stays comparable across runs.
    """
    matmul = (6 if finetune == "full" else 4) * params
    return matmul + 12 * sizes.layers * sizes.hidden * sizes.seq_len


def fused_adamw(original):
    """Return `build_optimizer` with the same parameter groups but AdamW's fused CUDA kernel."""
    def build(model, cfg):
        groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in original(model, cfg).param_groups]
        return torch.optim.AdamW(groups, lr=cfg.train.learning_rate,
                                 betas=(cfg.train.adam_beta1, cfg.train.adam_beta2), fused=True)
    return build


def measure_project_loop(model_dir: Path, cfg, features, sizes: Sizes, device: torch.device, *,
                         fused: bool = False, compile_model: bool = False, autocast: bool = True) -> dict:
    """Return tokens/s and peak memory of `trainables.sft.run_training` after its warm-up steps.

    `fused` swaps in fused AdamW and `autocast=False` turns the loop's autocast into a no-op (the weights
    are bf16 already): ablations that tell which part of the loop costs what.
    """
    from trainables import sft

    tokenizer = sft.load_tokenizer(str(model_dir))
    model = sft.load_model(str(model_dir), cfg, device)
    if compile_model:
        model = torch.compile(model)
    step_ends: list[float] = []
    original, original_autocast = sft.build_optimizer, torch.autocast
    if fused:
        sft.build_optimizer = fused_adamw(original)
    if not autocast:
        torch.autocast = lambda *args, **kwargs: contextlib.nullcontext()
    try:
        # on_step runs once a step's totals are read back (one step late on a GPU: the loop's only host sync),
        # so these are device-complete times of each step; their differences are the steps' durations.
        log = sft.run_training(model, features, cfg, device=device, pad_id=tokenizer.pad_token_id, progress=False,
                               on_step=lambda metrics: step_ends.append(time.perf_counter()))
    finally:
        sft.build_optimizer, torch.autocast = original, original_autocast
    attention = getattr(model.config, "_attn_implementation", None)
    del model
    seconds = step_ends[-1] - step_ends[sizes.warmup_steps - 1]
    return {"tokens_per_s": sizes.timed_steps * sizes.batch * sizes.seq_len / seconds,
            "last_loss": log.step_losses[-1], "attention": attention}


def measure_plain_loop(model_dir: Path, finetune: str, gradient_checkpointing: bool, features, sizes: Sizes,
                       device: torch.device) -> dict:
    """Return tokens/s of a plain transformers loop (forward, backward, AdamW) on the same model and batches."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype).to(device)
    model.config.use_cache = False
    if gradient_checkpointing:
        model.gradient_checkpointing_enable({"use_reentrant": False})
    if finetune == "lora":
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                                                 target_modules="all-linear", task_type="CAUSAL_LM"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    ids = torch.tensor([f["input_ids"] for f in features])
    model.train()
    start = None
    for step, batch in enumerate(ids.split(sizes.batch)):
        if step == sizes.warmup_steps:
            synchronize(device)
            start = time.perf_counter()
        batch = batch.to(device)
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    synchronize(device)
    seconds = time.perf_counter() - start
    del model, optimizer
    return {"tokens_per_s": sizes.timed_steps * sizes.batch * sizes.seq_len / seconds}


def run_variant(name: str, measure, device: torch.device, flops: float | None, results: dict) -> None:
    """Record one training variant's figures (or its error) in `results[name]`, with peak memory and MFU."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        figures = measure()
        if device.type == "cuda":
            figures["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
            figures["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
        if flops:
            figures["mfu"] = figures["tokens_per_s"] * flops / PEAK_BF16_FLOPS
        results[name] = figures
    except Exception as err:  # noqa: BLE001 - one failed variant must not lose the others' figures
        traceback.print_exc()
        results[name] = {"error": f"{type(err).__name__}: {err}"[:400]}
    print(f"{name}: {json.dumps(results[name])}", flush=True)


def main(argv: list[str] | None = None) -> dict:
    """Return every figure of the check; also printed as a table and written to OUT/gpu_check.json."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes and sizes, for a CPU run of the script")
    parser.add_argument("--out", type=Path, default=None, help="folder for gpu_check.json (default: none written)")
    parser.add_argument("--optional-budget-s", type=float, default=200.0,
                        help="seconds after which optional variants (torch.compile, static cache) are skipped")
    parser.add_argument("--diagnose", action="store_true",
                        help="ablations instead of the main table: the full fine-tuning loop without clipping, "
                             "without autocast, with fused AdamW; the engine without stop strings")
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else QWEN25_05B
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    started = time.perf_counter()
    deadline = started + args.optional_budget_s
    results: dict = {"sizes": asdict(sizes), "torch": torch.__version__, "python": platform.python_version(),
                     "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu"}
    import transformers

    results["transformers"] = transformers.__version__

    def write() -> None:
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "gpu_check.json").write_text(json.dumps(results, indent=1))

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "qwen2-random"
        params = build_model_dir(sizes, model_dir, device)
        results["params"] = params
        features = random_features(sizes, sizes.batch * (sizes.warmup_steps + sizes.timed_steps))
        use_gpu = device.type == "cuda"
        full_cfg = align_config(model_dir, "full", False, sizes, use_gpu)
        lora_cfg = align_config(model_dir, "lora", True, sizes, use_gpu)
        full_flops, lora_flops = flops_per_token(params, sizes, "full"), flops_per_token(params, sizes, "lora")
        def project(cfg, **ablation):
            return lambda: measure_project_loop(model_dir, cfg, features, sizes, device, **ablation)

        if args.diagnose:  # which part of the project loop costs what, against the plain loop
            no_clip_cfg = full_cfg.model_copy(update={"train": full_cfg.train.model_copy(update={"max_grad_norm": None})})
            variants = [
                ("full/project_loop", project(full_cfg), full_flops),
                ("full/project_loop-clipping", project(no_clip_cfg), full_flops),
                ("full/project_loop-autocast", project(full_cfg, autocast=False), full_flops),
                ("full/project_loop-clipping-autocast+fused_adamw",
                 project(no_clip_cfg, autocast=False, fused=use_gpu), full_flops),
                ("full/plain_loop", lambda: measure_plain_loop(model_dir, "full", False, features, sizes, device),
                 full_flops),
            ]
        else:
            variants = [
                ("full/plain_loop", lambda: measure_plain_loop(model_dir, "full", False, features, sizes, device),
                 full_flops),
                ("full/project_loop", project(full_cfg), full_flops),
                ("full/project_loop+fused_adamw", project(full_cfg, fused=use_gpu), full_flops),
                ("lora_gc/plain_loop", lambda: measure_plain_loop(model_dir, "lora", True, features, sizes, device),
                 lora_flops),
                ("lora_gc/project_loop", project(lora_cfg), lora_flops),
            ]
        for name, measure, flops in variants:
            run_variant(name, measure, device, flops, results)
            write()
        gc.collect()
        if use_gpu:
            torch.cuda.empty_cache()
        try:
            results["generation"] = measure_generation(model_dir, sizes, device, deadline, args.diagnose)
        except Exception as err:  # noqa: BLE001
            traceback.print_exc()
            results["generation"] = {"error": f"{type(err).__name__}: {err}"[:400]}
        print(f"generation: {json.dumps(results['generation'])}", flush=True)
        write()
        # Optional and last: compilation can take a minute and must not cost the figures above.
        if use_gpu and not args.diagnose and time.perf_counter() < deadline:
            run_variant("full/project_loop+fused_adamw+compile",
                        lambda: measure_project_loop(model_dir, full_cfg, features, sizes, device, fused=True,
                                                     compile_model=True), device, full_flops, results)
    results["seconds"] = time.perf_counter() - started
    write()
    print_table(results)
    return results


def print_table(results: dict) -> None:
    """Print the figures as a Markdown table, the form docs/benchmarks.md takes."""
    print(f"\ndevice: {results['device']}  torch {results['torch']}  transformers {results['transformers']}  "
          f"params {results['params'] / 1e6:.1f}M")
    print("| run | tokens/s | MFU | peak allocated | peak reserved |\n|---|---|---|---|---|")
    for name, figures in results.items():
        if not isinstance(figures, dict) or "/" not in name:
            continue
        if "error" in figures:
            print(f"| {name} | error: {figures['error'][:80]} | | | |")
            continue
        mfu = f"{figures['mfu']:.1%}" if "mfu" in figures else "-"
        memory = [f"{figures[k]:.1f} GiB" if k in figures else "-" for k in ("peak_allocated_gib", "peak_reserved_gib")]
        print(f"| {name} | {figures['tokens_per_s'] / 1e3:.1f}k | {mfu} | {memory[0]} | {memory[1]} |")
    generation = results.get("generation", {})
    print("\n| generation | new tokens/s | new tokens | seconds |\n|---|---|---|---|")
    for name in ("engine", "engine_without_stop_strings", "plain_generate", "plain_generate_static_cache"):
        figures = generation.get(name, {})
        if "new_tokens_per_s" in figures:
            print(f"| {name} | {figures['new_tokens_per_s']:.0f} | {figures['new_tokens']} | {figures['seconds']:.1f} |")
        else:
            print(f"| {name} | {figures or generation.get('error') or 'not run'} | | |")


if __name__ == "__main__":
    main()
