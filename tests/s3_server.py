"""A real S3-compatible bucket server for tests: moto's server in its own process on 127.0.0.1.

Use it from a test module as

    from s3_server import s3_server  # noqa: F401 - the fixture

    def test_upload(s3_server):
        s3_server.create_bucket("sweeps")
        ...  # s3://sweeps/... now works for boto3, pyarrow and Ray processes started after the fixture

`start_s3_server()` starts one by hand (stop it with `.stop()`); `S3Server.env()` is the set of
environment variables that point AWS clients (boto3, pyarrow, Ray Serve LLM) at it. The fixture
sets them in os.environ for the module, so a `ray.init()` made afterwards passes them to its workers.
Needs `moto[server]` (in the test extra); the fixture skips cleanly when it is not installed.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass

import pytest
from conftest import free_port

REGION = "us-east-1"


@dataclass
class S3Server:
    """A running moto server: `endpoint` is its http://127.0.0.1:PORT address."""

    endpoint: str
    process: subprocess.Popen

    def env(self) -> dict[str, str]:
        """Environment variables that send every AWS client in a process to this server (dummy keys)."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ENDPOINT_URL_S3": self.endpoint,
                "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION}

    def client(self):
        """Return a boto3 S3 client for this server."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def create_bucket(self, name: str) -> str:
        """Create bucket `name` and return its s3:// URI."""
        self.client().create_bucket(Bucket=name)
        return f"s3://{name}"

    def stop(self) -> None:
        """Stop the server; the buckets, kept in its memory, go with it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_s3_server(timeout_s: float = 60.0) -> S3Server:
    """Start moto's S3 server on a free 127.0.0.1 port and return it once it answers."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto's S3 server exited with code {process.returncode} before answering")
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
            return S3Server(endpoint, process)
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"moto's S3 server did not answer on {endpoint} within {timeout_s:.0f} s")


@pytest.fixture(scope="module")
def s3_server():
    """A moto S3 server for one test module, with the AWS environment variables pointing at it."""
    if importlib.util.find_spec("moto") is None:
        pytest.skip("moto is not installed (pip install 'moto[server]', part of the test extra)")
    server = start_s3_server()
    saved = {name: os.environ.get(name) for name in server.env()}
    os.environ.update(server.env())
    try:
        yield server
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()
