"""The searched fields of a sweep: how Optuna samples each one, bundles of fields that change together, and grids."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ConfigDict, Field, model_validator

from trainables.schema import Strict


PARAM_KINDS = ("choice", "loguniform", "uniform", "int")


BUNDLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ParamSpec(Strict):
    """How Optuna samples one AlignConfig field: exactly one of choice, loguniform, uniform or int."""

    choice: list[Any] | dict[str, dict[str, Any]] | None = Field(
        None, min_length=1, description="Values to choose from (numbers, strings, booleans or null), or named "
        "bundles of fields that change together, e.g. data: {choice: {directrefusal: {path: ..., format: "
        "directrefusal}, safechain: {path: ..., format: safechain}}}: each bundle's fields are set under the "
        "searched path, and params, tables and plots show the bundle's name.")
    loguniform: tuple[float, float] | None = Field(None, description="[low, high]: a float sampled uniformly in "
                                                                     "log space; low > 0.")
    uniform: tuple[float, float] | None = Field(None, description="[low, high]: a float sampled uniformly.")
    int_range: tuple[int, int] | None = Field(None, alias="int", description="[low, high]: an integer sampled "
                                                                             "uniformly, both ends included.")

    model_config = ConfigDict(**Strict.model_config, validate_by_name=True)

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> "ParamSpec":
        given = [kind for kind in PARAM_KINDS if self.bounds_or_choices(kind) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(PARAM_KINDS)} (got {', '.join(given) or 'none'})")
        if isinstance(self.choice, dict):
            for name, fields in self.choice.items():
                if not BUNDLE_NAME.match(name):
                    raise ValueError(f"choice: bundle name {name!r} must be letters, digits, _ . - (it is shown "
                                     "in tables and MLflow)")
                if not fields:
                    raise ValueError(f"choice.{name}: a bundle sets at least one field")
        elif self.choice is not None:
            bad = [v for v in self.choice if v is not None and not isinstance(v, (bool, int, float, str))]
            if bad:
                raise ValueError(f"choice values must be numbers, strings, booleans or null; got {bad[0]!r} "
                                 "(fix a list-valued field in base instead of searching it)")
        else:
            low, high = self.bounds_or_choices(self.kind)
            if not low < high:
                raise ValueError(f"{self.kind}: low must be below high, got [{low}, {high}]")
            if self.kind == "loguniform" and low <= 0:
                raise ValueError(f"loguniform: low must be > 0, got {low}")
        return self

    def bounds_or_choices(self, kind: str) -> Any:
        return {"choice": self.choice, "loguniform": self.loguniform, "uniform": self.uniform,
                "int": self.int_range}[kind]

    @property
    def kind(self) -> str:
        return next(kind for kind in PARAM_KINDS if self.bounds_or_choices(kind) is not None)

    def rejects(self, value: Any) -> str | None:
        """Return why `value` is not one this parameter can take (a reason for an error message), or None."""
        if self.kind == "choice":
            names = list(self.choice)
            return None if any(value == v and type(value) is type(v) for v in names) else (
                f"{value!r} is not one of its choices ({', '.join(map(repr, names))})")
        low, high = self.bounds_or_choices(self.kind)
        number = (int,) if self.kind == "int" else (int, float)
        if isinstance(value, bool) or not isinstance(value, number):
            return f"{value!r} is not {'an integer' if self.kind == 'int' else 'a number'}"
        return None if low <= value <= high else f"{value!r} is outside its {self.kind} range [{low}, {high}]"

    def extremes(self) -> list[Any]:
        """Return the values that bound what can be sampled: every choice (a bundle's name), or both ends of the range."""
        return list(self.bounds_or_choices(self.kind))

    @property
    def bundles(self) -> dict[str, dict[str, Any]] | None:
        """Return {bundle name: {dotted field: value}} of a choice of bundles, or None for any other kind."""
        if not isinstance(self.choice, dict):
            return None
        return {name: _flatten_fields(fields) for name, fields in self.choice.items()}


def _flatten_fields(fields: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in fields.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten_fields(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def flatten_search_space(space: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Return `space` with nested mappings folded into dotted keys; a null entry (un-searched by an override) is dropped."""
    flat = {}
    for key, value in space.items():
        path = f"{prefix}{key}"
        if value is None:
            continue
        if isinstance(value, dict) and value and not any(k in PARAM_KINDS for k in value):
            flat.update(flatten_search_space(value, path + "."))
        else:
            flat[path] = value
    return flat


def nest_search_space(space: dict[str, Any]) -> dict[str, Any]:
    """Return `space` with dotted keys split into nested mappings, so `key=value` overrides merge into it."""
    nested: dict[str, Any] = {}
    for path, value in flatten_search_space(space).items():
        node = nested
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def discrete_points(space: dict[str, ParamSpec]) -> int | None:
    """Return the number of points of a space whose every field is a choice or int, or None when a range is a float."""
    if any(param.kind not in ("choice", "int") for param in space.values()):
        return None
    return grid_points(space)


def grid_points(space: dict[str, ParamSpec]) -> int:
    """Return the number of grid points; raise ValueError when a float range cannot be enumerated."""
    total = 1
    for path, param in space.items():
        if param.kind == "choice":
            total *= len(param.choice)
        elif param.kind == "int":
            total *= param.int_range[1] - param.int_range[0] + 1
        else:
            raise ValueError(f"search_space.{path}: the grid sampler needs choice or int values, not {param.kind}")
    return total
