"""Typed config machinery shared by every layer: strict models, YAML loading and key=value overrides.

Every config in the project is a pydantic model built on `Strict`, so an unknown key, a wrong type
or an impossible value fails before Ray starts, with the dotted path of the field in the message.
"""

from __future__ import annotations

import copy
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """Bad user input: a config field, a data file or a model path. The CLI exits 2 on it."""


class RunFailure(RuntimeError):
    """The input was fine but the run failed in a way the user can act on; the CLI exits 1 with the message."""


class Strict(BaseModel):
    """Base for all configs: unknown keys are errors, and assignments are validated too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def _shown(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _origin(path: list[str], overrides: list[str], source: str) -> str:
    """Return where the value at `path` came from: the last override that set it or a section above it, else the file."""
    for item in reversed(overrides):
        key = item.partition("=")[0].split(".")
        if path[:len(key)] == key or key[:len(path)] == path:
            return f"from the override {item}"
    return f"in {source}"


def _format_validation_error(err: ValidationError, source: str, overrides: list[str] = ()) -> str:
    lines = []
    for item in err.errors():
        parts = [str(p) for p in item["loc"]]
        path = ".".join(parts) or "<root>"
        origin = _origin(parts, list(overrides), source)
        if item["type"] == "extra_forbidden":
            lines.append(f"{path}: unknown key, {origin} (check its spelling against `--help` or the README)")
        elif item["type"] == "missing":
            lines.append(f"{path}: {item['msg']}; set it {'in ' + source if origin.startswith('in ') else origin}")
        else:
            lines.append(f"{path}: {item['msg']}; got {_shown(item.get('input'))} {origin}")
    return f"invalid config {source}:\n  " + "\n  ".join(lines)


def build(model: type[M], data: dict[str, Any], source: str = "", overrides: list[str] = ()) -> M:
    """Return `model` built from `data`, or raise ConfigError naming every bad field, its value and its source.

    `overrides` are the key=value items applied to `data`, so an error can say which one set a bad value.
    """
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source or f"({model.__name__})", overrides)) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Return the mapping in a YAML file, or raise ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at its top level")
    return data


class NotASection(ConfigError):
    """A dotted path runs through a key that holds no section; `where` is the dotted path up to that key."""

    def __init__(self, where: str):
        super().__init__(f"{where} is not a section")
        self.where = where


def set_path(data: dict[str, Any], path: str, value: Any, *, create_sections: bool = False) -> dict[str, Any]:
    """Return a copy of config data with the dotted `path` set to `value`.

    A section on the way that is absent (or null) is created with `create_sections`; otherwise, as for any
    key that holds no mapping, NotASection names it.
    """
    data = copy.deepcopy(data)
    node = data
    *parents, leaf = path.split(".")
    for depth, part in enumerate(parents):
        if node.get(part) is None and create_sections:
            node[part] = {}
        if not isinstance(node.get(part), dict):
            raise NotASection(".".join(parents[: depth + 1]))
        node = node[part]
    node[leaf] = value
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `data` with each `dotted.key=value` applied; values are parsed as YAML."""
    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value, e.g. train.learning_rate=1e-4")
        value = yaml.safe_load(raw) if raw else None
        try:
            data = set_path(data, key, value, create_sections=True)
        except NotASection as err:
            raise ConfigError(f"override {item!r}: {err.where.rsplit('.', 1)[-1]} is not a section") from None
    return data


def load(model: type[M], path: str | Path | None, overrides: list[str] = (), base: dict | None = None) -> M:
    """Return `model` from a YAML file (or `base`) with overrides applied, validated."""
    data = read_yaml(path) if path else copy.deepcopy(base or {})
    data = apply_overrides(data, list(overrides))
    return build(model, data, source=str(path) if path else "(defaults)", overrides=list(overrides))


def section_model(annotation: Any, *, inside_containers: bool = False) -> type[BaseModel] | None:
    """Return the config model a field's annotation holds (`Model`, or `Model | None`), or None when it holds
    none, or more than one. With `inside_containers`, a model held in a list or dict (`list[Model]`,
    `dict[str, Model]`) counts too: the reference documents its fields, but a dotted path cannot enter it."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    candidates = (annotation, *typing.get_args(annotation)) if union or inside_containers else (annotation,)
    models = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
    return models[0] if len(models) == 1 else None


def field_help(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str]]:
    """Return (dotted key, default, help) for every field of `model`, nested sections included."""
    rows = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        nested = section_model(info.annotation, inside_containers=True)
        if nested is not None:
            rows.extend(field_help(nested, key + "."))
            continue
        default = "(required)" if info.is_required() else repr(info.get_default(call_default_factory=True))
        rows.append((key, default, info.description or ""))
    return rows
