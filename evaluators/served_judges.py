"""Judges hosted in Serve, and the caller's side of them.

A judge is either a deployment of its own (`JudgeServer`, e.g. beaver-dam on a GPU, held for the whole
sweep and sent (prompt, reply) pairs in chunks by `ServedJudge`), or a generator deployment of its model
that is sent chat prompts (`guard_requests`, Llama Guard) and whose replies the judge parses.
"""

from __future__ import annotations

from ray import serve

from evaluators.config import EvalConfig
from evaluators.dispatch import HandleCall, complete_all
from evaluators.judges import LLAMA_GUARD_GENERATION, get_judge

JUDGE_CHUNK = 64  # pairs per request to a served judge, which batches them itself


class ServedJudge:
    """The caller's side of a judge hosted in Serve: sends pairs in chunks, with the same retries."""

    def __init__(self, name: str, app_name: str, cfg: EvalConfig):
        self.name, self.app_name, self.cfg = name, app_name, cfg

    def judge(self, prompts: list[str], responses: list[str]) -> list:
        handle = serve.get_app_handle(self.app_name)
        chunks = [(prompts[i:i + JUDGE_CHUNK], responses[i:i + JUDGE_CHUNK])
                  for i in range(0, len(prompts), JUDGE_CHUNK)]
        verdicts: list[list] = [[] for _ in chunks]

        def record(i: int, response: list) -> None:
            verdicts[i] = response

        complete_all(lambda chunk: HandleCall(handle.judge.remote(*chunk)), chunks, record, window=4,
                     timeout_s=self.cfg.request_timeout_s, max_retries=self.cfg.max_retries, what=f"judge {self.name}")
        return [verdict for chunk in verdicts for verdict in chunk]


@serve.deployment
class JudgeServer:
    """Hosts one judge (e.g. beaver-dam on a GPU) for every trial of a sweep."""

    def __init__(self, name: str, options: dict):
        self.judge_model = get_judge(name, **options)

    def judge(self, prompts: list[str], responses: list[str]) -> list:
        """Return the judge's verdicts for the pairs."""
        return self.judge_model.judge(prompts, responses)


def guard_requests(tokenizer, chats: list[list[dict]]) -> list[dict]:
    """Return one completion request per chat, in the guard model's chat template and its greedy settings."""
    return [{"model": None, "prompt": tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True),
             "top_p": 1.0, "stop": [], "seed": 0, **LLAMA_GUARD_GENERATION} for chat in chats]
