"""Answer extraction and grading on hand-written answers: right, wrong and malformed, for each benchmark."""

from __future__ import annotations

import csv
import json

import pytest

from evaluators.benchmarks import get_benchmark, gpqa_sample
from evaluators.grading import (
    answer_region,
    extract_answer,
    extract_choice,
    extract_integer,
    extract_math,
    grade_choice,
    grade_integer,
    grade_math,
    last_boxed,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Answer: 1034", "1034"),
        ("so the answer is 42.", "42"),
        ("The final answer is $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("Answer: 3\nwait, no.\nAnswer: 5", "5"),
        ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("Final Answer: The final answer is $25$. I hope it is correct.", "25"),
        ("\\boxed{3} at first, then \\boxed{4} after checking.", "4"),
        ("Putting it together: **\\sqrt{2}**", "\\sqrt{2}"),
        ("\\boxed{104.}", "104"),
        ("17", None),  # no statement: math-verify reads the bare text (see extract_math)
        ("", None),
        (None, None),
    ],
)
def test_extract_answer_reads_boxed_answer_label_and_phrase(text, expected):
    assert extract_answer(text) == expected


def test_unbalanced_boxed_is_not_an_answer():
    assert last_boxed("the answer is \\boxed{\\frac{1}{2") is None


def test_answer_region_is_the_whole_reply_without_a_marker():
    # Without a marker the last line may be "\\end{align*}" or prose; the answer can be anywhere.
    reply = "thinking...\n$$x = \\boxed{5}$$\n\\end{align*}\n"
    assert answer_region(reply, None) == reply
    assert grade_math("5", answer_region(reply, None))["correct"] is True
    assert answer_region("ignored", "Answer: 7") == "Answer: 7"
    assert answer_region("", None) == ""


@pytest.mark.parametrize(
    "text, extracted",
    [
        ("17", "17"),
        ("so we get $\\frac{3}{4}$.", "\\frac{3}{4}"),
        ("Since $x=2$, it is $\\sqrt{2}$.", "\\sqrt{2}"),
        ("The answer is $x = 5$, since $y = 2$.", "x = 5"),  # a stated span, not the reason after it
        ("The answer is \\sqrt{2}, since $x^2 = 2$.", "\\sqrt{2}"),
        ("no answer here", None),
        (None, None),
    ],
)
def test_extract_math_reads_the_stated_or_else_the_last_expression(text, extracted):
    assert extract_math(text) == extracted


def test_tiny_arith_grades_the_tiny_models_answer_format():
    arith = get_benchmark("tiny-arith")
    sample = arith.load(1)[0]
    assert arith.grade(sample, f"Answer: {sample.reference}") == {"extracted": sample.reference, "correct": True}
    assert arith.grade(sample, f"Answer: {sample.reference + 1}")["correct"] is False
    assert arith.grade(sample, "Answer: Sure! Step 1: get the tools.")["correct"] is False
    assert arith.grade(sample, None) == {"extracted": None, "correct": False}


@pytest.mark.parametrize(
    "text, extracted, correct",
    [
        ("Answer: 25", 25, True),
        ("Answer: 025", 25, True),  # AIME answers are three digits; leading zeros do not matter
        ("The answer is $\\boxed{025}$.", 25, True),
        ("\\boxed{25.0}", 25, True),
        ("Answer: 24", 24, False),
        ("Answer: 12 + 13 = 25", 25, True),  # the last step of a computation states the answer
        ("The answer is $25$.", 25, True),
        ("Final Answer: The final answer is $25$. I hope it is correct.", 25, True),
        ("\\boxed{104.}", 104, False),
        ("\\boxed{\\mathbf{25}}", 25, True),
        ("\\boxed{\\text{25}}", 25, True),
        ("\\boxed{\\textbf{(025) }}", 25, True),
        ("\\(25\\)", 25, True),
        ("\\boxed{m+n=25}", 25, True),
        ("**25**", 25, True),
        ("so m + n = 25", 25, True),
        ("\\boxed{25} is wrong; it is \\boxed{24}", 24, False),  # the last box wins
        ("Answer: twenty-five", None, False),
        ("Answer: 2.5", None, False),
        ("Answer: \\frac{1}{2}", None, False),
    ],
)
def test_aime_compares_integers(text, extracted, correct, tmp_path):
    (tmp_path / "aime24_test.jsonl").write_text(json.dumps({"id": 1, "problem": "p", "answer": "025"}) + "\n")
    aime = get_benchmark("aime24", data_dir=str(tmp_path))
    sample = aime.load(None)[0]
    assert aime.grade(sample, text) == {"extracted": extracted, "correct": correct}


def test_extract_integer_reads_thousands_separators_and_signs():
    assert extract_integer("Answer: 1,024") == 1024
    assert extract_integer("x = -7") == -7


