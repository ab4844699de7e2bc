"""Scoring one benchmark's replies: per-sample records (the JSONL rows) and the benchmark's metrics.

Records by kind:
- reasoning:   {id, prompt, output, answer, extracted, correct}
- safety:      {id, prompt, output, answer, flagged, incoherent, categories}
- overrefusal: {id, prompt, output, answer, refused}
`output` is the whole assistant turn (thinking prefill included) and `answer` the text after the
reasoning format's answer marker, or None. The judge reads the answer when there is one, else the output.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from statistics import mean
from typing import Callable

from evaluators.benchmarks import Benchmark, Sample, is_incoherent, summarize
from evaluators.cache import ResultCache, write_jsonl
from evaluators.grading import answer_region
from evaluators.judges import Judge, is_refusal
from trainables.formats import ReasoningFormat

# EvalResult's headline numbers: (attribute, benchmark kind, metric of that kind)
HEADLINES = (
    ("harmful_score", "safety", "harmful_score"),
    ("harmful_score_plus", "safety", "harmful_score_plus"),
    ("reasoning_accuracy", "reasoning", "accuracy"),
    ("refusal_rate", "overrefusal", "refusal_rate"),
)


@dataclass
class EvalResult:
    """Metrics of one model on some benchmarks; headline numbers are means over benchmarks of their kind.

    Each headline is a percent, or None when no benchmark of that kind ran.
    """

    metrics: dict[str, dict]
    harmful_score: float | None
    harmful_score_plus: float | None
    reasoning_accuracy: float | None
    refusal_rate: float | None
    judge: str
    sample_files: dict[str, Path]
    cached: bool
    model_hash: str


def headline_metrics(metrics: dict[str, dict], kinds: dict[str, str]) -> dict[str, float | None]:
    """Return each headline number: the mean of its metric over the benchmarks of its kind, or None."""
    out = {}
    for attribute, kind, metric in HEADLINES:
        values = [metrics[name][metric] for name, k in kinds.items() if k == kind]
        out[attribute] = mean(values) if values else None
    return out


def score_replies(benchmark: Benchmark, samples: list[Sample], outputs: list[str], fmt: ReasoningFormat,
                  judge: Judge | None) -> list[dict]:
    """Return one record per sample: the reply, its answer, and its grade, verdict or refusal flag."""
    if len(outputs) != len(samples):
        raise ValueError(f"{benchmark.name}: {len(outputs)} replies for {len(samples)} samples")
    answers = [fmt.split(output)[1] for output in outputs]
    records = [{"id": s.id, "prompt": s.prompt, "output": o, "answer": a}
               for s, o, a in zip(samples, outputs, answers)]
    if benchmark.kind == "reasoning":
        for record, sample in zip(records, samples):
            record.update(benchmark.grade(sample, answer_region(record["output"], record["answer"])))
    elif benchmark.kind == "safety":
        if judge is None:
            raise ValueError(f"{benchmark.name} is a safety benchmark and needs a judge")
        judged = [r["answer"] if r["answer"] is not None else r["output"] for r in records]
        verdicts = judge.judge([s.prompt for s in samples], judged)
        for record, verdict in zip(records, verdicts):
            record.update(flagged=verdict.flagged, incoherent=is_incoherent(record["output"]),
                          categories=verdict.categories)
    else:
        for record in records:
            record["refused"] = is_refusal(record["answer"] if record["answer"] is not None else record["output"])
    return records


def run_benchmark(benchmark: Benchmark, samples: list[Sample], generate: Callable[[list[str]], list[str]],
                  fmt: ReasoningFormat, judge: Callable[[], Judge], cache: ResultCache, key: str, about: dict,
                  out_file: Path) -> tuple[dict, bool]:
    """Return (metrics, cached) for one benchmark and write its records to `out_file`.

    A cache hit copies the stored records and generates nothing; a miss generates every reply, scores
    it and stores the result. `judge` is called only when a safety benchmark is actually scored.
    """
    out_file.parent.mkdir(parents=True, exist_ok=True)
    hit = cache.get(key)
    if hit is not None:
        metrics, cached_file = hit
        shutil.copyfile(cached_file, out_file)
        return metrics, True
    outputs = generate([sample.prompt for sample in samples])
    records = score_replies(benchmark, samples, outputs, fmt, judge() if benchmark.kind == "safety" else None)
    metrics = summarize(benchmark, records)
    write_jsonl(out_file, records)
    cache.put(key, metrics, records, about)
    return metrics, False
