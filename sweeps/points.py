"""A sampled point of the search and the AlignConfig it gives: the paths it may name, its bundles, and the config.

Every searched path must exist in AlignConfig, and a point's values are set on the base config and
validated again, so the config a trial trains with is one the schema accepts.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from sweeps.params import ParamSpec
from trainables.config import AlignConfig
from trainables.schema import ConfigError, NotASection, build, section_model, set_path


def check_path(path: str, model: type[BaseModel] = AlignConfig) -> None:
    """Return None when `path` names a field of `model`; raise ConfigError naming the path otherwise."""
    parts = path.split(".")
    current: type[BaseModel] | None = model
    for depth, part in enumerate(parts):
        so_far = ".".join(parts[: depth + 1])
        if current is None:
            raise ConfigError(f"search_space.{path}: {'.'.join(parts[:depth])} is not a section, so it has no "
                              f"field {part!r}")
        if part not in current.model_fields:
            known = ", ".join(current.model_fields)
            raise ConfigError(f"search_space.{path}: {so_far} is not an AlignConfig field (known here: {known})")
        current = section_model(current.model_fields[part].annotation)
    if current is not None:
        raise ConfigError(f"search_space.{path}: {path} is a whole section; search one of its fields "
                          f"({', '.join(current.model_fields)})")


def expand_point(space: dict[str, ParamSpec], point: dict[str, Any]) -> dict[str, Any]:
    """Return a sampled point with each bundle's name replaced by its fields, sections before their fields.

    `{data: safechain, data.size: 30}` becomes `{data.path: ..., data.format: safechain, data.size: 30}`.
    """
    out: dict[str, Any] = {}
    for path in sorted(point, key=lambda p: p.count(".")):
        bundles = space[path].bundles if path in space else None
        if bundles is None:
            out[path] = point[path]
        else:
            out.update({f"{path}.{field}": value for field, value in bundles[point[path]].items()})
    return out


def apply_point(base: AlignConfig | dict[str, Any], point: dict[str, Any],
                space: dict[str, ParamSpec] | None = None) -> AlignConfig:
    """Return the base AlignConfig (or its data) with each sampled `dotted.path: value` set, bundles of `space`
    expanded, validated again; ConfigError names the path or the value that makes it invalid."""
    data = base.model_dump(mode="json") if isinstance(base, AlignConfig) else base
    for path, value in expand_point(space or {}, point).items():
        try:
            data = set_path(data, path, value)
        except NotASection as err:
            raise ConfigError(f"search_space.{path}: base.{err.where} is not set, so {path} cannot be searched; "
                              f"give base.{err.where} first") from None
    shown = ", ".join(f"{path}={value!r}" for path, value in point.items())
    return build(AlignConfig, data, source=f"(base with {shown})")
