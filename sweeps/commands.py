"""The `sweep` and `pareto` subcommands of `safetytax`.

`safetytax sweep [CONFIG] [key=value ...] [--resume] [--dry-run [--cluster FILE]]` runs a sweep file (the embedded
tiny.yaml when CONFIG is omitted), or with --dry-run only checks it and prints its plan; `safetytax
pareto` prints the front recorded in MLflow and the plot's path.
Bad input raises ConfigError, which the CLI turns into exit code 2 before Ray starts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sweeps.loader import TINY_SPEC, load_spec
from sweeps.report import describe_cheapest, describe_compute, describe_target, describe_time, front_table
from sweeps.spec import SweepSpec
from trainables.schema import ConfigError


def register(subparsers) -> None:
    """Add the `sweep` and `pareto` subcommands to the `safetytax` parser."""
    sweep = subparsers.add_parser(
        "sweep", help="Search safety-alignment settings with Ray Tune + Optuna; log the Pareto front to MLflow.",
        description="Run a sweep file. Without CONFIG, runs the embedded default (sweeps/tiny.yaml): the tiny "
                    "reasoning model's Safety Tax on a laptop CPU.")
    sweep.add_argument("items", nargs="*", metavar="[CONFIG] [key=value]",
                       help="A sweep YAML file (optional, first), then dotted overrides such as num_samples=4 or "
                            "search_space.train.epochs.int=[1,2].")
    sweep.add_argument("--resume", action="store_true",
                       help="Continue the interrupted sweep of the same name and storage_path: finished trials "
                            "are not run again and their MLflow runs are reused.")
    sweep.add_argument("--accept-changes", action="store_true",
                       help="With --resume: resume even though the environment changed in a way that can move "
                            "readings (torch, transformers, peft, math-verify or vllm; a benchmark's items; a judge; "
                            "the base model), and record the change in the sweep's run. Without it such a resume "
                            "is refused, naming what changed.")
    sweep.add_argument("--quiet", action="store_true", help="Print only one line per finished trial, not "
                                                            "Tune's live table.")
    sweep.add_argument("--dry-run", action="store_true",
                       help="Validate the sweep and print its trial plan and the resources each trial needs "
                            "(GPUs, memory, estimated GPU-hours) without starting or downloading anything.")
    sweep.add_argument("--cluster", metavar="FILE", default=None,
                       help="With --dry-run: a Ray cluster config (cluster.yaml, cluster.local.yaml); the plan "
                            "names the node types each trial's driver, Train workers and evaluator land on, and "
                            "those the autoscaler scales up from zero.")
    sweep.set_defaults(func=sweep_command, trailing_words="items")

    pareto = subparsers.add_parser(
        "pareto", help="Print a sweep's Pareto front from MLflow and the path of its plot.",
        description="Read the newest sweep of an MLflow experiment and print every trial, the front marked.")
    pareto.add_argument("--experiment", default=None,
                        help="MLflow experiment of the sweep; default: the embedded default's (safetytax-tiny).")
    pareto.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI; default: sqlite:///mlflow.db in the working directory.")
    pareto.set_defaults(func=pareto_command)


def split_items(items: list[str]) -> tuple[str | None, list[str]]:
    """Return (CONFIG or None, overrides) from the positional words of `safetytax sweep`."""
    if items and "=" not in items[0]:
        return items[0], items[1:]
    stray = [item for item in items if "=" not in item]
    if stray:
        raise ConfigError(f"sweep: {stray[0]!r} is neither the first argument (CONFIG) nor a key=value override")
    return None, items


def sweep_spec(args: argparse.Namespace) -> SweepSpec:
    """Return the validated spec the command line names (CONFIG and overrides)."""
    config, overrides = split_items(args.items)
    if config is not None and not Path(config).is_file():
        raise ConfigError(f"sweep: config file {config} does not exist (omit it to run the embedded default)")
    return load_spec(config, overrides)


def sweep_command(args: argparse.Namespace) -> int:
    """Run or resume the sweep; return 0 when every trial ran, 130 when interrupted (resumable)."""
    if args.cluster is not None and not args.dry_run:
        raise ConfigError("--cluster is read by --dry-run only; add --dry-run (a sweep runs on the cluster it "
                          "is submitted to)")
    spec = sweep_spec(args)
    if args.dry_run:
        from sweeps.plan import render_plan

        print(render_plan(spec, resume=args.resume, cluster=args.cluster), end="")
        return 0
    from sweeps.runner import run_sweep

    if args.accept_changes and not args.resume:
        raise ConfigError("--accept-changes applies to --resume only; add --resume, or drop --accept-changes")
    outcome = run_sweep(spec, resume=args.resume, verbose=0 if args.quiet else 1, accept_changes=args.accept_changes)
    print(front_table(outcome.trials, outcome.front, spec.directions(), list(spec.search_space), outcome.base))
    print(describe_target(outcome.trials, outcome.base))
    cheapest = describe_cheapest(outcome.trials, spec.parsed_constraints())
    if cheapest:
        print(cheapest)
    print(describe_time(outcome.trials))
    if computed := describe_compute(outcome.trials):
        print(computed)
    print(f"hypervolume: {outcome.hypervolume:.1f} (reference "
          + ", ".join(f"{k}={v:g}" for k, v in spec.reference_point().items()) + ")")
    print(f"plot: {outcome.plot}")
    from sweeps.tracking import run_link

    if not outcome.tracking_uri.startswith(("http://", "https://")):
        print(f"runs: mlflow ui --backend-store-uri {outcome.tracking_uri} --host 127.0.0.1 --port 5000")
    print(f"the sweep's run: {run_link(outcome.tracking_uri, outcome.experiment_id, outcome.parent_run_id)}  "
          f"(experiment {spec.experiment_name})")
    if spec.optuna.storage:
        from sweeps.tracking import redact_uri

        print(f"study: optuna-dashboard {redact_uri(spec.optuna.storage)}  (study {spec.study_name})")
    if not outcome.finished:
        again = " ".join(["safetytax sweep", *args.items, "--resume"])
        print(f"the sweep stopped early; continue it with: {again}")
        return 130
    return 0


def pareto_command(args: argparse.Namespace) -> int:
    """Print the newest sweep's front in an experiment and the path of its plot."""
    from sweeps import tracking
    from sweeps.plots import front_png
    from sweeps.report import PLOT_PNG, SweepLayout, base_point, sweep_front, target_bounds, trial_records
    from trainables.schema import read_yaml

    defaults = read_yaml(TINY_SPEC).get("mlflow", {})
    uri = args.tracking_uri or defaults.get("tracking_uri", "sqlite:///mlflow.db")
    experiment = args.experiment or defaults.get("experiment") or "tiny"
    resolved = tracking.resolve_tracking_uri(uri)
    if resolved.startswith("sqlite:///") and not Path(resolved[len("sqlite:///"):]).is_file():
        raise ConfigError(f"pareto: no MLflow store at {uri}; run `safetytax sweep` first or pass --tracking-uri")
    client = tracking.client(tracking.check_tracking_uri(uri))
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ConfigError(f"pareto: no experiment {experiment!r} in {tracking.redact_uri(uri)}; pass --experiment")
    parent = tracking.latest_sweep_run(client, found.experiment_id)
    if parent is None:
        raise ConfigError(f"pareto: experiment {experiment!r} holds no sweep yet; run `safetytax sweep` first")
    layout = SweepLayout.from_params(parent.data.params)
    trials = trial_records(client, found.experiment_id, parent.info.run_id, layout)
    front = sweep_front(trials, layout.directions)
    base = base_point(parent.data.metrics)
    from sweeps.provenance import describe, recorded

    print(f"sweep run {parent.info.run_id} ({parent.info.run_name}, {parent.info.status})")
    print(describe(recorded(client, parent.info.run_id)))
    print(front_table(trials, front, layout.directions, layout.searched, base))
    print(describe_target(trials, base))
    cheapest = describe_cheapest(trials, layout.constraints)
    if cheapest:
        print(cheapest)
    print(describe_time(trials))
    if computed := describe_compute(trials):
        print(computed)
    plot = tracking.artifact_local_path(client, parent.info.run_id, PLOT_PNG)
    if plot is None or parent.info.status == "RUNNING":
        # The sweep has not logged its final plot yet: draw the current front here.
        plot = front_png(trials, front, layout.directions, Path.cwd() / f"pareto_front-{experiment}.png",
                         base=base, title=f"{experiment} (in progress)", target=target_bounds(base))
    print(f"plot: {plot}")
    print(f"the sweep's run: {tracking.run_link(resolved, found.experiment_id, parent.info.run_id)}")
    return 0
