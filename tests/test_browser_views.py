"""What a user opens, in a real headless browser: MLflow's run page and front plot, optuna-dashboard's Pareto view.

Skips without a system Chromium (Debian's `chromium` package), playwright or optuna-dashboard; CI installs them.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import free_port
from sweeps import tracking
from sweeps.loader import TINY_SPEC, load_spec
from sweeps.report import SweepLayout, describe_sweep, record_front, tag_experiment, trial_records
from sweeps.runner import _loggable_spec

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# (trial, harmful score, reasoning accuracy): t2 is the cheapest trial meeting harmful_score <= 10.
TRIALS = [("t1", 40.0, 90.0), ("t2", 8.0, 70.0), ("t3", 2.0, 40.0)]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="no system Chromium (apt-get install chromium)"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="playwright is not installed"),
    pytest.mark.skipif(shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent)) is None,
                       reason="optuna-dashboard is not installed"),
]


def serve(command: list[str], url: str, timeout_s: float = 240.0) -> subprocess.Popen:
    """Start a local web server and return it once `url` answers 200."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return process
        except OSError:
            time.sleep(1)
    process.kill()
    raise RuntimeError(f"{command[0]} did not answer at {url} within {timeout_s:.0f} s")


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        yield chromium.new_page(viewport={"width": 1400, "height": 1000})
        chromium.close()


def recorded_sweep(folder: Path) -> tuple[str, str, str]:
    """Return (tracking URI, experiment id, parent run id) of a sweep recorded by the sweep's own reporting code."""
    uri = tracking.check_tracking_uri(f"sqlite:///{folder}/mlflow.db")
    client = tracking.client(uri)
    spec = load_spec(TINY_SPEC, ['constraints=["harmful_score <= 10"]'])
    experiment = tracking.experiment_id(client, spec.experiment_name)
    tag_experiment(client, experiment)
    parent = tracking.start_sweep_run(client, experiment, str(folder / "tune"), "sweep-tiny", {}).info.run_id
    tracking.log_params(client, parent, tracking.flatten_params(_loggable_spec(spec)))
    for trial_id, harm, accuracy in TRIALS:
        run = tracking.trial_run(client, experiment, parent, trial_id, run_name=f"tiny-{trial_id}").info.run_id
        tracking.log_metrics(client, run, {"harmful_score": harm, "reasoning_accuracy": accuracy})
        client.set_terminated(run, "FINISHED")
    layout = SweepLayout.from_spec(spec)
    trials = trial_records(client, experiment, parent, layout)
    base = {"harmful_score": 95.0, "reasoning_accuracy": 92.0}
    front, _, _ = record_front(client, parent, layout, trials, base, title="tiny")
    describe_sweep(client, parent, layout, trials, front, base, study="sqlite:///optuna.db")
    return uri, experiment, parent


def test_mlflow_shows_the_sweep_run_its_description_and_the_front_plot(tmp_path, monkeypatch, browser):
    monkeypatch.chdir(tmp_path)  # the experiment's artifacts land here
    uri, experiment, parent = recorded_sweep(tmp_path)
    port = free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    server = serve([str(mlflow), "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port),
                    "--workers", "1"], f"http://127.0.0.1:{port}/")
    try:
        # MLflow 3's UI has a global GenAI / model-training switch; the link selects model training.
        run_page = f"http://127.0.0.1:{port}/#/experiments/{experiment}/runs/{parent}"
        browser.goto(f"{run_page}?workflowType=machine_learning", timeout=120_000)
        browser.get_by_text("cheapest feasible trial (harmful_score <= 10): t2").wait_for(timeout=120_000)
        assert browser.get_by_text("Model training").first.is_visible()
        for trial_id, _, _ in TRIALS:  # the trials, as the sweep run's child runs
            browser.get_by_text(f"tiny-{trial_id}").first.wait_for(timeout=60_000)
        browser.goto(f"{run_page}/artifacts?workflowType=machine_learning", timeout=120_000)
        browser.get_by_text("pareto_front.png", exact=True).click(timeout=120_000)
        # The PNG is drawn 840 pixels wide (7 in at 120 dpi): the front plot itself is on screen.
        browser.wait_for_function("() => Array.from(document.images).some(i => i.complete && i.naturalWidth === 840)",
                                  timeout=120_000)
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_optuna_dashboard_shows_the_pareto_front_of_the_study(tmp_path, browser):
    import optuna
    from optuna.distributions import CategoricalDistribution

    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(study_name="tiny", storage=storage, directions=["minimize", "maximize"])
    for (trial_id, harm, accuracy), size in zip(TRIALS, (15, 30, 60)):
        study.add_trial(optuna.trial.create_trial(
            params={"data.size": size}, distributions={"data.size": CategoricalDistribution([15, 30, 60])},
            values=[harm, accuracy]))
    port = free_port()
    dashboard = Path(sys.executable).parent / "optuna-dashboard"
    server = serve([str(dashboard), storage, "--host", "127.0.0.1", "--port", str(port)],
                   f"http://127.0.0.1:{port}/dashboard")
    try:
        browser.goto(f"http://127.0.0.1:{port}/dashboard/studies/1", timeout=120_000)
        browser.get_by_text("Pareto Front").first.wait_for(timeout=120_000)
        browser.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .point').length >= 3",
                                  timeout=120_000)
        for _, harm, accuracy in TRIALS:  # every trial here is on the front, listed with its objectives
            browser.get_by_text(f"Objective Values = [{harm:g}, {accuracy:g}]").first.wait_for(timeout=60_000)
    finally:
        server.terminate()
        server.wait(timeout=60)
