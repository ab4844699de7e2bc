"""What software and hardware produced a reading: the project's commit, the package versions, the machine.

`environment()` is cheap (no model is touched) and plain JSON, so a sweep records it once in its parent
run and again in every trial, whose process may sit on another node. `reading_changes(old, new)` names
what differs between two records in a way that can move readings, which `safetytax sweep --resume`
refuses unless told otherwise.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

PROJECT = "safetytax"
# Packages whose version can move a reading: the model's numerics, training, generation, grading, judging.
PACKAGES = ("torch", "transformers", "peft", "ray", "optuna", "mlflow", "math-verify", "datasets", "vllm")
# The subset whose change refuses a resume: a different version may train, generate or grade differently.
READING_PACKAGES = ("torch", "transformers", "peft", "math-verify", "vllm")


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Return {package: installed version, or None when it is not installed}."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _git(args: list[str], where: Path) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=where, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def source_revision() -> dict[str, Any]:
    """Return the project's version, and its git commit and dirty flag when it runs from a checkout."""
    checkout = Path(__file__).resolve().parents[1]
    revision: dict[str, Any] = {"version": package_versions((PROJECT,))[PROJECT], "commit": None, "dirty": None}
    if (checkout / ".git").exists():
        revision["commit"] = _git(["rev-parse", "HEAD"], checkout)
        status = _git(["status", "--porcelain", "--untracked-files=no"], checkout)
        revision["dirty"] = None if status is None else bool(status)
    return revision


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpus() -> dict[str, Any] | None:
    # torch is imported by every caller already; no CUDA, no GPU entry.
    import torch

    if not torch.cuda.is_available():
        return None
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    driver = None
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=10)
        driver = done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"model": names[0] if len(set(names)) == 1 else names, "count": len(names), "driver": driver,
            "cuda": torch.version.cuda}


def environment() -> dict[str, Any]:
    """Return the software and hardware of this process: project revision, Python, OS, CPU, GPU, packages."""
    return {"project": source_revision(), "python": platform.python_version(),
            "os": platform.platform(), "cpu": _cpu_model(), "cpu_count": os.cpu_count(), "gpu": _gpus(),
            "packages": package_versions(), "executable": sys.executable}


def summary(environment_record: dict[str, Any]) -> str:
    """Return one line: the project's revision, the versions that move readings, and the hardware."""
    project = environment_record.get("project", {})
    commit = project.get("commit")
    revision = f"{PROJECT} {project.get('version')}"
    if commit:
        revision += f" ({commit[:10]}{', uncommitted changes' if project.get('dirty') else ''})"
    packages = environment_record.get("packages", {})
    versions = ", ".join(f"{name} {packages[name]}" for name in ("torch", "transformers", "peft", "vllm")
                         if packages.get(name))
    gpu = environment_record.get("gpu")
    hardware = (f"{gpu['count']}x {gpu['model']}" if gpu else f"CPU {environment_record.get('cpu')}")
    return f"{revision}; {versions}; {hardware}"


def reading_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Return 'what: old -> new' for each difference between two environments that can move a reading."""
    changes = []
    old_packages, new_packages = old.get("packages", {}), new.get("packages", {})
    for name in READING_PACKAGES:
        if old_packages.get(name) != new_packages.get(name):
            changes.append(f"{name}: {old_packages.get(name)} -> {new_packages.get(name)}")
    return changes
