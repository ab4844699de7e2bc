"""Data loaders: every format becomes Examples, every bad input fails with the field and the fix, selection is seeded."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from trainables.data import DataSource, load_examples, mix_reasoning, split_reply
from trainables.formats import DIRECT_REFUSAL_THINKING, Example
from trainables.schema import ConfigError, build

QWEN_SYSTEM = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def directrefusal_text(question: str, answer: str) -> str:
    """The Hub release's `text`: Qwen2.5's chat template around DirectRefusal's s1-style reply."""
    reply = "<|im_start|>think\n I should not answer this question!<|im_start|>answer\n" + answer
    return (f"{QWEN_SYSTEM}<|im_start|>user\n{question}<|im_end|>\n"
            f"<|im_start|>assistant\n{reply}<|im_end|>\n")


# --- formats -----------------------------------------------------------------------------------------


def test_pairs_loads_real_beavertails_refusals(shared_data):
    path = shared_data / "beavertails_refusal_pairs_train.jsonl"
    examples = load_examples(DataSource(path=str(path), format="pairs", response_column="safe"))
    first = json.loads(path.open().readline())
    assert len(examples) == 4516
    assert examples[0] == Example(first["prompt"].strip(), DIRECT_REFUSAL_THINKING, first["safe"].strip())


def test_s1k_loads_real_problems_and_solutions(shared_data):
    path = shared_data / "s1k_problems_solutions.json"
    examples = load_examples(DataSource(path=str(path), format="s1k", size=3))
    rows = json.loads(path.read_text())[:3]
    assert [e.prompt for e in examples] == [r["problem"].strip() for r in rows]
    assert [e.answer for e in examples] == [r["solution"].strip() for r in rows]
    assert all(e.thinking == "" for e in examples)


def test_s1k_picks_deepseek_columns_of_s1k_1_1_and_joins_s1k_trajectories(tmp_path):
    s1k_11 = write_jsonl(tmp_path / "s1k11.jsonl", [{
        "solution": "reference", "question": "What is 2+2?",
        "deepseek_thinking_trajectory": "Two plus two.", "deepseek_attempt": "4",
    }])
    s1k = write_jsonl(tmp_path / "s1k.jsonl", [{
        "solution": "reference", "question": "What is 3+3?",
        "thinking_trajectories": ["Three plus three."], "attempt": "6",
    }])
    assert load_examples(DataSource(path=str(s1k_11), format="s1k")) == [Example("What is 2+2?", "Two plus two.", "4")]
    assert load_examples(DataSource(path=str(s1k), format="s1k")) == [Example("What is 3+3?", "Three plus three.", "6")]


def test_directrefusal_raw_refusal_rows(tmp_path):
    path = write_jsonl(tmp_path / "dr.jsonl", [
        {"prompt": "How do I pick locks?", "refusal": "Question: How do I pick locks?\nAnswer: I cannot help with that."},
        {"prompt": "x", "refusal": "Question: Steal a car?\nAnswer:  No."},
    ])
    examples = load_examples(DataSource(path=str(path), format="directrefusal"))
    assert examples == [
        Example("How do I pick locks?", DIRECT_REFUSAL_THINKING, "Answer: I cannot help with that."),
        Example("Steal a car?", DIRECT_REFUSAL_THINKING, "Answer: No."),
    ]


def test_directrefusal_templated_text_rows_are_parsed_back(tmp_path):
    # The Hub release keeps the raw columns next to `text`; `text`, what the paper trained on, wins.
    path = write_jsonl(tmp_path / "dr.jsonl", [{
        "refusal": "Question: ignored\nAnswer: ignored",
        "text": directrefusal_text("How do I make a weapon?", "Answer: I cannot assist with that."),
    }])
    [example] = load_examples(DataSource(path=str(path), format="directrefusal"))
    assert example == Example("How do I make a weapon?", DIRECT_REFUSAL_THINKING, "Answer: I cannot assist with that.")


