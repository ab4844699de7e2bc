"""Reply planning (prefill, budget forcing) and the transformers engine, without Ray."""

from __future__ import annotations

import pytest

from evaluators.config import EvalConfig, GenerationSettings
from evaluators.generation import END_OF_TURN, Completion, ReplyPlanner
from trainables.formats import FORMATS
from trainables.schema import ConfigError, build

S1 = FORMATS["s1"]
ANSWER_STOP = "<|im_start|>answer"


def test_prompt_is_the_chat_template_plus_the_thinking_prefill(char_tokenizer):
    planner = ReplyPlanner(GenerationSettings(max_new_tokens=50), char_tokenizer)
    reply, request = planner.start("What is 1 + 2?", model=None)
    assert request["prompt"] == "<|im_start|>user\nWhat is 1 + 2?<|im_end|>\n<|im_start|>assistant\n<|im_start|>think\n"
    assert request["max_tokens"] == 50 and request["stop"] == [END_OF_TURN]
    assert planner.advance(reply, Completion("2+1=3\n<|im_start|>answer\nAnswer: 3", "stop", None, 30)) is None
    assert reply.output.startswith("<|im_start|>think\n") and S1.split(reply.output)[1] == "Answer: 3"


def test_no_prefill_leaves_the_reply_to_the_model(char_tokenizer):
    planner = ReplyPlanner(GenerationSettings(thinking_prefill=False), char_tokenizer)
    _, request = planner.start("hi", model="adapter-a")
    assert request["prompt"].endswith("<|im_start|>assistant\n") and request["model"] == "adapter-a"


def test_spent_thinking_budget_forces_the_answer_marker_and_continues(char_tokenizer):
    planner = ReplyPlanner(GenerationSettings(max_new_tokens=40, thinking_budget=10), char_tokenizer)
    reply, first = planner.start("What is 1 + 2?", model=None)
    assert first["max_tokens"] == 10 and first["stop"] == [ANSWER_STOP, END_OF_TURN]
    second = planner.advance(reply, Completion("1+2=3 so o", "length", None, 10))
    assert second["prompt"] == first["prompt"] + "1+2=3 so o" + S1.think_close
    assert second["max_tokens"] == 30 and second["stop"] == [END_OF_TURN]
    assert planner.advance(reply, Completion("Answer: 3", "stop", None, 9)) is None
    assert S1.split(reply.output) == ("1+2=3 so o", "Answer: 3")


def test_thinking_closed_by_the_model_continues_into_the_answer(char_tokenizer):
    planner = ReplyPlanner(GenerationSettings(max_new_tokens=40, thinking_budget=10), char_tokenizer)
    reply, _ = planner.start("q", model=None)
    second = planner.advance(reply, Completion("done\n", "stop", ANSWER_STOP, 5))
    assert second["prompt"].endswith("done\n<|im_start|>answer\n") and second["max_tokens"] == 35


def test_a_turn_ended_inside_the_thinking_is_still_forced_to_answer(char_tokenizer):
    planner = ReplyPlanner(GenerationSettings(max_new_tokens=40, thinking_budget=10), char_tokenizer)
    reply, _ = planner.start("q", model=None)
    second = planner.advance(reply, Completion("hmm", "stop", None, 4))
    assert second["prompt"].endswith("hmm<|im_start|>answer\n") and second["max_tokens"] == 36


def test_r1_budget_forcing_writes_the_think_close(char_tokenizer):
    planner = ReplyPlanner(GenerationSettings(max_new_tokens=20, thinking_budget=5, reasoning_format="r1"),
                           char_tokenizer)
    reply, first = planner.start("q", model=None)
    assert first["prompt"].endswith("<think>\n") and first["stop"][0] == "</think>"
    planner.advance(reply, Completion("abcde", "length", None, 5))
    planner.advance(reply, Completion("42", "stop", None, 3))
    assert reply.output == "<think>\nabcde\n</think>\n\n42" and FORMATS["r1"].split(reply.output)[1] == "42"


def test_a_budget_that_uses_every_token_ends_the_reply(char_tokenizer):
    planner = ReplyPlanner(GenerationSettings(max_new_tokens=8, thinking_budget=8), char_tokenizer)
    reply, _ = planner.start("q", model=None)
    assert planner.advance(reply, Completion("x" * 8, "length", None, 8)) is None
    assert reply.output.endswith(S1.think_close)


@pytest.mark.parametrize("key, value", [("max_new_tokens", 0), ("temperature", -1.0), ("reasoning_format", "o1"),
                                        ("thinking_budget", 0)])
def test_bad_generation_settings_name_the_field(key, value):
    with pytest.raises(ConfigError, match=f"generation.{key}"):
        build(EvalConfig, {"generation": {key: value}})


def test_unknown_config_keys_are_errors():
    with pytest.raises(ConfigError, match="max_batch: unknown key"):
        build(EvalConfig, {"max_batch": 4})


# ---- the transformers engine, without Serve ----------------------------------------------------

@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    from evaluators.transformers_backend import TransformersEngine

    return TransformersEngine(str(tiny_model_dir))


def test_engine_cuts_at_stop_strings_and_reports_why(engine, char_tokenizer):
    prompt = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    free = engine.generate([{"prompt": prompt, "max_tokens": 12}])[0]["choices"][0]
    assert free["finish_reason"] == "length" and len(free["text"]) == 12  # one token per character
    stop = free["text"][3:5]
    cut = engine.generate([{"prompt": prompt, "max_tokens": 12, "stop": [stop]}])[0]
    choice = cut["choices"][0]
    assert choice["text"] == free["text"][: free["text"].index(stop)]
    assert choice["finish_reason"] == "stop" and choice["stop_reason"] == stop
    assert cut["usage"]["completion_tokens"] == len(choice["text"])


def test_engine_returns_a_bad_adapter_error_to_its_group_only(engine, tmp_path):
    prompt = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    good, bad = engine.generate([{"prompt": prompt, "max_tokens": 3},
                                 {"prompt": prompt, "max_tokens": 3, "model": str(tmp_path)}])
    assert good["choices"][0]["finish_reason"] == "length"
    assert isinstance(bad, ValueError) and "not a peft adapter folder" in str(bad)


def test_stop_strings_in_the_prompt_do_not_stop_the_reply(engine):
    prompt = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    free = engine.generate([{"prompt": prompt, "max_tokens": 12}])[0]["choices"][0]["text"]
    # "assistant" ends the prompt; a stop string matching there must not end the reply at once.
    reply = engine.generate([{"prompt": prompt, "max_tokens": 12, "stop": ["assistant\n"]}])[0]["choices"][0]
    assert reply["text"] == free and reply["finish_reason"] == "length"
