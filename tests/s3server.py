"""Fixtures for s3:// tests: moto's standalone S3 server on loopback, a fresh bucket per test,
and any S3-compatible endpoint a user names.

``moto_s3`` (session scope) starts ``python -m moto.server`` on a free port (skipped with the
reason when moto[server] is not installed). ``s3_target`` is parametrized: ``moto`` (a new
bucket on that server) and ``env``: the endpoint and bucket of ``DRTOOL_TEST_S3_URL``
(``http(s)://host:port/bucket``, credentials from the usual AWS variables; each test works
under a fresh random prefix), skipped when the variable is unset. Registered as a pytest
plugin by tests/conftest.py.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest

from tests.sshd import free_port

MOTO_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "drtool-test", "AWS_SECRET_ACCESS_KEY": "drtool-test"}
#: No credentials, profile or region from the machine's own files or metadata service.
ISOLATED = {"AWS_CONFIG_FILE": "/nonexistent/drtool-test", "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/drtool-test", "AWS_PROFILE": "",
            "AWS_SESSION_TOKEN": "", "AWS_DEFAULT_REGION": "us-east-1"}


class MotoServer:
    """``python -m moto.server`` on a free loopback port; ``extra_env`` e.g. turns auth on."""

    def __init__(self, extra_env: dict[str, str] | None = None, log=None) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.extra_env = extra_env or {}
        self.log = log  # a file for the server's request log (one line per request), or None
        self.proc: subprocess.Popen | None = None

    def start(self) -> "MotoServer":
        env = {**os.environ, **self.extra_env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=self.log or subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # a TCP connect only: auth counts every request
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto.server exited with {self.proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("moto.server did not start listening within 30 s")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


def boto_client(endpoint: str, **credentials):
    import boto3

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return boto3.client("s3", endpoint_url=endpoint, region_name=region, **credentials)


@dataclass
class S3Target:
    """A bucket (and prefix) to test against, and how to reach it."""

    endpoint: str
    bucket: str
    prefix: str = ""
    env: dict[str, str] = field(default_factory=dict)  # credential variables to set

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def storage(self, **options):
        from drtool.storage.s3 import S3Storage

        return S3Storage(self.bucket, self.prefix, endpoint=self.endpoint, **options)

    def repository_lines(self, extra: str = "") -> str:
        """The body of a [repository] section for this target."""
        return f'url = "{self.url}"\nendpoint = "{self.endpoint}"\n{extra}'

    def client(self):
        return boto_client(self.endpoint)

    def keys(self) -> dict[str, int]:
        """Every key under the prefix, hidden ones too, with sizes (the raw bucket view)."""
        found, client = {}, self.client()
        for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix):
            found.update({o["Key"]: o["Size"] for o in page.get("Contents", ())})
        return found

    def uploads(self) -> list[str]:
        reply = self.client().list_multipart_uploads(Bucket=self.bucket, Prefix=self.prefix)
        return [u["Key"] for u in reply.get("Uploads", ())]


@pytest.fixture(scope="session")
def moto_s3():
    pytest.importorskip("moto.server", reason="moto[server] is not installed")
    pytest.importorskip("flask", reason="moto[server] is not installed (no flask)")
    server = MotoServer().start()
    yield server
    server.stop()


def new_bucket(endpoint: str, *, object_lock: bool = False) -> str:
    bucket = f"drtool-{secrets.token_hex(6)}"
    boto_client(endpoint).create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=object_lock)
    return bucket


@pytest.fixture
def s3_env(monkeypatch):
    """Moto's credentials in the environment, nothing from this machine's AWS files."""
    for name, value in {**ISOLATED, **MOTO_CREDENTIALS}.items():
        if value:
            monkeypatch.setenv(name, value)
        else:
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(params=["moto", "env"])
def s3_target(request):
    if request.param == "moto":
        request.getfixturevalue("s3_env")
        server = request.getfixturevalue("moto_s3")
        yield S3Target(server.endpoint, new_bucket(server.endpoint))
        return
    url = os.environ.get("DRTOOL_TEST_S3_URL")
    if not url:
        pytest.skip("DRTOOL_TEST_S3_URL is not set (an S3 endpoint and bucket to test against)")
    split = urlsplit(url)
    bucket = split.path.strip("/").split("/")[0]
    target = S3Target(f"{split.scheme}://{split.netloc}", bucket,
                      f"drtool-test-{secrets.token_hex(6)}")
    yield target
    client = target.client()  # leave the user's bucket as it was: remove the test's prefix
    for key in target.keys():
        client.delete_object(Bucket=bucket, Key=key)


@pytest.fixture
def s3_moto(s3_env, moto_s3) -> S3Target:
    """A fresh bucket on the moto server."""
    return S3Target(moto_s3.endpoint, new_bucket(moto_s3.endpoint))


@pytest.fixture
def s3_lock_bucket(s3_env, moto_s3) -> S3Target:
    """A fresh bucket with Object Lock enabled on the moto server."""
    return S3Target(moto_s3.endpoint, new_bucket(moto_s3.endpoint, object_lock=True))