@pytest.mark.parametrize(
    "text, correct",
    [
        ("\\boxed{\\frac{1}{2}}", True),
        ("Answer: 0.5", True),
        ("The answer is $\\dfrac{1}{2}$.", True),
        ("Answer: 1/2", True),
        ("\\boxed{0.25}", False),
        ("Answer: one half", False),
    ],
)
def test_math_equivalence_through_math_verify(text, correct):
    assert grade_math("\\frac{1}{2}", text)["correct"] is correct


def test_math_reference_boxed_half_equals_decimal_answer():
    # The reverse direction: a reference written as a decimal and a boxed fraction as the answer.
    assert grade_math("0.5", "\\boxed{\\frac{1}{2}}") == {"extracted": "\\frac{1}{2}", "correct": True}


def test_math_tuple_answer_and_malformed_answer():
    reference = "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert grade_math(reference, "\\boxed{(3, \\frac{\\pi}{2})}")["correct"] is True
    assert grade_math(reference, "\\boxed{(3, \\pi)}")["correct"] is False
    assert grade_math(reference, None) == {"extracted": None, "correct": False}
    assert grade_math(reference, "   ") == {"extracted": None, "correct": False}


@pytest.mark.parametrize(
    "text, letter",
    [
        ("Answer: (B)", "B"),
        ("Answer: B", "B"),
        ("B) because the enthalpy falls", "B"),
        ("The answer is (C).", "C"),
        ("\\boxed{D}", "D"),
        ("The answer is B because (A) is wrong.", "B"),  # the stated choice, not the last parenthesised one
        ("The answer is $B$.", "B"),
        ("\\boxed{\\text{B}}", "B"),
        ("\\textbf{Answer: (C)}", "C"),
        ("Final Answer: The final answer is $D$. I hope it is correct.", "D"),
        ("(A) fails and (D) fails, so the answer is **C**.", "C"),
        ("Checking: (A) fails, (C) fits.", "C"),  # nothing stated: lm-eval's last parenthesised letter
        ("A", "A"),
        ("A farmer would say otherwise.", None),
        ("Answer: none of them", None),
        ("", None),
    ],
)
def test_extract_choice_letter_forms(text, letter):
    assert extract_choice(text) == letter


# Hand-written questions in GPQA's schema (the real GPQA must not be posted in plain text).
GPQA_ROWS = [
    {"Question": "Which gas makes up most of Earth's atmosphere?", "Correct Answer": "Nitrogen",
     "Incorrect Answer 1": "Oxygen", "Incorrect Answer 2": "Argon", "Incorrect Answer 3": "Carbon dioxide"},
    {"Question": "What is the spin of an electron?", "Correct Answer": "1/2",
     "Incorrect Answer 1": "0", "Incorrect Answer 2": "1", "Incorrect Answer 3": "3/2"},
    {"Question": "Which element has atomic number 6?", "Correct Answer": "Carbon",
     "Incorrect Answer 1": "Boron", "Incorrect Answer 2": "Nitrogen", "Incorrect Answer 3": "Oxygen"},
]


