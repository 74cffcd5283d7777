"""The whole cycle over SFTP against a real OpenSSH sshd on loopback, through the CLI:
init -> snapshot -> incremental snapshot -> verify --read-data -> restore, with a bandwidth
limit and a read-rate limit in the policy (wiring, not speed: no time is asserted)."""

from __future__ import annotations

import json

from drtool.model import TableName
from drtool.config.policy import load_policy
from drtool.storage import open_storage
from drtool.storage.limiter import BandwidthLimitedStorage
from drtool.util.units import BandwidthSchedule
from tests.conftest import Cli, load_table, sample_docs, table_texts, write_policy


def _sftp_policy(tmp_path, server, remote_dir):
    dep = write_policy(tmp_path, extra='[throttle]\nbandwidth = "08:00,200MiB/s 20:00,400MiB/s"\n'
                                       'primary_reads = "1000000docs/s"\n')
    url = f"sftp://{server.user}@{server.host}:{server.port}{remote_dir}"
    dep.path.write_text(dep.path.read_text().replace(
        f'url = "file://{dep.repo_dir}"',
        f'url = "{url}"\nidentity_file = "{server.client_key}"\nknown_hosts = "{server.known_hosts}"'))
    return dep


def test_snapshot_verify_restore_over_sftp(tmp_path, sshd_server, sftp_dir, primary_server,
                                           standby_server):
    dep = _sftp_policy(tmp_path, sshd_server, sftp_dir)
    cli = Cli(dep.path)
    assert cli("keygen", "--out", str(dep.identity)).exit_code == 0
    created = cli("init")
    assert created.exit_code == 0, created.stderr
    assert (sftp_dir / "config").exists()

    load_table(primary_server, "app.t", sample_docs(3000))
    snapshot_verify_restore(cli, primary_server, standby_server)
    assert not any(p.name.startswith(".tmp-") for p in sftp_dir.rglob("*"))


def snapshot_verify_restore(cli: Cli, primary_server, standby_server, between=None) -> None:
    """A snapshot of the primary's tables, changes (a new table app.u, a document less in
    app.t; ``between()`` too), an incremental snapshot much smaller than the first, verify
    --read-data, then a restore to the standby equal to the primary."""
    first = cli("snapshot", "--json")
    assert first.exit_code == 0, first.stderr
    if between is not None:
        between()
    primary_server.put_texts(load_table(primary_server, "app.u", []), ['{"id":1}'])
    primary_server.delete(TableName("app", "t"), ['"k0000003"'])
    second = cli("snapshot", "--json")
    assert second.exit_code == 0, second.stderr
    assert json.loads(second.stdout)["bytes_new"] < json.loads(first.stdout)["bytes_new"] / 5

    assert cli("verify", "--read-data").exit_code == 0
    restored = cli("restore", "latest", "--to", "standby")
    assert restored.exit_code == 0, restored.stderr
    for name in ("app.t", "app.u"):
        assert table_texts(standby_server, name) == table_texts(primary_server, name)


def test_bandwidth_policy_wraps_the_storage(tmp_path):
    dep = write_policy(tmp_path, extra='[throttle]\nbandwidth = "10MiB/s:off"\n')
    dep.repo_dir.mkdir()
    policy = load_policy(dep.path)
    limited = open_storage(policy.repository, bandwidth=policy.throttle.bandwidth)
    assert isinstance(limited, BandwidthLimitedStorage)
    unlimited = open_storage(policy.repository, bandwidth=BandwidthSchedule.parse("off"))
    assert not isinstance(unlimited, BandwidthLimitedStorage)
