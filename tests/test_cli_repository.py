"""keygen, init, snapshots, verify through the CLI, and every bad input of the repository issue:
one clear line on stderr, a distinct exit code, no traceback, nothing written or lost."""

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest

from tests.conftest import Cli, latest_manifest, load_table, sample_docs, write_policy


def _one_line_error(result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("drtool: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in result.stdout + result.stderr


def test_keygen_writes_private_file_and_refuses_overwrite(tmp_path):
    cli = Cli()
    out = tmp_path / "sub" / "id.txt"
    first = cli("keygen", "--out", str(out))
    assert first.exit_code == 0
    recipient = first.stdout.strip()
    assert recipient.startswith("drtool1") and recipient in out.read_text()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    before = out.read_bytes()
    again = cli("keygen", "--out", str(out))
    _one_line_error(again, 2, str(out), "refusing to overwrite")
    assert out.read_bytes() == before


def test_init_snapshots_verify_flow(tmp_path, primary_server):
    dep = write_policy(tmp_path)
    cli = Cli(dep.path)
    assert cli("keygen", "--out", str(dep.identity)).exit_code == 0
    created = cli("init", "--json")
    assert created.exit_code == 0, created.stderr
    assert (dep.repo_dir / "config").exists()
    assert json.loads(created.stdout)["repository"]

    assert json.loads(cli("snapshots", "--json").stdout) == []
    load_table(primary_server, "app.t", sample_docs(300))
    snap_id = cli("snapshot").stdout.strip().splitlines()[-1]
    table = cli("snapshots").stdout
    assert snap_id in table and "300" in table
    assert cli("verify", snap_id[:12]).exit_code == 0
    assert cli("verify", "latest", "--read-data").exit_code == 0

    again = cli("init")
    _one_line_error(again, 6, "a repository already exists here")


def test_no_policy_and_policy_errors(tmp_path):
    _one_line_error(Cli()("snapshots"), 2, "no policy given")
    missing = Cli(tmp_path / "nope.toml")("snapshots")
    _one_line_error(missing, 2, "nope.toml", "no such policy file")

    dep = write_policy(tmp_path, extra="[tables]\nincldue = [\"a.*\"]\n")
    typo = Cli(dep.path)("snapshots")
    _one_line_error(typo, 2, "tables.incldue", "include")

    dep = write_policy(tmp_path)
    dep.path.write_text(dep.path.read_text().replace("file://", "s3://"))
    _one_line_error(Cli(dep.path)("init"), 2, "repository.url", "s3://")

    dep = write_policy(tmp_path, extra='[throttle]\nbandwidth = "fast"\n')
    _one_line_error(Cli(dep.path)("init"), 2, "throttle.bandwidth", '"fast"')

    dep = write_policy(tmp_path, extra="[retention]\nkeep_last = \"seven\"\n")
    _one_line_error(Cli(dep.path)("init"), 2, "retention.keep_last")


def test_repository_path_missing_or_not_a_directory(tmp_path):
    dep = write_policy(tmp_path)
    dep.path.write_text(dep.path.read_text().replace(str(dep.repo_dir), str(tmp_path / "a" / "b")))
    cli = Cli(dep.path)
    assert cli("keygen", "--out", str(dep.identity)).exit_code == 0
    result = cli("init")
    assert result.exit_code == 6, result.stderr
    assert str(tmp_path / "a") in result.stderr
    assert not (tmp_path / "a").exists()

    no_repo = cli("snapshots")
    assert no_repo.exit_code == 6

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    dep.path.write_text(dep.path.read_text().replace(str(tmp_path / "a" / "b"), str(blocker / "repo")))
    _one_line_error(cli("init"), 6)


def test_repository_of_an_older_format_is_refused_by_every_command(tmp_path, primary_server):
    """A repository written by drtool 0.1 (format 1: other digests) is refused with one line
    saying what to do, exit 6, and nothing is written to it."""
    dep = write_policy(tmp_path)
    cli = Cli(dep.path)
    assert cli("keygen", "--out", str(dep.identity)).exit_code == 0
    assert cli("init").exit_code == 0
    config = dep.repo_dir / "config"
    cfg = json.loads(config.read_text())
    config.write_text(json.dumps({**cfg, "version": 1}, indent=2, sort_keys=True) + "\n")
    before = sorted(p.relative_to(dep.repo_dir) for p in dep.repo_dir.rglob("*"))
    load_table(primary_server, "app.t", sample_docs(20))
    for args in (("snapshot",), ("snapshots",), ("verify",), ("restore", "latest")):
        _one_line_error(cli(*args), 6, "repository format version 1 is not supported",
                        "create a new repository with drtool init")
    assert sorted(p.relative_to(dep.repo_dir) for p in dep.repo_dir.rglob("*")) == before


def test_snapshots_where_no_repository(tmp_path):
    dep = write_policy(tmp_path)
    dep.repo_dir.mkdir()
    cli = Cli(dep.path)
    assert cli("keygen", "--out", str(dep.identity)).exit_code == 0
    _one_line_error(cli("snapshots"), 6, "no repository here", "drtool init")


def test_identity_missing_unsafe_or_wrong(deployment, cli, tmp_path):
    os.chmod(deployment.identity, 0o644)
    _one_line_error(cli("snapshots"), 5, str(deployment.identity), "chmod 600")
    os.chmod(deployment.identity, 0o600)

    shutil.move(deployment.identity, tmp_path / "moved.txt")
    _one_line_error(cli("snapshots"), 5, str(deployment.identity))

    other = Cli()("keygen", "--out", str(deployment.identity))
    assert other.exit_code == 0
    _one_line_error(cli("snapshots"), 5)


def test_passphrase_repository_and_wrong_passphrase(tmp_path):
    dep = write_policy(tmp_path, identity=False)
    dep.path.write_text(dep.path.read_text().replace(
        "[encryption]\n", '[encryption]\npassphrase_env = "DRTOOL_TEST_PASSPHRASE"\n'))
    cli = Cli(dep.path)
    good = {"DRTOOL_TEST_PASSPHRASE": "correct horse battery staple"}
    assert cli("init", env=good).exit_code == 0
    assert cli("snapshots", env=good).exit_code == 0
    wrong = cli("snapshots", env={"DRTOOL_TEST_PASSPHRASE": "tr0ub4dor"})
    _one_line_error(wrong, 5, "passphrase")
    assert "tr0ub4dor" not in wrong.stderr
    unset = cli("snapshots")
    _one_line_error(unset, 2, "DRTOOL_TEST_PASSPHRASE", "not set")


def test_unknown_config_version(deployment, cli):
    config = deployment.repo_dir / "config"
    data = json.loads(config.read_text())
    data["version"] = 99
    config.chmod(0o644)
    config.write_text(json.dumps(data))
    _one_line_error(cli("snapshots"), 6, "version 99")


@pytest.fixture
def snapshotted(deployment, cli, primary_server):
    load_table(primary_server, "app.t", sample_docs(2500, pad=4000))  # > 8 MiB: >= 3 segments
    load_table(primary_server, "app.u", sample_docs(100))
    assert cli("snapshot").exit_code == 0
    return latest_manifest(deployment.path)


def _object_path(deployment, object_id):
    path = next(deployment.repo_dir.glob(f"data/*/{object_id}"))
    path.chmod(0o644)
    return path


@pytest.mark.parametrize("damage", ["truncate", "flip", "swap", "delete"])
def test_verify_reports_damage(deployment, cli, snapshotted, damage):
    table = snapshotted.tables[0]
    first, second = table.layers[0].segments[:2]
    victim = _object_path(deployment, first.id)
    if damage == "truncate":
        victim.write_bytes(victim.read_bytes()[:-7])
    elif damage == "flip":
        data = bytearray(victim.read_bytes())
        data[-20] ^= 0x80
        victim.write_bytes(bytes(data))
    elif damage == "swap":
        other = _object_path(deployment, second.id)
        a, b = victim.read_bytes(), other.read_bytes()
        victim.write_bytes(b)
        other.write_bytes(a)
    else:
        victim.unlink()

    quick = cli("verify")
    deep = cli("verify", "--read-data")
    assert deep.exit_code == 1
    problem_lines = [line for line in deep.stdout.splitlines() if line.startswith("PROBLEM")]
    assert any(first.id in line and f"table {table.name}" in line
               and f"snapshot {snapshotted.id}" in line for line in problem_lines), deep.stdout
    if damage == "delete":
        assert quick.exit_code == 1 and "missing" in quick.stdout
    if damage == "truncate":
        assert quick.exit_code == 1 and "size" in quick.stdout
    if damage == "flip":
        assert quick.exit_code == 0  # same size: only reading the data finds it
        assert "failed authentication" in deep.stdout


def test_verify_json_lists_problems(deployment, cli, snapshotted):
    ref = snapshotted.tables[1].layers[0].segments[0]
    _object_path(deployment, ref.id).unlink()
    result = cli("verify", "--json")
    assert result.exit_code == 1
    problems = json.loads(result.stdout)["problems"]
    assert problems == [{"snapshot": snapshotted.id, "table": "app.u", "object": ref.id,
                         "message": "missing"}]


def test_version_and_help():
    from drtool import __version__

    version = Cli()("--version")
    assert version.exit_code == 0 and version.stdout.strip() == f"drtool {__version__}"
    bare = Cli()()
    assert "snapshot" in bare.stdout + bare.stderr and "restore" in bare.stdout + bare.stderr
