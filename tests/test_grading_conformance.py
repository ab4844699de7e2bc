"""Conformance of grading on real rows: every answer form lm-eval or Qwen2.5-Math accepts grades right.

For every MATH500 and AIME24 row in ../shared/data, each reply form is written with the row's answer,
wrapped as a reasoning reply with and without the answer marker, and graded the way the runner grades
(`fmt.split`, then `answer_region`, then the benchmark's grade). The same forms written with another
row's (non-equivalent) answer must grade wrong, and each reference solution must grade right.
GPQA, whose questions must not be posted in plain text, uses questions written here.

`python tests/test_grading_conformance.py` prints the counts per benchmark and form (docs/grading.md).
"""

from __future__ import annotations

import csv
import functools
import json
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

from evaluators.benchmarks import Benchmark, Sample, get_benchmark
from evaluators.grading import answer_region, grade_math
from trainables.formats import get_format

FORMAT = get_format("s1")
# Thinking with numbers and LaTeX but no answer statement: graded whole when the marker is missing,
# it must not be mistaken for the answer.
THINKING = "Let me set this up. Trying $x = 2$ gives 7, and 3/4 of that is too small, so I change approach.\n"
GPQA_THINKING = "Option (A) ignores the boundary condition and (D) has the wrong units; compare the rest.\n"

# {a} is the answer; {o} another row's answer, written first so that the last box must win.
MATH_FORMS = {
    "boxed, last wins": "A first try gave \\boxed{{{o}}}, which fails the check. Redoing it: \\boxed{{{a}}} holds.",
    "The answer is $X$.": "The answer is ${a}$.",
    "The answer is X.": "The answer is {a}.",
    "The final answer is $X$.": "Checking once more.\nThe final answer is ${a}$.",
    "Minerva sentence": "Final Answer: The final answer is ${a}$. I hope it is correct.",
    "Answer: X": "Answer: {a}",
    "**X**": "Putting it together: **{a}**",
    "$X$ and punctuation": "Putting it together, we get ${a}$.",
    "\\(X\\)": "The answer is \\({a}\\).",
    "\\boxed{\\text{X}}": "\\boxed{{\\text{{{a}}}}}",
    "\\boxed{\\mathbf{X}}": "\\boxed{{\\mathbf{{{a}}}}}",
    "\\textbf{X}": "The answer is \\textbf{{{a}}}.",
    "\\boxed{X.}": "So \\boxed{{{a}.}}",
}
# Integer answers also come as the last step of a computation.
INTEGER_FORMS = {
    "\\boxed{m+n=X}": "\\boxed{{m+n={a}}}",
    "expr = X": "So m + n = {a}",
}
GPQA_FORMS = {
    "stated, then a reason": "The answer is {a} because ({o}) is wrong.",
    "The answer is $X$.": "The answer is ${a}$.",
    "\\boxed{\\text{X}}": "\\boxed{{\\text{{{a}}}}}",
    "\\boxed{X}": "So \\boxed{{{a}}}.",
    "Answer: (X)": "Answer: ({a})",
    "**X**": "The answer is **{a}**.",
    "The final answer is (X).": "The final answer is ({a}).",
    "Minerva sentence": "Final Answer: The final answer is ${a}$. I hope it is correct.",
    "\\(X\\)": "The answer is \\({a}\\).",
    "\\textbf{X}": "Answer: \\textbf{{({a})}}",
}