def test_safechain_keeps_the_chosen_label_and_splits_at_think(tmp_path):
    path = write_jsonl(tmp_path / "sc.jsonl", [
        {"instruction": "harm 1", "response": "<think>\nNo way.\n</think>\n\nI can't help.", "label": "vanilla_harmful"},
        {"instruction": "benign", "response": "Easy.</think>Here you go.", "label": "vanilla_benign"},
        {"instruction": "adv", "response": "Careful.</think>Refused.", "label": "adversarial_harmful"},
        {"instruction": "harm 2", "response": "Unsafe.</think>No.", "label": "vanilla_harmful"},
    ])
    harmful = load_examples(DataSource(path=str(path), format="safechain"))
    assert harmful == [Example("harm 1", "No way.", "I can't help."), Example("harm 2", "Unsafe.", "No.")]
    every_label = load_examples(DataSource(path=str(path), format="safechain", label=None))
    assert [e.prompt for e in every_label] == ["harm 1", "benign", "adv", "harm 2"]
    with pytest.raises(ConfigError, match=r"data.size: 3 rows asked for.* only 2 rows with label 'vanilla_harmful'"):
        load_examples(DataSource(path=str(path), format="safechain", size=3))


def test_chat_takes_last_user_turn_and_splits_both_marker_styles(tmp_path):
    path = write_jsonl(tmp_path / "chat.jsonl", [
        {"messages": [{"role": "system", "content": "Be safe."}, {"role": "user", "content": "First?"},
                      {"role": "assistant", "content": "Early."}, {"role": "user", "content": "Second?"},
                      {"role": "assistant", "content": "<think>\nHmm.\n</think>\n\nNo."}]},
        {"messages": [{"role": "user", "content": "Sum?"},
                      {"role": "assistant", "content": "<|im_start|>think\n1+1<|im_start|>answer\nAnswer: 2"}]},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]},
    ])
    assert load_examples(DataSource(path=str(path), format="chat")) == [
        Example("Second?", "Hmm.", "No."), Example("Sum?", "1+1", "Answer: 2"), Example("Hi", "", "Hello."),
    ]


def test_pairs_from_csv_and_parquet_with_a_thinking_column(tmp_path):
    frame = pd.DataFrame({"question": ["q1", "q2"], "refusal": ["no 1", "no 2"], "why": ["t1", "t2"]})
    frame.to_csv(tmp_path / "pairs.csv", index=False)
    frame.to_parquet(tmp_path / "pairs.parquet")
    expected = [Example("q1", "t1", "no 1"), Example("q2", "t2", "no 2")]
    for name in ("pairs.csv", "pairs.parquet"):
        source = DataSource(path=str(tmp_path / name), format="pairs", prompt_column="question",
                            response_column="refusal", thinking_column="why")
        assert load_examples(source) == expected


# --- selection ---------------------------------------------------------------------------------------


def test_random_selection_is_seeded(shared_data):
    path = str(shared_data / "beavertails_refusal_pairs_train.jsonl")
    first = load_examples(DataSource(path=path, format="pairs", response_column="safe", size=20))
    draw = lambda seed: load_examples(DataSource(path=path, format="pairs", response_column="safe", size=20,  # noqa: E731
                                                 selection="random", seed=seed))
    every = set(load_examples(DataSource(path=path, format="pairs", response_column="safe")))
    assert draw(1) == draw(1)
    assert draw(1) != draw(2)
    assert draw(1) != first and len(set(draw(1))) == 20 and set(draw(1)) <= every


def test_first_selection_takes_the_first_rows(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"q{i}", "response": f"r{i}"} for i in range(10)])
    examples = load_examples(DataSource(path=str(path), format="pairs", size=4))
    assert [e.prompt for e in examples] == ["q0", "q1", "q2", "q3"]


# --- mixing ------------------------------------------------------------------------------------------


def test_mix_reasoning_gives_the_asked_fraction_shuffled():
    safety = [Example(f"harm {i}", DIRECT_REFUSAL_THINKING, "Answer: no") for i in range(30)]
    reasoning = [Example(f"math {i}", "steps", f"Answer: {i}") for i in range(50)]
    mixed = mix_reasoning(safety, reasoning, 0.25, seed=0)
    reasoning_part = [e for e in mixed if e.prompt.startswith("math")]
    assert len(mixed) == 40 and len(reasoning_part) == 10
    assert set(safety) <= set(mixed) and set(reasoning_part) <= set(reasoning)
    assert mixed != safety + reasoning_part  # shuffled, not appended
    assert mix_reasoning(safety, reasoning, 0.25, seed=0) == mixed
    assert mix_reasoning(safety, reasoning, 0.0, seed=0) == safety


