"""What a run in Ray Train's local mode (`scaling.num_workers: 0`) needs that Ray Train does not give it there.

Local mode runs the loop in the calling process: no controller, no worker processes, so a short run
costs a fraction of a second on top of its steps, not the seconds a worker group takes to start. Two
things are then missing, and this module supplies them:

- Checkpoints in storage. Ray Train keeps only the last reported checkpoint object in local mode;
  nothing reaches the run's storage, and a restarted run is handed none. Here each checkpoint is copied
  to `{storage_path}/{run_name}/{name}`, the layout Ray Train gives a worker group's checkpoints, and a
  pointer file names the newest. It is written after the copy is complete, so a run killed mid-copy
  restarts from the checkpoint before, never from a partial one.
- Reports. Ray refuses `ray.train.report` and `ray.train.get_context` inside a Tune trial, which is
  where a sweep runs local mode. The loop gives its last report and checkpoint to a `LocalRun`, and
  returns them through Ray Train's `Result.return_value`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.fs
from ray.train import Checkpoint

LATEST_FILE = "latest_checkpoint.json"


def _run_location(storage_path: str, run_name: str) -> tuple[pyarrow.fs.FileSystem, str]:
    """Return (filesystem, path) of the run's folder: under s3://, gs://, or a local folder (absolute, as the
    config resolves it)."""
    return pyarrow.fs.FileSystem.from_uri(f"{storage_path.rstrip('/')}/{run_name}")


def persist(directory: str | Path, storage_path: str, run_name: str, name: str) -> Checkpoint:
    """Return the checkpoint of the local folder `directory` after copying it into the run's storage as `name`."""
    filesystem, run_path = _run_location(storage_path, run_name)
    target = f"{run_path}/{name}"
    # A restarted run saves some names again; what an interrupted copy left there goes first.
    filesystem.delete_dir_contents(target, missing_dir_ok=True)
    filesystem.create_dir(target, recursive=True)
    pyarrow.fs.copy_files(str(directory), target, source_filesystem=pyarrow.fs.LocalFileSystem(),
                          destination_filesystem=filesystem)
    pointer = json.dumps({"name": name}).encode()
    if isinstance(filesystem, pyarrow.fs.LocalFileSystem):
        partial = f"{run_path}/{LATEST_FILE}.partial"
        with filesystem.open_output_stream(partial) as stream:
            stream.write(pointer)
        filesystem.move(partial, f"{run_path}/{LATEST_FILE}")  # a rename: readers see the old or the new
    else:
        with filesystem.open_output_stream(f"{run_path}/{LATEST_FILE}") as stream:  # one object, put whole
            stream.write(pointer)
    return Checkpoint(path=target, filesystem=filesystem)


def latest(storage_path: str, run_name: str) -> Checkpoint | None:
    """Return the run's newest complete checkpoint in storage, or None when it has none."""
    filesystem, run_path = _run_location(storage_path, run_name)
    try:
        with filesystem.open_input_stream(f"{run_path}/{LATEST_FILE}") as stream:
            name = json.loads(stream.read())["name"]
    except FileNotFoundError:
        return None
    return Checkpoint(path=f"{run_path}/{name}", filesystem=filesystem)


@dataclass
class LocalRun:
    """The loop's side of a local-mode run: where its checkpoints go, and its last report."""

    storage_path: str
    run_name: str
    metrics: dict = field(default_factory=dict)
    checkpoint: Checkpoint | None = None

    def latest_checkpoint(self) -> Checkpoint | None:
        """Return the checkpoint a restarted run continues from, or None."""
        return latest(self.storage_path, self.run_name)

    def report(self, metrics: dict, directory: str | Path, name: str) -> None:
        """Keep `metrics` and the checkpoint in the local folder `directory`, copied to storage as `name`."""
        self.checkpoint = persist(directory, self.storage_path, self.run_name, name)
        self.metrics = metrics

    def outcome(self) -> dict:
        """Return what the loop hands back through Result.return_value: {"metrics": ..., "checkpoint": ...}.

        A run restarted from its final checkpoint trains and saves nothing; that checkpoint is its result,
        as Ray Train's is for a worker group.
        """
        return {"metrics": self.metrics, "checkpoint": self.checkpoint or self.latest_checkpoint()}
