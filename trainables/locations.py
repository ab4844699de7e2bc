"""The one place that decides what a model or data location is, and where it resolves to.

A location is one of four kinds:

- `tiny://NAME[?seed=N]`: the embedded default's model or generated data, in the tiny LRM's cache;
- a bucket URI (`s3://`, `gs://`, ...): a model that only the vLLM backend loads as it is;
- a local folder or file;
- a Hugging Face Hub id (`org/name`), read from the Hub or its offline cache.

Resolving never builds or downloads anything. A `tiny://` path whose model is not built yet is an error
that says how to build it; the entry points (`safetytax train`, `evaluate`, `sweep`) build what their
inputs name with `trainables.tiny.lrm.ensure_tiny_paths`, once, before Ray starts.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from trainables.schema import ConfigError
from trainables.tiny import cache

BUCKET_PREFIXES = ("s3://", "gs://", "abfss://", "azure://")
LOCAL_PATH_PREFIXES = ("/", "./", "../", "~")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Suffixes that mark a data path as a file even when it does not exist (so it is not sent to the Hub).
FILE_SUFFIXES = {".json", ".jsonl", ".csv", ".parquet", ".txt", ".tsv", ".gz", ".zip", ".arrow", ".xlsx", ".yaml",
                 ".yml"}

Kind = Literal["tiny", "bucket", "local", "hub"]


def is_tiny(location: str) -> bool:
    return location.startswith("tiny://")


def is_bucket(location: str) -> bool:
    return location.startswith(BUCKET_PREFIXES)


def model_kind(model: str) -> Kind:
    """Return the kind of a model location, from its spelling and what is on disk; nothing is opened."""
    if is_tiny(model):
        return "tiny"
    if is_bucket(model):
        return "bucket"
    path = Path(model).expanduser()
    if path.exists() or model.startswith(LOCAL_PATH_PREFIXES) or model.count("/") > 1:
        return "local"
    return "hub"  # org/name, or a legacy id without an org such as gpt2


def data_kind(path: str) -> Kind:
    """Return the kind of a data location: tiny, hub (an org/name id that is no file) or local."""
    if is_tiny(path):
        return "tiny"
    file = Path(path).expanduser()
    if HUB_ID.match(path) and not file.exists() and file.suffix.lower() not in FILE_SUFFIXES:
        return "hub"
    return "local"


def check_model_location(model: str) -> None:
    """Return None if `model` may name a model; raise ValueError for a malformed tiny path or a bad local folder.

    Cheap enough for config validation: it reads no weights and contacts nothing.
    """
    kind = model_kind(model)
    if kind == "tiny":
        try:
            name, _ = cache.parse_tiny_path(model)
        except ConfigError as err:
            raise ValueError(str(err)) from None
        if name != "lrm":
            raise ValueError(f"{model} is a data file; the tiny model is tiny://lrm (optionally ?seed=N)")
    elif kind == "local":
        path = Path(model).expanduser()
        if not path.is_dir():
            raise ValueError(f"model directory {path} does not exist")
        if not (path / "config.json").is_file():
            raise ValueError(f"model directory {path} has no config.json; point model at a Hugging Face "
                             "model folder (one written by save_pretrained)")


def tiny_ready(path: str) -> bool:
    """Return whether a `tiny://` path can be resolved now: the model built, or the data file written and current."""
    cache.parse_tiny_path(path)  # a malformed path is an error, not "not ready"
    try:
        _tiny_file(path)
    except ConfigError:
        return False
    return True


def _tiny_file(path: str) -> Path:
    name, seed = cache.parse_tiny_path(path)
    build = f"`python -m trainables.tiny.lrm --seed {seed}`"
    directory = cache.lrm_dir(seed)
    if name == "lrm":
        if not cache.is_built(seed):
            raise ConfigError(f"{path}: the tiny LRM of seed {seed} is not built yet. The safetytax commands build it "
                              f"before they start; to build it now, run {build} (a few minutes on 2 cores)")
        return directory / "model"
    # A generated data file is written in seconds, before the model: inputs are checked before any build.
    if not (directory / name).is_file():
        raise ConfigError(f"{path}: the tiny data of seed {seed} is not built yet. The safetytax commands write it "
                          f"before they start; to write it now, run {build}")
    if not cache.data_file_current(directory, name):
        raise ConfigError(f"{path}: the cached file was written by an older version of its generator; run {build} "
                          "to rewrite it (the model is kept)")
    return directory / name


def hub_offline(*, datasets: bool = False) -> bool:
    """Return True when the Hugging Face Hub must not be contacted: HF_HUB_OFFLINE is set (and, for datasets,
    HF_DATASETS_OFFLINE too), read at the call, as the Hub's own libraries read it at their import."""
    names = ("HF_HUB_OFFLINE", *(("HF_DATASETS_OFFLINE",) if datasets else ()))
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on") for name in names)


def resolve_model(model: str, *, bucket_ok: bool = False) -> str:
    """Return the model source to load: a local folder (absolute), a Hub id, or, with `bucket_ok`, a bucket URI.

    Raise ConfigError naming the model and the fix when it cannot be loaded from here.
    """
    kind = model_kind(model)
    if kind == "tiny":
        return str(_tiny_file(model))
    if kind == "bucket":
        if not bucket_ok:
            raise ConfigError(f"model {model}: only the vllm evaluation backend loads a model from a bucket; "
                              "copy it to a local folder, or evaluate with evaluation.backend: vllm")
        return model.rstrip("/")
    if kind == "local":
        try:
            check_model_location(model)
        except ValueError as err:
            raise ConfigError(f"model {model}: {err}; give a model folder or a Hugging Face hub id (org/name)") from None
        return str(Path(model).expanduser().resolve())
    from huggingface_hub import try_to_load_from_cache

    if hub_offline() and not isinstance(try_to_load_from_cache(model, "config.json"), str):
        raise ConfigError(f"model {model} is not a local folder, and HF_HUB_OFFLINE is set so it cannot be "
                          "downloaded; download it first or give a local path")
    return model


def resolve_data(path: str) -> str:
    """Return the data location to open: a `tiny://` path as its cached file, any other path as given."""
    return str(_tiny_file(path)) if is_tiny(path) else path


def mirror_small_files(uri: str, max_bytes: int = 50_000_000) -> str:
    """Return a local folder holding the files of cloud folder `uri` smaller than max_bytes (config, tokenizer).

    A caller reads the tokenizer of a model served straight from a bucket; the weights stay there.
    """
    import tempfile

    import pyarrow.fs

    try:
        filesystem, path = pyarrow.fs.FileSystem.from_uri(uri)
        infos = filesystem.get_file_info(pyarrow.fs.FileSelector(path, recursive=False))
    except OSError as err:
        raise ConfigError(f"model {uri}: cannot read the folder ({err}); check that the bucket exists and is "
                          "reachable (AWS_ENDPOINT_URL_S3 for an S3-compatible store)") from None
    local = Path(tempfile.mkdtemp(prefix="safetytax-model-files-"))
    for info in infos:
        if info.type == pyarrow.fs.FileType.File and info.size <= max_bytes:
            with filesystem.open_input_stream(info.path) as source:
                (local / info.base_name).write_bytes(source.read())
    if not (local / "config.json").is_file():
        raise ConfigError(f"model {uri}: the folder has no config.json; give a Hugging Face model folder")
    return str(local)
