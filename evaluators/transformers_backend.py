"""The transformers generator: one base model in a Serve deployment, serving many LoRA adapters.

`TransformersEngine` holds the weights and generates a list of OpenAI-style completion requests;
`TransformersGenerator` is the Serve deployment around it, which batches requests with `@serve.batch`;
`build_app` and `make_sender` are the backend's interface (see `evaluators.backends`): requests go
through the deployment's handle.
Adapters are loaded into the one base model with peft (`load_adapter` + `set_adapter`), so a sweep's
hundreds of adapters never reload the base weights. A full-weights checkpoint gets its own deployment.
"""

from __future__ import annotations

import asyncio
import os
from collections import OrderedDict
from contextlib import nullcontext
from pathlib import Path

import torch
from ray import serve
from transformers import AutoModelForCausalLM, AutoTokenizer, StoppingCriteria, StoppingCriteriaList

from evaluators.config import EvalConfig
from evaluators.dispatch import HandleCall
from evaluators.generation import END_OF_TURN, Completion, completion_response
from trainables.dtypes import resolve_dtype
from trainables.schema import ConfigError

REQUEST_KEYS = {"model", "prompt", "max_tokens", "temperature", "top_p", "stop", "seed"}
LOADS_FROM_CLOUD = False  # peft loads local folders; a bucket checkpoint must be downloaded first


def for_this_machine(cfg: EvalConfig) -> tuple[EvalConfig, None]:
    """Return `cfg` unchanged: the transformers backend runs wherever torch does."""
    return cfg, None


def build_app(cfg: EvalConfig, source: str):
    """Return the Serve application generating with the model folder (or hub id) `source`."""
    return TransformersGenerator.options(
        num_replicas=cfg.num_replicas,
        ray_actor_options={"num_cpus": cfg.num_cpus_per_replica, "num_gpus": cfg.num_gpus_per_replica,
                           "resources": cfg.resources_per_replica},
        # One batch generating, the next filling, and room for stats and health calls.
        max_ongoing_requests=2 * cfg.max_batch_size + 4,
        max_constructor_retry_count=2,
        logging_config={"enable_access_log": False},  # a line per request drowns a benchmark's output
    ).bind(source, cfg.dtype, cfg.trust_remote_code, cfg.max_adapters_per_replica, cfg.max_batch_size,
           cfg.batch_wait_timeout_s)


def make_sender(cfg: EvalConfig, app_name: str, source: str, adapter: str | None):
    """Return send(request) -> a pending call on the app's deployment handle (the request names the adapter)."""
    handle = serve.get_app_handle(app_name)
    return lambda request: HandleCall(handle.completions.remote(request))


def check_adapter(adapter: str) -> str:
    """Return a peft adapter folder's absolute path, or raise ConfigError naming what is missing."""
    path = Path(adapter).expanduser()
    if not (path / "adapter_config.json").is_file():
        raise ConfigError(f"adapter {adapter}: no adapter_config.json there; give the folder a LoRA run saved "
                          "(peft save_pretrained)")
    return str(path.resolve())


def check_request(body: dict) -> None:
    """Raise ValueError naming the field when a completion request is malformed."""
    unknown = set(body) - REQUEST_KEYS
    if unknown:
        raise ValueError(f"unknown completion request fields {sorted(unknown)}; known: {sorted(REQUEST_KEYS)}")
    if not isinstance(body.get("prompt"), str):
        raise ValueError("completion request needs a string `prompt`")
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        raise ValueError("completion request needs `max_tokens` >= 1")