def test_gpqa_shuffle_is_seeded_and_the_letter_read_back_is_graded(tmp_path):
    with (tmp_path / "gpqa_diamond.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(GPQA_ROWS[0]))
        writer.writeheader()
        writer.writerows(GPQA_ROWS)
    gpqa = get_benchmark("gpqa_diamond", data_dir=str(tmp_path))
    samples = gpqa.load(None)
    assert samples == gpqa.load(None)  # the same order on every load
    assert {s.reference for s in samples} != {"A"}  # the correct choice is not always listed first
    assert any(gpqa_sample(row, i, seed=1).meta != s.meta for i, (row, s) in enumerate(zip(GPQA_ROWS, samples)))
    for sample, row in zip(samples, GPQA_ROWS):
        letter = sample.reference
        assert sample.meta["choices"]["ABCD".index(letter)] == row["Correct Answer"]
        assert f"({letter}) {row['Correct Answer']}\n" in sample.prompt
        wrong = next(x for x in "ABCD" if x != letter)
        assert gpqa.grade(sample, f"Answer: ({letter})") == {"extracted": letter, "correct": True}
        assert gpqa.grade(sample, f"{letter}) {row['Correct Answer']}")["correct"] is True
        assert gpqa.grade(sample, f"Answer: ({wrong})")["correct"] is False
        assert gpqa.grade(sample, "I am not sure.") == {"extracted": None, "correct": False}


def test_end_of_turn_tokens_left_by_the_decoder_are_ignored():
    assert extract_integer("Answer: 867<|im_end|>") == 867
    assert extract_answer("<|im_end|>") is None


def test_an_echoed_empty_boxed_does_not_hide_the_answer():
    assert extract_answer("I will put it in \\boxed{}.\nAnswer: 12") == "12"


@pytest.mark.parametrize(
    "grade, reference",
    [(grade_math, "\\frac{1}{2}"), (grade_integer, "25"), (grade_choice, "B")],
)
@pytest.mark.parametrize(
    "text",
    ["\\boxed{", "\\boxed{\\frac{1}{", "$$$", "Answer: \\left(", "\\begin{pmatrix} 1 & 2", "}}}{{{", "\x00\ufffd", 42,
     "\\boxed{" * 200, "Answer: " + "(" * 500],
)
def test_unreadable_replies_grade_wrong_without_raising(grade, reference, text):
    result = grade(reference, text)
    assert result["correct"] is False
    assert set(result) == {"extracted", "correct"}


def test_math_grading_works_off_the_main_thread():
    # Serve replicas and Ray workers may grade on a worker thread, where signal-based timeouts fail.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        result = pool.submit(grade_math, "\\frac{1}{2}", "\\boxed{0.5}").result()
    assert result["correct"] is True


# Answer forms that the field's graders accept and the project once rejected, one class at a time. Each
# class has its right answers (graded right) and near misses (graded wrong): no rule accepts more than it must.
SPLIT_OVER_BOXES = [  # math-verify reads adjacent boxes as one answer: a pair, a list, a system's solutions
    ("1, -2", "So $x = \\boxed{1}$ and $x = \\boxed{-2}$.", True),
    ("1, -2", "The roots are \\boxed{-2}, \\boxed{1}.", True),
    ("x=1, x=-2", "\\boxed{x=1} or \\boxed{x=-2}", True),
    ("(1,2), (3,4)", "The solutions are \\boxed{(1,2)} and \\boxed{(3,4)}.", True),
    ("3, 5, 7", "\\boxed{3}, \\boxed{5}, and \\boxed{7}", True),
    ("1, -2", "So $x = \\boxed{1}$ and $x = \\boxed{2}$.", False),
    ("1, -2", "\\boxed{1}", False),  # half of the answer
    ("-2", "So $x = \\boxed{1}$ and $x = \\boxed{-2}$.", False),  # two roots are not the one root asked for
    ("4", "\\boxed{3} at first, then \\boxed{4} after checking.", True),  # boxes apart: a revision
    ("3", "\\boxed{3} at first, then \\boxed{4} after checking.", False),
]
SENTENCE_ANSWERS = [  # lm-eval's number extraction and Qwen2.5-Math read the number a sentence states
    ("3", "Answer: She needs 3 more.", True),
    ("3", "Final Answer: Jane started 3 hours ago.", True),
    ("1200", "Answer: The farm sells 1,200 eggs a week.", True),
    ("12", "Answer: 12 apples", True),
    ("4", "Answer: She needs 3 more.", False),
    ("3", "Answer: She needs 3 more, 5 in all.", False),  # two numbers: no single statement
]
SPACED_THOUSANDS = [
    ("1000", "\\boxed{1 000}", True),
    ("1000", "\\boxed{1\\,000}", True),
    ("2500000", "\\boxed{2\\,500\\,000}", True),
    ("1000", "\\boxed{10 00}", False),
    ("1000", "\\boxed{1 0000}", False),
]
LOOSE_CHOICES = [  # lm-eval's flexible extraction: a letter standing alone, in either case
    ("B", "The first option ignores friction, therefore I think it's B", True),
    ("B", "b", True),
    ("B", "Answer: b.", True),
    ("B", "Because B is valid, the others follow.", True),
    ("B", "Option (A) ignores the boundary and (D) has the wrong units.\nSo it must be B.", True),
    ("B", "B is wrong, so it is C.", False),
    ("B", "I cannot decide between B and C.", False),
    ("B", "The answer is a bit subtle.", False),
    ("A", "A farmer would say otherwise.", False),
]


@pytest.mark.parametrize("reference, text, correct", SPLIT_OVER_BOXES + SENTENCE_ANSWERS + SPACED_THOUSANDS)
def test_math_answers_the_field_accepts(reference, text, correct):
    assert grade_math(reference, text)["correct"] is correct


@pytest.mark.parametrize("reference, text, correct", [c for c in SENTENCE_ANSWERS + SPACED_THOUSANDS
                                                      if c[0].isdigit()])
def test_integer_answers_the_field_accepts(reference, text, correct):
    assert grade_integer(reference, text)["correct"] is correct


@pytest.mark.parametrize("reference, text, correct", LOOSE_CHOICES)
def test_choice_letters_the_field_accepts(reference, text, correct):
    assert grade_choice(reference, text)["correct"] is correct