# Hand-written questions in GPQA's Hub schema; one for each position the shuffle can put the answer in.
GPQA_ROWS = [
    {"Question": "Which gas makes up most of Earth's atmosphere?", "Correct Answer": "Nitrogen",
     "Incorrect Answer 1": "Oxygen", "Incorrect Answer 2": "Argon", "Incorrect Answer 3": "Carbon dioxide"},
    {"Question": "What is the spin of an electron?", "Correct Answer": "1/2",
     "Incorrect Answer 1": "0", "Incorrect Answer 2": "1", "Incorrect Answer 3": "3/2"},
    {"Question": "Which element has atomic number 6?", "Correct Answer": "Carbon",
     "Incorrect Answer 1": "Boron", "Incorrect Answer 2": "Nitrogen", "Incorrect Answer 3": "Oxygen"},
    {"Question": "Which particle mediates the electromagnetic force?", "Correct Answer": "The photon",
     "Incorrect Answer 1": "The gluon", "Incorrect Answer 2": "The W boson", "Incorrect Answer 3": "The graviton"},
    {"Question": "What is the pH of pure water at 25 C?", "Correct Answer": "7",
     "Incorrect Answer 1": "0", "Incorrect Answer 2": "1", "Incorrect Answer 3": "14"},
    {"Question": "Which organelle makes most of a cell's ATP?", "Correct Answer": "The mitochondrion",
     "Incorrect Answer 1": "The ribosome", "Incorrect Answer 2": "The nucleus", "Incorrect Answer 3": "The Golgi body"},
    {"Question": "What is the SI unit of magnetic flux?", "Correct Answer": "The weber",
     "Incorrect Answer 1": "The tesla", "Incorrect Answer 2": "The henry", "Incorrect Answer 3": "The gauss"},
    {"Question": "Which law relates current and voltage in a resistor?", "Correct Answer": "Ohm's law",
     "Incorrect Answer 1": "Hooke's law", "Incorrect Answer 2": "Boyle's law", "Incorrect Answer 3": "Snell's law"},
]

MARKERS = ("with marker", "without marker")


def reply(thinking: str, answer_text: str, marker: str) -> str:
    """Return a generated reasoning reply in the s1 format, with or without the answer marker."""
    if marker == "with marker":
        return FORMAT.render_response(thinking, answer_text)
    return f"{FORMAT.think_prefill}{thinking}\n{answer_text}"


def grade_as_runner(benchmark: Benchmark, sample: Sample, output: str) -> dict:
    """Return the grade the runner records for one generated reply."""
    return benchmark.grade(sample, answer_region(output, FORMAT.split(output)[1]))


def is_integer_answer(answer: str) -> bool:
    return re.fullmatch(r"-?\d+", answer.strip()) is not None


def other_answer(samples: list[Sample], index: int, integers_only: bool = False) -> str:
    """Return the answer of the next row whose answer is not equivalent to this row's (an integer if asked)."""
    reference = str(samples[index].reference)
    for step in range(1, len(samples)):
        other = str(samples[(index + step) % len(samples)].reference)
        if integers_only and not is_integer_answer(other):
            continue
        if other.strip() != reference.strip() and not grade_math(reference, f"\\boxed{{{other}}}")["correct"]:
            return other
    raise AssertionError("no row has a different answer")