class TransformersEngine:
    """A base causal LM with LoRA adapters loaded on demand; generates batches of completion requests."""

    def __init__(self, model_path: str, dtype: str = "auto", trust_remote_code: bool = False, max_adapters: int = 8):
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        self.tokenizer.padding_side = "left"  # replies continue from the prompt's last token in every row
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=resolve_dtype(dtype, self.device), trust_remote_code=trust_remote_code
        )
        self.model = model.to(self.device).eval()
        self.model_path = model_path
        self.max_adapters = max_adapters
        self.adapters: OrderedDict[tuple[str, int], str] = OrderedDict()  # (path, weights mtime) -> peft name
        self.base_loads = 1
        self.adapter_loads = 0
        self.stop_token_ids = self._stop_token_ids()
        self._pieces: list[str] | None = None

    def _stop_token_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id
        ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
        for token in (self.tokenizer.eos_token, END_OF_TURN):
            token_id = self.tokenizer.convert_tokens_to_ids(token) if token else None
            if token_id is not None and token_id != self.tokenizer.unk_token_id and token_id not in ids:
                ids.append(token_id)
        return ids

    def token_pieces(self) -> list[str]:
        """Return each token id's text on its own (computed once; stop-string checks read it every step)."""
        if self._pieces is None:
            ids = [[i] for i in range(len(self.tokenizer))]
            self._pieces = self.tokenizer.batch_decode(ids, skip_special_tokens=False,
                                                       clean_up_tokenization_spaces=False)
        return self._pieces

    def stats(self) -> dict:
        """Return load counters and the loaded adapters' paths."""
        return {
            "base_loads": self.base_loads,
            "adapter_loads": self.adapter_loads,
            "loaded_adapters": [path for path, _ in self.adapters],
            "device": self.device,
        }

    def _activate(self, adapter: str | None):
        """Return a context in which the model runs with `adapter` (a peft folder) or with no adapter."""
        if adapter is None:
            return self.model.disable_adapter() if self.adapters else nullcontext()
        from peft import PeftModel

        path = str(Path(adapter).resolve())
        weights = [p for p in Path(path).glob("adapter_model.*")]
        if not (Path(path) / "adapter_config.json").is_file() or not weights:
            raise ValueError(f"adapter {adapter} is not a peft adapter folder (adapter_config.json + adapter_model.*)")
        # The weights' mtime is in the key, so an adapter rewritten in place is loaded afresh.
        key = (path, max(p.stat().st_mtime_ns for p in weights))
        if key in self.adapters:
            self.adapters.move_to_end(key)
        else:
            name = f"adapter{self.adapter_loads}"
            if not isinstance(self.model, PeftModel):
                self.model = PeftModel.from_pretrained(self.model, path, adapter_name=name).eval()
            else:
                self.model.load_adapter(path, adapter_name=name)
            self.adapter_loads += 1
            self.adapters[key] = name
            if len(self.adapters) > self.max_adapters:
                _, evicted = self.adapters.popitem(last=False)
                self.model.delete_adapter(evicted)
        self.model.set_adapter(self.adapters[key])
        return nullcontext()

    @torch.inference_mode()
    def generate(self, requests: list[dict]) -> list[dict | Exception]:
        """Return one OpenAI-style response per request (or the error of its group), in order.

        Requests that share an adapter and sampling settings are generated together; a group's
        error is returned in place of its responses so it does not fail the other groups.
        """
        groups: dict[tuple, list[int]] = {}
        for i, body in enumerate(requests):
            key = (body.get("model"), float(body.get("temperature") or 0.0), float(body.get("top_p") or 1.0),
                   body.get("seed"), tuple(body.get("stop") or ()))
            groups.setdefault(key, []).append(i)
        results: list[dict | Exception] = [None] * len(requests)
        for (adapter, temperature, top_p, seed, stop), indices in groups.items():
            try:
                with self._activate(adapter):
                    completions = self._generate_group(
                        [requests[i] for i in indices], temperature, top_p, seed, list(stop)
                    )
                for i, completion in zip(indices, completions):
                    results[i] = completion
            except Exception as err:  # noqa: BLE001 - returned to the requests of this group only
                for i in indices:
                    results[i] = err
        return results

    def _generate_group(self, bodies: list[dict], temperature: float, top_p: float, seed, stop: list[str]):
        max_tokens = max(body["max_tokens"] for body in bodies)
        enc = self.tokenizer([b["prompt"] for b in bodies], return_tensors="pt", padding=True,
                             add_special_tokens=False).to(self.device)
        options = dict(max_new_tokens=max_tokens, pad_token_id=self.tokenizer.pad_token_id,
                       eos_token_id=self.stop_token_ids)
        if temperature > 0:
            options.update(do_sample=True, temperature=temperature, top_p=top_p)
            torch.manual_seed(0 if seed is None else seed)
        else:
            options.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        prompt_width = enc["input_ids"].shape[1]
        if stop:
            criterion = StopOnText(self.tokenizer, stop, prompt_width, self.token_pieces())
            options["stopping_criteria"] = StoppingCriteriaList([criterion])
        output = self.model.generate(**enc, **options)
        responses = []
        for row, body in zip(output[:, prompt_width:].tolist(), bodies):
            completion = self._completion(row[: body["max_tokens"]], stop)
            responses.append(completion_response(body.get("model"), completion, prompt_tokens=0))
        return responses

    def _completion(self, ids: list[int], stop: list[str]) -> Completion:
        """Return the completion for one row of generated ids: cut at EOS or at the first stop string."""
        ended = next((i for i, token in enumerate(ids) if token in self.stop_token_ids), None)
        kept = ids if ended is None else ids[:ended]
        text = self.tokenizer.decode(kept, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        hits = [(text.find(s), s) for s in stop if s in text]
        if hits:
            at, matched = min(hits)
            text = text[:at]
            tokens = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            return Completion(text, "stop", matched, tokens)
        if ended is not None:
            return Completion(text, "stop", None, ended + 1)
        return Completion(text, "length", None, len(kept))


class StopOnText(StoppingCriteria):
    """Stops each row once its generated text (never the prompt) contains a stop string.

    Each row keeps a short tail of text built from per-token pieces, so a step costs a few string
    operations instead of decoding the whole batch (decoding every row every step made GPU
    generation 4x slower). A match in the tail is confirmed by decoding that row, so a piece that
    reads differently in context can delay a stop but never invent one; the reply itself is always
    cut from the full decode. transformers' `stop_strings` is not used: it reads token strings from
    the vocabulary and misread the tiny model's tokenizer.
    """

    def __init__(self, tokenizer, stop: list[str], prompt_width: int, pieces: list[str]):
        self.tokenizer, self.stop, self.prompt_width, self.pieces = tokenizer, stop, prompt_width, pieces
        self.longest = max(len(s) for s in stop)
        self.tails: list[str] = []
        self.stopped: list[bool] = []

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        last = input_ids[:, -1].tolist()
        if not self.tails:
            self.tails, self.stopped = [""] * len(last), [False] * len(last)
        for row, token in enumerate(last):
            piece = self.pieces[token] if token < len(self.pieces) else ""
            self.tails[row] = (self.tails[row] + piece)[-(self.longest + len(piece)):]
            if not self.stopped[row] and any(s in self.tails[row] for s in self.stop):
                text = self.tokenizer.decode(input_ids[row, self.prompt_width:], skip_special_tokens=False)
                self.stopped[row] = any(s in text for s in self.stop)
        return torch.tensor(self.stopped, dtype=torch.bool, device=input_ids.device)


@serve.deployment(max_ongoing_requests=64, health_check_period_s=5)
class TransformersGenerator:
    """Serve deployment: batched completions from one base model and its LoRA adapters."""

    def __init__(self, model_path: str, dtype: str = "auto", trust_remote_code: bool = False,
                 max_adapters: int = 8, max_batch_size: int = 32, batch_wait_timeout_s: float = 0.05):
        self.engine = TransformersEngine(model_path, dtype, trust_remote_code, max_adapters)
        self.generate_batch.set_max_batch_size(max_batch_size)
        self.generate_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self.requests_started = 0
        self.batch_sizes: list[int] = []

    async def completions(self, body: dict) -> dict:
        """Return the OpenAI-style completion response for one request."""
        check_request(body)
        self.requests_started += 1
        result = await self.generate_batch(body)
        if isinstance(result, Exception):
            raise result
        return result

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.05)
    async def generate_batch(self, bodies: list[dict]) -> list[dict | Exception]:
        self.batch_sizes.append(len(bodies))
        # A worker thread keeps the replica's event loop free for health checks and stats.
        return await asyncio.to_thread(self.engine.generate, bodies)

    async def __call__(self, request) -> dict:
        """HTTP entry point: POST an OpenAI-style completion request as JSON."""
        return await self.completions(await request.json())

    def stats(self) -> dict:
        """Return this replica's counters: model loads, requests started and batch sizes."""
        return {
            **self.engine.stats(),
            "requests_started": self.requests_started,
            "batch_sizes": list(self.batch_sizes),
            "pid": os.getpid(),
            "actor_name": _actor_name(),
        }


def _actor_name() -> str | None:
    import ray

    return ray.get_runtime_context().get_actor_name()