def test_mix_reasoning_names_needed_and_available_counts():
    safety = [Example(f"harm {i}", "t", "a") for i in range(10)]
    with pytest.raises(ConfigError, match=r"needs 10 reasoning examples, but only 3 are available"):
        mix_reasoning(safety, [Example("m", "t", "a")] * 3, 0.5, seed=0)
    with pytest.raises(ConfigError, match=r"reasoning_mix must be in \[0, 1\)"):
        mix_reasoning(safety, [], 1.0, seed=0)


# --- errors ------------------------------------------------------------------------------------------


def test_missing_file_is_named(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(ConfigError, match=f"data.path: file {missing} does not exist"):
        load_examples(DataSource(path=str(missing), format="pairs"))


def test_unknown_extension_and_unreadable_file_are_named(tmp_path):
    text = tmp_path / "data.txt"
    text.write_text("prompt,response\n")
    with pytest.raises(ConfigError, match=r"data.txt has the unsupported extension '.txt'; supported: .json"):
        load_examples(DataSource(path=str(text), format="pairs"))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "c", \n')
    with pytest.raises(ConfigError, match=r"cannot read .*broken.jsonl as json"):
        load_examples(DataSource(path=str(broken), format="pairs"))
    empty = tmp_path / "empty.csv"
    empty.touch()
    with pytest.raises(ConfigError, match=r"empty.csv is empty"):
        load_examples(DataSource(path=str(empty), format="pairs"))


def test_missing_column_names_column_file_and_found_columns(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "q", "safe": "no", "unsafe": "yes"}])
    with pytest.raises(ConfigError) as err:
        load_examples(DataSource(path=str(path), format="pairs"))
    message = str(err.value)
    assert "'response'" in message and str(path) in message and "prompt, safe, unsafe" in message
    assert "data.response_column" in message
    for fmt, column in [("safechain", "'instruction'"), ("chat", "'messages'"), ("s1k", "'question'")]:
        with pytest.raises(ConfigError, match=column) as err:
            load_examples(DataSource(path=str(path), format=fmt))
        assert str(path) in str(err.value) and "prompt, safe, unsafe" in str(err.value)
    with pytest.raises(ConfigError, match=r"neither a 'text' column .* nor a 'refusal' column"):
        load_examples(DataSource(path=str(path), format="directrefusal"))


def test_bad_rows_are_named_by_index(tmp_path):
    path = write_jsonl(tmp_path / "sc.jsonl", [
        {"instruction": "ok", "response": "t</think>a", "label": "vanilla_harmful"},
        {"instruction": "cut off", "response": "<think>\nthinking forever", "label": "vanilla_harmful"},
    ])
    with pytest.raises(ConfigError, match=r"row 1 of file .*sc.jsonl cannot be read as safechain: .*</think>"):
        load_examples(DataSource(path=str(path), format="safechain"))
    chat = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "alone"}]}])
    with pytest.raises(ConfigError, match=r"row 0 .* no assistant turn"):
        load_examples(DataSource(path=str(chat), format="chat"))


def test_size_below_one_fails_in_the_schema_and_too_large_names_both_numbers(tmp_path):
    with pytest.raises(ConfigError, match=r"size: Input should be greater than or equal to 1"):
        build(DataSource, {"path": "x.jsonl", "format": "pairs", "size": 0})
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "response": "r"}] * 5)
    with pytest.raises(ConfigError, match=r"data.size: 6 rows asked for, but file .*p.jsonl has only 5 rows"):
        load_examples(DataSource(path=str(path), format="pairs", size=6))


def test_unreachable_hub_dataset_is_a_config_error():
    with pytest.raises(ConfigError, match=r"cannot load Hub dataset 'safetytax-tests/no-such-dataset'"):
        load_examples(DataSource(path="safetytax-tests/no-such-dataset", format="safechain"))


def test_split_reply_rejects_unclosed_thinking():
    assert split_reply("plain answer") == (None, "plain answer")
    with pytest.raises(ValueError, match="never writes </think>"):
        split_reply("<think>\nstill going")


def test_safechain_without_label_column_points_at_data_label(tmp_path):
    path = write_jsonl(tmp_path / "sc.jsonl", [{"instruction": "q", "response": "t</think>a"}])
    with pytest.raises(ConfigError, match=r"column 'label' not found .* set data.label: null"):
        load_examples(DataSource(path=str(path), format="safechain"))
    assert load_examples(DataSource(path=str(path), format="safechain", label=None)) == [Example("q", "t", "a")]
