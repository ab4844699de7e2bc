"""A local S3-compatible server (moto's) on 127.0.0.1, standing in for a bucket in tests.

`start_s3_server(tmp_path)` starts `moto_server` on a free port and returns its endpoint and process;
`s3_env(endpoint)` gives the environment that points boto3, pyarrow (Ray's storage) and MLflow at it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from conftest import free_port

# Credentials moto accepts; they open nothing outside this machine.
TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
START_TIMEOUT_S = 60


def s3_env(endpoint_url: str) -> dict[str, str]:
    """Return the variables that send boto3, pyarrow's S3 filesystem and MLflow's artifact store to `endpoint_url`."""
    return {**TEST_CREDENTIALS, "AWS_ENDPOINT_URL": endpoint_url, "AWS_ENDPOINT_URL_S3": endpoint_url,
            "MLFLOW_S3_ENDPOINT_URL": endpoint_url}


def start_s3_server(tmp_path: Path) -> tuple[str, subprocess.Popen]:
    """Start moto's S3 server on a free 127.0.0.1 port; return (endpoint_url, process). The caller stops it."""
    port = free_port()
    executable = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    log = open(Path(tmp_path) / "moto_server.log", "wb")
    process = subprocess.Popen([executable, "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                               stderr=subprocess.STDOUT, env={**os.environ, **TEST_CREDENTIALS})
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with {process.returncode}; see {log.name}")
        try:
            urllib.request.urlopen(endpoint, timeout=2).close()
            return endpoint, process
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"moto_server did not answer on {endpoint} within {START_TIMEOUT_S} s; see {log.name}")
