"""Scoring one benchmark's replies: per-sample records (the JSONL rows) and the benchmark's metrics.

Records by kind (every record also carries `incoherent`):
- reasoning:   {id, prompt, output, answer, extracted, correct}
- safety:      {id, prompt, output, answer, flagged, categories[, verdicts]}
- overrefusal: {id, prompt, output, answer, refused}
`output` is the whole assistant turn (thinking prefill included) and `answer` the text after the
reasoning format's answer marker, or None. The judge reads the answer when there is one, else the output.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from evaluators.benchmarks import Benchmark, Sample
from evaluators.cache import ResultCache, write_jsonl
from evaluators.coherence import incoherent_flags
from evaluators.grading import answer_region
from evaluators.judges import is_refusal
from evaluators.verdicts import Judge
from evaluators.metrics import HEADLINES, headlines, summarize
from evaluators.reading import Reading
from trainables.formats import ReasoningFormat


@dataclass
class EvalResult:
    """Metrics of one model on some benchmarks; headline numbers are means over benchmarks of their kind.

    Each headline is a percent, or None when no benchmark of that kind ran; `intervals` holds each
    headline's 95% interval and `counts` its number of replies. `judge` is the judge whose verdicts make
    harmful_score (the first of `judges`).
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
    readings: dict[str, Reading] = field(default_factory=dict)  # each headline number with its interval and n
    incoherent_rate: float | None = None
    collapsed: bool = False
    judges: list[str] = field(default_factory=list)
    # Wall time by phase, in seconds: generation (deployment and queueing included) and the rest (scoring, judging).
    phase_seconds: dict[str, float] = field(default_factory=dict)
    # A raced evaluation that stopped early (evaluators.racing): {slices_read, slices, reason}; else None.
    race_stop: dict | None = None

    @classmethod
    def from_metrics(cls, metrics: dict[str, dict], kinds: dict[str, str], **rest) -> EvalResult:
        """Return the result whose headline numbers and intervals are computed from per-benchmark metrics."""
        top = headlines(metrics, kinds)
        return cls(metrics=metrics, **{name: top[name] for name in HEADLINES},
                   readings={name: Reading.read(top, name) for name in HEADLINES if top[name] is not None},
                   incoherent_rate=top.get("incoherent_rate"), collapsed=bool(top.get("collapsed")), **rest)

    @property
    def counts(self) -> dict[str, int]:
        """Return how many replies each headline number counts."""
        return {name: reading.n for name, reading in self.readings.items()}


def score_replies(benchmark: Benchmark, samples: list[Sample], outputs: list[str], fmt: ReasoningFormat,
                  judges: dict[str, Judge] | None) -> list[dict]:
    """Return one record per sample: the reply, its answer, whether it is incoherent, and its grade or verdicts.

    Safety records carry the first judge's `flagged` and `categories`, and with several judges each
    one's verdict under `verdicts`.
    """
    if len(outputs) != len(samples):
        raise ValueError(f"{benchmark.name}: {len(outputs)} replies for {len(samples)} samples")
    answers = [fmt.split(output)[1] for output in outputs]
    records = [{"id": s.id, "prompt": s.prompt, "output": o, "answer": a, "incoherent": i}
               for s, o, a, i in zip(samples, outputs, answers, incoherent_flags(outputs))]
    if benchmark.kind == "reasoning":
        for record, sample in zip(records, samples):
            record.update(benchmark.grade(sample, answer_region(record["output"], record["answer"])))
    elif benchmark.kind == "safety":
        if not judges:
            raise ValueError(f"{benchmark.name} is a safety benchmark and needs a judge")
        judged = [r["answer"] if r["answer"] is not None else r["output"] for r in records]
        prompts = [s.prompt for s in samples]
        verdicts = {name: judge.judge(prompts, judged) for name, judge in judges.items()}
        first = next(iter(verdicts))
        for i, record in enumerate(records):
            record.update(flagged=verdicts[first][i].flagged, categories=verdicts[first][i].categories)
            if len(verdicts) > 1:
                record["verdicts"] = {name: {"flagged": v[i].flagged, "categories": v[i].categories}
                                      for name, v in verdicts.items()}
    else:
        for record in records:
            record["refused"] = is_refusal(record["answer"] if record["answer"] is not None else record["output"])
    return records


def run_benchmark(benchmark: Benchmark, samples: list[Sample], generate: Callable[[list[str]], list[str]],
                  fmt: ReasoningFormat, judges: Callable[[], dict[str, Judge]], cache: ResultCache, key: str,
                  about: dict, out_file: Path) -> tuple[dict, bool]:
    """Return (metrics, cached) for one benchmark and write its records to `out_file`.

    A cache hit copies the stored records and generates nothing; a miss generates every reply, scores
    it and stores the result. `judges` (name -> judge, the first one scores harmful_score) is called only
    when a safety benchmark is actually scored.
    """
    out_file.parent.mkdir(parents=True, exist_ok=True)
    hit = cache.get(key)
    if hit is not None:
        metrics, cached_file = hit
        shutil.copyfile(cached_file, out_file)
        return metrics, True
    outputs = generate([sample.prompt for sample in samples])
    chosen = judges() if benchmark.kind == "safety" else None
    records = score_replies(benchmark, samples, outputs, fmt, chosen)
    metrics = summarize(benchmark.kind, records, list(chosen or ()))
    write_jsonl(out_file, records)
    cache.put(key, metrics, records, about)
    return metrics, False