def conformance(data_dir: Path, gpqa_dir: Path) -> dict[tuple[str, str, str, str], Counter]:
    """Return {(benchmark, form, marker, right|wrong): Counter(correct=…, total=…)} over every row."""
    counts: dict[tuple[str, str, str, str], Counter] = {}

    def tally(benchmark: Benchmark, samples: list[Sample], others: list[str], forms: dict, thinking: str,
              forms_for=lambda sample: True) -> None:
        for sample, other in zip(samples, others):
            for form, template in forms.items():
                if not forms_for(sample):
                    continue
                for kind, (a, o) in (("right", (sample.reference, other)), ("wrong", (other, sample.reference))):
                    text = template.format(a=a, o=o)
                    for marker in MARKERS:
                        count = counts.setdefault((benchmark.name, form, marker, kind), Counter())
                        count["total"] += 1
                        count["correct"] += grade_as_runner(benchmark, sample, reply(thinking, text, marker))["correct"]

    for name, file, solution_states_answer in (("math500", "math500_test.jsonl", lambda row: True),
                                               ("aime24", "aime24_test.jsonl", lambda row: "boxed" in row["solution"])):
        benchmark = get_benchmark(name, data_dir=str(data_dir))
        samples = benchmark.load(None)
        rows = [json.loads(line) for line in (data_dir / file).read_text().splitlines() if line.strip()]
        others = [other_answer(samples, i) for i in range(len(samples))]
        tally(benchmark, samples, others, MATH_FORMS, THINKING)
        integer_others = [other_answer(samples, i, integers_only=True) for i in range(len(samples))]
        tally(benchmark, samples, integer_others, INTEGER_FORMS, THINKING, lambda s: is_integer_answer(str(s.reference)))
        for sample, row in zip(samples, rows):
            for marker in MARKERS:
                for label, counted in (("reference solution", True),
                                       ("reference solution stating the answer", solution_states_answer(row))):
                    if counted:
                        count = counts.setdefault((name, label, marker, "right"), Counter())
                        count["total"] += 1
                        output = reply("Let me check.\n", row["solution"], marker)
                        count["correct"] += grade_as_runner(benchmark, sample, output)["correct"]

    with (gpqa_dir / "gpqa_diamond.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(GPQA_ROWS[0]))
        writer.writeheader()
        writer.writerows(GPQA_ROWS)
    gpqa = get_benchmark("gpqa_diamond", data_dir=str(gpqa_dir))
    samples = gpqa.load(None)
    others = ["ABCD"[("ABCD".index(s.reference) + 1) % 4] for s in samples]
    tally(gpqa, samples, others, GPQA_FORMS, GPQA_THINKING)
    return counts


@pytest.fixture(scope="module")
def counts(shared_data, tmp_path_factory) -> dict:
    return conformance(shared_data, tmp_path_factory.mktemp("gpqa"))


def _cases() -> list[tuple[str, str]]:
    cases = [(name, form) for name in ("math500", "aime24") for form in [*MATH_FORMS, *INTEGER_FORMS]]
    cases += [("gpqa_diamond", form) for form in GPQA_FORMS]
    return cases


@pytest.mark.slow
@pytest.mark.parametrize("benchmark, form", _cases())
def test_every_row_grades_right_in_every_form_with_and_without_the_marker(counts, benchmark, form):
    for marker in MARKERS:
        right, wrong = counts[(benchmark, form, marker, "right")], counts[(benchmark, form, marker, "wrong")]
        assert right["total"] > 0
        assert right["correct"] == right["total"], f"{benchmark} {form!r} {marker}: {right['correct']}/{right['total']}"
        assert wrong["correct"] == 0, f"{benchmark} {form!r} {marker}: another row's answer graded right {wrong['correct']} times"


@pytest.mark.slow
@pytest.mark.parametrize("benchmark", ["math500", "aime24"])
def test_reference_solutions_that_state_the_answer_grade_right(counts, benchmark):
    for marker in MARKERS:
        stated = counts[(benchmark, "reference solution stating the answer", marker, "right")]
        assert stated["total"] > 0
        assert stated["correct"] == stated["total"], f"{benchmark} {marker}: {stated['correct']}/{stated['total']}"


def table(counts: dict) -> str:
    """Return the counts as a Markdown table: right forms graded right, wrong answers graded right."""
    lines = ["| benchmark | form | right, with marker | right, without | other row's answer graded right |",
             "|---|---|---|---|---|"]
    keys = sorted({(b, f) for b, f, _, _ in counts}, key=lambda k: (k[0], list(dict.fromkeys(
        [f for b, f, _, _ in counts if b == k[0]])).index(k[1])))
    for name, form in keys:
        cell = functools.partial(lambda marker, kind: counts.get((name, form, marker, kind)))
        right = [cell(m, "right") for m in MARKERS]
        wrong = [cell(m, "wrong") for m in MARKERS]
        wrong_text = ("-" if wrong[0] is None else
                      f"{sum(w['correct'] for w in wrong)}/{sum(w['total'] for w in wrong)}")
        shown = form.replace("|", "\\|")
        lines.append(f"| {name} | {shown} | {right[0]['correct']}/{right[0]['total']} "
                     f"| {right[1]['correct']}/{right[1]['total']} | {wrong_text} |")
    return "\n".join(lines)


if __name__ == "__main__":
    import tempfile

    data = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    with tempfile.TemporaryDirectory() as scratch:
        print(table(conformance(data, Path(scratch))))
