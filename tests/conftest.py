"""Shared fixtures: fake clusters behind policy host names, policies, a CLI runner.

The fake clusters are registered under host names that cannot be a real server
(``fake-primary``/``fake-standby``), so a test can never touch a real RethinkDB by mistake.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from drtool.cluster import fake
from drtool.cluster.fake import FakeServer
from drtool.model import ClusterConfig, TableName

pytest_plugins = ("tests.sshd", "tests.s3server")  # sshd, S3 servers (tests.real_servers: -p)

PRIMARY_HOST = "fake-primary:28015"
STANDBY_HOST = "fake-standby:28015"


def _served_at(host: str) -> Iterator[FakeServer]:
    server = FakeServer()
    fake.register(host, server)
    yield server
    fake.unregister(host)


@pytest.fixture
def primary_server() -> Iterator[FakeServer]:
    yield from _served_at(PRIMARY_HOST)


@pytest.fixture
def standby_server() -> Iterator[FakeServer]:
    yield from _served_at(STANDBY_HOST)


def connect_fake(server: FakeServer, role: str = "primary"):
    return server.connect(ClusterConfig(role=role, hosts=(PRIMARY_HOST,)))


def on_cluster(server: FakeServer, action):
    """Run ``await action(cluster)`` on a fresh connection to a fake server, synchronously.

    CLI tests are plain functions: the CLI runs its own event loop (asyncio.run)."""

    async def go():
        cluster = connect_fake(server)
        try:
            return await action(cluster)
        finally:
            await cluster.close()

    return asyncio.run(go())


def load_table(server: FakeServer, name: str, docs: list[str], *, primary_key: str = "id") -> TableName:
    """Create ``db.table`` on a fake server and insert the given JSON texts."""
    table = TableName.parse(name)

    async def create(cluster):
        await cluster.ensure_db(table.db)
        await cluster.create_table(table, primary_key=primary_key, shards=1, replicas=1)
        for start in range(0, len(docs), 1000):
            result = await cluster.insert_texts(table, docs[start:start + 1000])
            assert result.errors == 0, result.first_error

    on_cluster(server, create)
    return table


def table_texts(server: FakeServer, name: str) -> list[str]:
    """Every document text of a fake table in key order."""
    return server.texts(TableName.parse(name))


def sample_docs(n: int, *, start: int = 0, pad: int = 400) -> list[str]:
    """Documents of about ``pad`` bytes with string keys, non-ASCII text, TIME and BINARY."""
    docs = []
    for i in range(start, start + n):
        docs.append(json.dumps({
            "id": f"k{i:07d}",
            "n": i,
            "name": f"documento-{i}-ü-ключ",
            "at": {"$reql_type$": "TIME", "epoch_time": 1700000000 + i, "timezone": "+00:00"},
            "blob": {"$reql_type$": "BINARY", "data": "AAECAw=="},
            "pad": "x" * pad,
        }, ensure_ascii=False))
    return docs


@dataclass
class Deployment:
    """A policy file pointing at the fake clusters and a local repository in tmp_path."""

    path: Path
    repo_dir: Path
    identity: Path
    writer_key: Path | None

    def rewrite(self, **sections: str) -> None:
        text = self.path.read_text()
        for header, body in sections.items():
            text = text.replace(f"[{header}]\n", f"[{header}]\n{body}\n", 1)
        self.path.write_text(text)


def write_policy(tmp_path: Path, *, recipients: list[str] | None = None,
                 identity: bool = True, writer_key: bool = False,
                 extra: str = "") -> Deployment:
    repo_dir = tmp_path / "repo"
    identity_path = tmp_path / "keys" / "identity.txt"
    writer_key_path = tmp_path / "keys" / "writer.key" if writer_key else None
    lines = [
        'name = "test"',
        "[primary]", f'hosts = ["{PRIMARY_HOST}"]',
        "[standby]", f'hosts = ["{STANDBY_HOST}"]',
        "[repository]", f'url = "file://{repo_dir}"',
        "[encryption]",
    ]
    if recipients:
        lines.append("recipients = [" + ", ".join(f'"{r}"' for r in recipients) + "]")
    if identity:
        lines.append(f'identity_file = "{identity_path}"')
    if writer_key_path:
        lines.append(f'writer_key_file = "{writer_key_path}"')
    path = tmp_path / "policy.toml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return Deployment(path, repo_dir, identity_path, writer_key_path)


def latest_manifest(policy_path: Path):
    """The newest snapshot's manifest, read through the core API."""
    from drtool.wiring.open import open_repository
    from drtool.config.policy import load_policy

    async def go():
        repo = await open_repository(load_policy(policy_path))
        try:
            return await repo.resolve("latest")
        finally:
            await repo.close()

    return asyncio.run(go())


def writer_only_deployment(tmp_path: Path) -> tuple[Deployment, Path]:
    """An initialised repository whose policy has a recipient and a writer key file but no
    identity (a snapshot host); returns it and the reader's identity file."""
    reader = tmp_path / "reader.txt"
    recipient = Cli()("keygen", "--out", str(reader)).stdout.strip()
    dep = write_policy(tmp_path, recipients=[recipient], identity=False, writer_key=True)
    assert Cli(dep.path)("init").exit_code == 0
    return dep, reader


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


class Cli:
    """Runs the real Typer app in-process (so the fake clusters are reachable)."""

    def __init__(self, policy: Path | None = None) -> None:
        self.policy = policy
        self.runner = CliRunner()

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> CliResult:
        from drtool.cli.app import app
        from drtool.cli.common import State

        argv = list(args)
        if self.policy is not None and "keygen" not in argv:
            argv = ["--policy", str(self.policy), *argv]
        full_env = {"DRTOOL_POLICY": "", "COLUMNS": "200", **(env or {})}
        result = self.runner.invoke(app, argv, env=full_env, catch_exceptions=False,
                                    obj=State(fake.NETWORK))  # the fake clusters' hosts
        return CliResult(result.exit_code, result.stdout, result.stderr)


@pytest.fixture
def deployment(tmp_path: Path, primary_server, standby_server) -> Deployment:
    """Fake primary + standby, a policy, an identity and an initialised local repository."""
    dep = write_policy(tmp_path)
    cli = Cli(dep.path)
    assert cli("keygen", "--out", str(dep.identity)).exit_code == 0
    result = cli("init")
    assert result.exit_code == 0, result.stderr
    return dep


@pytest.fixture
def cli(deployment: Deployment) -> Cli:
    return Cli(deployment.path)


@pytest.fixture(autouse=True)
def _no_policy_from_environment(monkeypatch) -> None:
    monkeypatch.delenv("DRTOOL_POLICY", raising=False)
