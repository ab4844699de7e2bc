"""The evaluator service: Serve started once per sweep, one generator app per base model, called once per trial.

`EvaluatorService(cfg, base_model)` checks every input before Ray starts, `start()` deploys the base
model's generator (and a GPU judge when one is chosen), and `evaluate(adapter=…)` scores one checkpoint:
LoRA adapters go to the base model's deployment, a full-weights model gets an app of its own for the
length of the call. Requests go through deployment handles (a vLLM app through its OpenAI route on
the Serve proxy, the interface Ray Serve LLM documents), at most a few batches in flight; a request
whose replica died is re-sent, and a run that cannot finish raises instead of reporting a part.
The service holds only plain data, so a copy pickled into a Tune trial reaches the same apps by name.
It keeps the life cycle (apps up, apps down) and the cache; how an app is built and how a request
reaches it is the backend's (`evaluators.backends`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable

import ray
from ray import serve

from evaluators.backends import get_backend
from evaluators.placement import unplaceable
from evaluators.benchmarks import get_benchmark
from evaluators.cache import ResultCache, content_hash, model_hash, result_key, write_jsonl
from evaluators.config import EvalConfig
from evaluators.dispatch import (  # noqa: F401 - the errors are part of the service's interface
    EvaluationIncomplete,
    GenerationTimeout,
    complete_all,
)
from evaluators.generation import Completion, ReplyPlanner
from evaluators.judges import get_judge, judge_entry
from evaluators.metrics import SCORING_VERSION, summarize
from evaluators.provenance import evaluation_provenance, items_hash
from evaluators.racing import Race, slice_order
from evaluators.runner import EvalResult, run_benchmark
from evaluators.served_judges import JudgeServer, ServedJudge, guard_requests
from trainables.local_ray import init_local_ray, started_here
from trainables.locations import is_bucket, mirror_small_files, resolve_model
from trainables.schema import ConfigError


def sample_file_name(benchmark: str) -> str:
    """Return the name of a benchmark's sample file in an evaluation's folder."""
    return re.sub(r"[^\w.-]+", "_", benchmark).strip("_") + ".jsonl"


class EvaluatorService:
    """Scores a base model and its fine-tuned variants on benchmarks through Ray Serve; a context manager."""

    def __init__(self, cfg: EvalConfig, base_model: str):
        cfg, note = get_backend(cfg.backend).for_this_machine(cfg)
        if note:
            print(note, flush=True)
        self.cfg = cfg
        self.base_model = base_model
        # Fail on bad input now, before Ray starts or a model loads: every benchmark's data is read and checked.
        self._samples: dict[tuple[str, int | None], list] = {}
        self.check_inputs(cfg, self._load_samples)
        self._resolve(base_model)  # a model that cannot load fails here; start() resolves it for use
        self.base_source: str | None = None  # set by start(): also the mark that Serve runs
        self.base_digest: str | None = None  # hashed once in start(); trials get it with their copy
        self.prefix = f"safetytax-{uuid.uuid4().hex[:8]}"
        self.app_name = f"{self.prefix}-generator"
        self.judge_apps: dict[str, str] = {}  # served judge -> its Serve app
        self._owns_ray = False
        self._tokenizers: dict = {}

    @staticmethod
    def check_inputs(cfg: EvalConfig, load=None) -> None:
        """Raise ConfigError when a benchmark's data or a judge's options are bad; no model is needed.

        Entry points call it before a tiny LRM build; the service calls it with `load` keeping the samples.
        """
        load = load or (lambda benchmark, limit: benchmark.load(limit))
        for name in cfg.benchmarks:
            load(get_benchmark(name, _data_dir(cfg)), cfg.limit)
        for judge in cfg.judge_names():
            judge_entry(judge).check_options(cfg.options_for(judge))

    def provenance(self) -> dict:
        """Return what this service's evaluations ask and who judges them (`evaluators.provenance`)."""
        source = self._resolve(self.base_model)
        if self.base_digest is None and Path(source).is_dir():
            self.base_digest = content_hash(source)
        loaded = {}
        for name in self.cfg.benchmarks:
            benchmark = get_benchmark(name, _data_dir(self.cfg))
            loaded[name] = (benchmark, self._load_samples(benchmark, self.cfg.limit))
        return evaluation_provenance(self.cfg, loaded, self.base_model, self.base_digest)

    def _load_samples(self, benchmark, limit: int | None) -> list:
        """Return a benchmark's samples, read once per service (trials get them with their copy)."""
        key = (benchmark.name, limit)
        if key not in self._samples:
            self._samples[key] = benchmark.load(limit)
        return self._samples[key]

    def __getstate__(self) -> dict:
        # A copy in a trial process uses the apps but must not shut Ray down.
        return {**self.__dict__, "_owns_ray": False, "_tokenizers": {}}

    def __enter__(self) -> EvaluatorService:
        return self  # evaluate() starts Serve on first need; a fully cached evaluation never does

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def start(self) -> None:
        """Start Ray and Serve if needed, and deploy the base model's generator (and a served judge)."""
        if self.base_source is not None:
            return
        base_source = self._resolve(self.base_model)
        if not ray.is_initialized():
            init_local_ray(logging_level=logging.WARNING)
            self._owns_ray = True
        try:
            self._check_placeable()
            serve.start(http_options={"host": self.cfg.http_host, "port": self.cfg.http_port})
            self._deploy_generator(base_source, self.app_name)
            for judge in self.cfg.judge_names():
                if judge_entry(judge).served:
                    self._deploy_judge(judge)
        except BaseException:
            self.shutdown()  # a failed start leaves no apps behind, nor a Ray this service started
            raise
        if self.base_digest is None and Path(base_source).is_dir():  # provenance() may have hashed it already
            self.base_digest = content_hash(base_source)
        self.base_source = base_source

    def _check_placeable(self) -> None:
        # A Ray session this process started is one machine, and no autoscaler grows it: a replica that asks
        # for what it lacks would wait forever, with Serve only logging that it is slow to schedule.
        if not started_here():
            return
        reason = unplaceable(self.cfg, ray.cluster_resources())
        if reason:
            raise ConfigError(f"evaluation.backend={self.cfg.backend}: {reason}")

    def shutdown(self) -> None:
        """Delete this service's apps, and stop Ray if this service started it."""
        if ray.is_initialized() and self._owns_ray and started_here():
            ray.shutdown()  # the session this machine started ends, and Serve with it, quietly (see sweeps.runner)
        elif ray.is_initialized():  # a cluster outlives this service: it keeps nothing of it
            for app in (self.app_name, *self.judge_apps.values()):
                if app in serve.status().applications:
                    serve.delete(app)
            if self._owns_ray:
                serve.shutdown()
                ray.shutdown()
        self.base_source, self._owns_ray = None, False

    @property
    def _backend(self):
        return get_backend(self.cfg.backend)  # looked up, not stored: modules do not pickle into trials

    def checkpoint_source(self, local_dir: str, bucket_uri: str | None) -> str:
        """Return where this service's replicas read a full-weight checkpoint that sits in `local_dir` (this
        node's disk) and, when given, in `bucket_uri`: the bucket copy for a backend that loads from buckets,
        whose replicas (vLLM on GPU nodes) cannot see this node's disk; the local folder otherwise."""
        return bucket_uri if bucket_uri and self._backend.LOADS_FROM_CLOUD else local_dir

    def _resolve(self, model: str) -> str:
        """Return the source the backend loads `model` from; a bucket URI only for a backend that loads one."""
        return resolve_model(model, bucket_ok=self._backend.LOADS_FROM_CLOUD)

    def _deploy_generator(self, source: str, app_name: str) -> None:
        serve.run(self._backend.build_app(self.cfg, source), name=app_name, route_prefix=f"/{app_name}")

    def _deploy_judge(self, judge: str) -> None:
        app_name = self.judge_apps[judge] = f"{self.prefix}-judge-{judge}"
        entry, options = judge_entry(judge), self.cfg.options_for(judge)
        if entry.hosting == "generator":
            self._deploy_generator(self._resolve(entry.model(options)), app_name)
            return
        app = JudgeServer.options(**entry.deployment(self.cfg)).bind(judge, options)
        serve.run(app, name=app_name, route_prefix=f"/{app_name}")

    # ---- evaluation -----------------------------------------------------------------------------

    def evaluate(self, adapter: str | None = None, model: str | None = None, benchmarks: list[str] | None = None,
                 limit: int | None = None, out_dir: str | Path | None = None, race: Race | None = None) -> EvalResult:
        """Return the metrics of a model (the base, a LoRA adapter on it, or a full-weights `model`).

        Each benchmark's records go to `out_dir/<benchmark>.jsonl` (a new temporary folder when None).
        Cached benchmarks generate nothing. With `race` the items are scored in slices and the evaluation may
        stop after one (`evaluators.racing`); the result then says so in `race_stop`.
        """
        cfg = self.cfg
        names = benchmarks or cfg.benchmarks
        chosen = {name: get_benchmark(name, _data_dir(cfg)) for name in names}
        limit = limit if limit is not None else cfg.limit
        if adapter is not None:
            adapter = self._backend.check_adapter(adapter)
        # Resolved and hashed once: bad input fails before the cache is read or Serve starts.
        source = self._resolve(model if model is not None else self.base_model)
        identity, cache = self._identity(source, adapter)
        out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="safetytax-eval-"))
        # A raced evaluation caches slice by slice, under keys of their own.
        cached = self._cached_result(chosen, limit, identity, cache, out) if race is None else None
        if cached is not None:
            return cached
        evaluate_start = time.perf_counter()
        self.start()
        own_app = source != self.base_source
        app_name = f"{self.prefix}-model-{uuid.uuid4().hex[:6]}" if own_app else self.app_name
        # A fine-tuned checkpoint in a bucket keeps its base model's tokenizer, which is local.
        cloud = is_bucket(source)
        planner = ReplyPlanner(cfg.generation, self._tokenizer(self.base_source if cloud else source))
        judges = functools.cache(self._judges)  # built once, and only if a safety benchmark is scored
        # A full-weights model is deployed on its first request, so a fully cached result loads nothing.
        deploy = functools.cache(lambda: self._deploy_generator(source, app_name) if own_app else None)
        metrics, hits = {}, []
        generation = {"seconds": 0.0}

        def generate(prompts: list[str], name: str) -> list[str]:
            start = time.perf_counter()
            try:
                return deploy() or self._generate(app_name, source, adapter, prompts, planner, name)
            finally:
                generation["seconds"] += time.perf_counter() - start
        def run(name: str, benchmark, samples: list, out_file: Path) -> dict:
            """Score `samples` of one benchmark into `out_file` (from the cache when it holds them); return metrics."""
            key = self._result_key(identity, name, benchmark, samples, limit)
            found, cached = run_benchmark(
                benchmark, samples, generate=lambda prompts: generate(prompts, name), fmt=planner.format,
                judges=judges, cache=cache, key=key,
                about={"benchmark": name, "model": source, "adapter": adapter, "judges": cfg.judge_names()},
                out_file=out_file)
            hits.append(cached)
            return found

        kinds = {name: benchmark.kind for name, benchmark in chosen.items()}
        files = {name: out / sample_file_name(name) for name in chosen}
        race_stop = None
        try:
            if race is None:
                for name, benchmark in chosen.items():
                    metrics[name] = run(name, benchmark, self._load_samples(benchmark, limit), files[name])
            else:
                metrics, race_stop = self._race(chosen, limit, race, run, out, files,
                                                lambda found: EvalResult.from_metrics(
                                                    found, kinds, judge=cfg.judge_names()[0], judges=cfg.judge_names(),
                                                    sample_files=files, cached=False, model_hash=identity))
        finally:
            if own_app and app_name in serve.status().applications:
                serve.delete(app_name)
        total = time.perf_counter() - evaluate_start
        return EvalResult.from_metrics(metrics, kinds, judge=cfg.judge_names()[0], judges=cfg.judge_names(),
                                       sample_files=files, cached=all(hits), model_hash=identity,
                                       phase_seconds={"generation": generation["seconds"],
                                                      "other": total - generation["seconds"]}, race_stop=race_stop)

    def _race(self, chosen: dict, limit: int | None, race: Race, run: Callable, out: Path, files: dict[str, Path],
              result_of: Callable) -> tuple[dict, dict | None]:
        """Return (metrics, race_stop) of an evaluation in `race.slices` slices, asking `race.rule` after each but
        the last; the records scored go to `files`, in the benchmark's order."""
        samples = {name: self._load_samples(benchmark, limit) for name, benchmark in chosen.items()}
        parts = {name: slice_order(name, len(samples[name]), race.slices) for name in chosen}
        scored: dict[str, list[tuple[int, dict]]] = {name: [] for name in chosen}
        staging = out / ".slices"
        metrics, race_stop = {}, None
        for k in range(race.slices):
            for name, benchmark in chosen.items():
                if not parts[name][k]:
                    continue
                part_file = staging / f"{k}-{sample_file_name(name)}"
                run(name, benchmark, [samples[name][i] for i in parts[name][k]], part_file)
                records = [json.loads(line) for line in part_file.read_text().splitlines() if line]
                scored[name] += zip(parts[name][k], records)
            metrics = {name: summarize(benchmark.kind, [r for _, r in scored[name]],
                                       self.cfg.judge_names() if benchmark.kind == "safety" else ())
                       for name, benchmark in chosen.items() if scored[name]}
            reason = race.rule(result_of(metrics)) if k < race.slices - 1 else None
            if reason:
                race_stop = {"slices_read": k + 1, "slices": race.slices, "reason": reason}
                break
        for name in chosen:
            write_jsonl(files[name], [record for _, record in sorted(scored[name], key=lambda pair: pair[0])])
        shutil.rmtree(staging, ignore_errors=True)
        return metrics, race_stop

    def _result_key(self, identity: str, name: str, benchmark, samples, limit: int | None) -> str:
        cfg = self.cfg
        judged_by = [[j, cfg.options_for(j)] for j in cfg.judge_names()]
        return result_key(model=identity, benchmark=name, samples=items_hash(samples), limit=limit,
                          generation=cfg.generation.model_dump(), backend=cfg.backend, dtype=cfg.dtype,
                          judge=judged_by if benchmark.kind == "safety" else None, scoring=SCORING_VERSION)

    def _cached_result(self, chosen: dict, limit: int | None, identity: str, cache: ResultCache,
                       out: Path) -> EvalResult | None:
        """Return the result when every benchmark is in the cache, without starting Ray or Serve; else None."""
        if self.cfg.cache_dir is None:
            return None
        hits = {}
        for name, benchmark in chosen.items():
            hit = cache.get(self._result_key(identity, name, benchmark, self._load_samples(benchmark, limit), limit))
            if hit is None:
                return None
            hits[name] = hit
        files = {}
        for name, (_, cached_file) in hits.items():
            files[name] = out / sample_file_name(name)
            files[name].parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(cached_file, files[name])
        kinds = {name: benchmark.kind for name, benchmark in chosen.items()}
        return EvalResult.from_metrics({name: hit[0] for name, hit in hits.items()}, kinds,
                                       judge=self.cfg.judge_names()[0], judges=self.cfg.judge_names(),
                                       sample_files=files, cached=True, model_hash=identity)

    def _identity(self, source: str, adapter: str | None) -> tuple[str, ResultCache]:
        """Return the model's content hash and the cache; models without local files are not cached."""
        if Path(source).is_dir() and (adapter is None or Path(adapter).is_dir()):
            digest = self.base_digest if source == self.base_source else content_hash(source)
            return model_hash(digest, adapter), ResultCache(self.cfg.cache_dir)
        return hashlib.sha256(f"{source}+{adapter}".encode()).hexdigest(), ResultCache(None)

    def _tokenizer(self, source: str):
        if source not in self._tokenizers:
            from transformers import AutoTokenizer

            # A model served from a bucket: its tokenizer files are read from a local copy.
            local = mirror_small_files(source) if is_bucket(source) else source
            self._tokenizers[source] = AutoTokenizer.from_pretrained(
                local, trust_remote_code=self.cfg.trust_remote_code)
        return self._tokenizers[source]

    def _sender(self, app_name: str, source: str, adapter: str | None) -> Callable:
        """Return send(request) -> pending call, for the app's backend."""
        return self._backend.make_sender(self.cfg, app_name, source, adapter)

    def _window(self) -> int:
        # Two batches per replica in flight keep replicas busy without queueing the whole benchmark.
        return 2 * self.cfg.max_batch_size * self.cfg.num_replicas

    def _generate(self, app_name: str, source: str, adapter: str | None, prompts: list[str], planner: ReplyPlanner,
                  benchmark: str) -> list[str]:
        """Return the reply to every prompt, generated by the app (under the thinking budget, if any)."""
        replies, first = [], []
        for prompt in prompts:
            reply, request = planner.start(prompt, adapter)
            replies.append(reply)
            first.append(request)
        complete_all(self._sender(app_name, source, adapter), first,
                     lambda i, response: planner.advance(replies[i], Completion.from_openai(response)),
                     window=self._window(), timeout_s=self.cfg.request_timeout_s, max_retries=self.cfg.max_retries,
                     what=f"benchmark {benchmark}")
        return [reply.output for reply in replies]

    def _judges(self) -> dict:
        """Return {name: judge} for every configured judge, the objective's judge first."""
        return {name: self._judge(name) for name in self.cfg.judge_names()}

    def _judge(self, name: str):
        """Return one judge: built here for CPU judges, a proxy to the served judge otherwise."""
        entry, options = judge_entry(name), self.cfg.options_for(name)
        if entry.hosting == "serve":
            return ServedJudge(name, self.judge_apps[name], self.cfg)
        if entry.hosting == "generator":
            source = self._resolve(entry.model(options))
            return get_judge(name, generate=lambda chats: self._guard_replies(self.judge_apps[name], source, chats))
        return get_judge(name, **options)

    def _guard_replies(self, app_name: str, source: str, chats: list[list[dict]]) -> list[str]:
        requests = guard_requests(self._tokenizer(source), chats)
        texts: list[str] = [""] * len(requests)

        def record(i: int, response: dict) -> None:
            texts[i] = Completion.from_openai(response).text

        complete_all(self._sender(app_name, source, None), requests, record, window=self._window(),
                     timeout_s=self.cfg.request_timeout_s, max_retries=self.cfg.max_retries, what="judge llama-guard")
        return texts

def _data_dir(cfg: EvalConfig) -> str | None:
    return str(cfg.data_dir) if cfg.data_dir is not None else None
