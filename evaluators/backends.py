"""The generator backends, by name: each module builds its Serve app and sends that app a batch of requests.

A backend module exposes the same few things, and the service uses only these:

- `build_app(cfg, source)`: the Serve application that generates with the model at `source`;
- `make_sender(cfg, app_name, source, adapter)`: `send(request)` -> a pending call (see `dispatch`),
  which generates one completion request with `adapter` (or the bare model) on the app;
- `check_adapter(adapter)`: the adapter as the backend needs it, or ConfigError before any work;
- `LOADS_FROM_CLOUD`: whether it serves a model straight from a bucket URI;
- `for_this_machine(cfg)`: the config to run on this machine, and a note when it changed something.

Where a replica lands, and what it holds, is `evaluators.placement`'s knowledge, kept apart from the
backend modules so that the dry run reads it without importing torch or vLLM.
"""

from __future__ import annotations

import importlib
from types import ModuleType

BACKENDS = {"transformers": "evaluators.transformers_backend", "vllm": "evaluators.vllm_backend"}


def get_backend(name: str) -> ModuleType:
    """Return the backend module called `name` (imported on first use: transformers loads torch)."""
    return importlib.import_module(BACKENDS[name])
