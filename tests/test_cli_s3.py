"""s3:// repositories through the CLI, on moto's server (and on DRTOOL_TEST_S3_URL when set):
init, snapshot, incremental snapshot, verify --read-data, restore, forget --prune, import-dump
and the runner's scheduled snapshots (fake clusters); Object Lock from init to verify; the
one-line errors of init."""

from __future__ import annotations

import asyncio
import json
import time

from drtool.config.policy import load_policy
from drtool.model import TableName
from drtool.storage.s3 import NO_CONDITIONAL_NOTE
from drtool.wiring.open import open_repository
from tests.conftest import Cli, load_table, on_cluster, sample_docs, table_texts, write_policy
from tests.dump_archives import table_files, write_archive
from tests.replication_helpers import replication_section
from tests.s3server import S3Target
from tests.test_cli_sftp import snapshot_verify_restore
from tests.test_replicate_control import scheduled_snapshot_with_retention


def s3_deployment(tmp_path, target: S3Target, repository_extra: str = "", extra: str = ""):
    tmp_path.mkdir(exist_ok=True)
    dep = write_policy(tmp_path, extra=extra)
    dep.path.write_text(dep.path.read_text().replace(
        f'url = "file://{dep.repo_dir}"', target.repository_lines(repository_extra)))
    cli = Cli(dep.path)
    assert cli("keygen", "--out", str(dep.identity)).exit_code == 0
    return dep, cli


def test_the_whole_cycle_on_s3(tmp_path, s3_target, primary_server, standby_server):
    dep, cli = s3_deployment(tmp_path, s3_target)
    created = cli("init")
    assert created.exit_code == 0, created.stderr
    assert f"at {s3_target.url}" in created.stdout
    assert created.stderr.strip() in ("", f"note: {NO_CONDITIONAL_NOTE}")  # moto: no note
    assert cli("init").exit_code == 6  # one repository per prefix

    load_table(primary_server, "app.t", sample_docs(3000))
    load_table(primary_server, "app.gone", sample_docs(300, start=5000))
    snapshot_verify_restore(cli, primary_server, standby_server, between=lambda: on_cluster(
        primary_server, lambda c: c.drop_table(TableName("app", "gone"))))

    forgot = cli("forget", "--keep-last", "1", "--prune", "--json")
    assert forgot.exit_code == 0, forgot.stderr
    report = json.loads(forgot.stdout)
    assert len(report["removed"]) == 1 and report["held"] == []
    assert report["prune"]["objects_deleted"] > 0 and report["prune"]["waiting"]["objects"] == 0
    assert cli("verify", "--read-data").exit_code == 0
    assert not any(".drtool-probe-" in key for key in s3_target.keys())
    assert s3_target.uploads() == []


def test_import_dump_into_s3(tmp_path, s3_moto, primary_server, standby_server):
    dep, cli = s3_deployment(tmp_path, s3_moto)
    assert cli("init").exit_code == 0
    texts = sample_docs(500)
    archive = write_archive(tmp_path / "dump.tar.gz", table_files("app", "t", texts, shards=1))
    imported = cli("import-dump", str(archive), "--json")
    assert imported.exit_code == 0, imported.stderr
    assert json.loads(imported.stdout)["tables"][0]["documents"] == 500
    assert cli("verify", "--read-data").exit_code == 0
    assert cli("restore", "latest", "--to", "standby").exit_code == 0
    restored = [json.loads(t) for t in table_texts(standby_server, "app.t")]
    assert restored == sorted((json.loads(t) for t in texts), key=lambda d: d["id"])


def test_scheduled_snapshots_of_the_runner_into_s3(tmp_path, s3_moto, primary_server,
                                                    standby_server):
    extra = replication_section() + '[schedule]\nsnapshot_every = "1s"\nprune = true\n' \
        "[retention]\nkeep_last = 2\n"
    dep, cli = s3_deployment(tmp_path, s3_moto, extra=extra)
    assert cli("init").exit_code == 0
    policy = load_policy(dep.path)

    async def body():
        snap = await scheduled_snapshot_with_retention(policy, primary_server, standby_server)
        async with await open_repository(policy) as repo:
            ids = await repo.list_snapshots()
            assert 1 <= len(ids) <= 2 and snap["id"] in ids
            assert (await repo.resolve(snap["id"])).doc_count == 50
            assert repo.storage.location == s3_moto.url

    asyncio.run(body())
    assert cli("verify", "--read-data").exit_code == 0


# --- Object Lock ----------------------------------------------------------------------------
def test_object_lock_from_init_to_forget_prune_and_verify(tmp_path, s3_lock_bucket,
                                                          primary_server, standby_server):
    dep, cli = s3_deployment(tmp_path, s3_lock_bucket, 'object_lock = "1d"\n')
    assert cli("init").exit_code == 0
    load_table(primary_server, "app.t", sample_docs(800))
    assert cli("snapshot").exit_code == 0
    primary_server.delete(TableName("app", "t"), [f'"k{i:07d}"' for i in range(400)])
    assert cli("snapshot").exit_code == 0

    dry = cli("forget", "--keep-last", "1", "--prune", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.stderr
    assert len(json.loads(dry.stdout)["held"]) == 1
    forgot = cli("forget", "--keep-last", "1", "--prune")
    assert forgot.exit_code == 0, forgot.stderr
    assert "1 snapshots kept, removed 0" in forgot.stdout
    assert "forget: 1 snapshots wait: under Object Lock retention until 20" in forgot.stdout
    assert "run forget again after that" in forgot.stdout
    assert "deleted 0 objects" in forgot.stdout  # the held snapshot keeps its objects
    assert len(json.loads(cli("snapshots", "--json").stdout)) == 2
    # Every object but the locks carries the retention: verify finds nothing short.
    verified = cli("verify", "--read-data")
    assert verified.exit_code == 0, verified.stdout + verified.stderr
    client = s3_lock_bucket.client()
    for key in s3_lock_bucket.keys():
        head = client.head_object(Bucket=s3_lock_bucket.bucket, Key=key)
        assert ("ObjectLockRetainUntilDate" in head) == (not key.startswith("locks/")), key


def test_verify_reports_objects_retained_less_than_the_policy_says(tmp_path, s3_lock_bucket,
                                                                   primary_server):
    dep, cli = s3_deployment(tmp_path, s3_lock_bucket)  # written without object_lock
    assert cli("init").exit_code == 0
    load_table(primary_server, "app.t", sample_docs(200))
    assert cli("snapshot").exit_code == 0
    dep.rewrite(repository='object_lock = "30d"')
    verified = cli("verify")
    assert verified.exit_code == 1
    assert "manifest has no Object Lock retention (object_lock wants it retained until" in verified.stdout
    assert "anyone holding the repository's credentials can delete it" in verified.stdout


# --- init's one-line errors -----------------------------------------------------------------
def test_init_errors_are_one_line_with_their_exit_codes(tmp_path, s3_moto, monkeypatch):
    missing = S3Target(s3_moto.endpoint, "no-such-bucket")
    dep, cli = s3_deployment(tmp_path / "a", missing)
    result = cli("init")
    assert result.exit_code == 6 and len(result.stderr.strip().splitlines()) == 1
    assert "bucket no-such-bucket does not exist" in result.stderr
    assert "aws s3api create-bucket --bucket no-such-bucket" in result.stderr

    dep, cli = s3_deployment(tmp_path / "b", s3_moto, 'object_lock = "30d"\n')
    result = cli("init")
    assert result.exit_code == 6 and len(result.stderr.strip().splitlines()) == 1
    assert "does not have Object Lock enabled" in result.stderr
    assert s3_moto.keys() == {}  # checked before anything is written

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    dep, cli = s3_deployment(tmp_path / "c", s3_moto)
    result = cli("init")
    assert result.exit_code == 4 and len(result.stderr.strip().splitlines()) == 1
    assert "no usable AWS credentials" in result.stderr


def test_init_says_in_one_line_when_the_server_ignores_conditional_writes(tmp_path, s3_moto):
    from tests.tcp_proxy import in_a_thread
    from tests.test_s3_faults import IgnoringProxy

    with in_a_thread(IgnoringProxy(int(s3_moto.endpoint.rsplit(":", 1)[1]))) as proxy:
        target = S3Target(f"http://127.0.0.1:{proxy.port}", s3_moto.bucket)
        dep, cli = s3_deployment(tmp_path, target)
        created = cli("init")
        assert created.exit_code == 0, created.stderr
        assert created.stderr.strip().splitlines() == [f"note: {NO_CONDITIONAL_NOTE}"]
        assert cli("init").exit_code == 6  # the HEAD before the PUT finds the config


def test_forget_prune_extends_the_retention_of_old_objects_kept_snapshots_need(
        tmp_path, s3_lock_bucket, primary_server):
    # 12 s: the second snapshot and the forget must run before the first snapshot's objects
    # run out (6 s after the wait below); with 6 s (3.5 s wait) a loaded machine missed it
    dep, cli = s3_deployment(tmp_path, s3_lock_bucket, 'object_lock = "12s"\n')
    assert cli("init").exit_code == 0
    load_table(primary_server, "app.t", sample_docs(400))
    assert cli("snapshot").exit_code == 0
    client, bucket = s3_lock_bucket.client(), s3_lock_bucket.bucket
    old = {key: client.head_object(Bucket=bucket, Key=key)["ObjectLockRetainUntilDate"]
           for key in s3_lock_bucket.keys() if not key.startswith("locks/")}
    time.sleep(6.5)  # past half of object_lock: the first snapshot's objects are due
    primary_server.put_texts(TableName("app", "t"), ['{"id":"new"}'])
    assert cli("snapshot").exit_code == 0  # incremental: reuses the first one's segments

    forgot = cli("forget", "--keep-last", "1", "--prune", "--json")
    assert forgot.exit_code == 0, forgot.stderr
    report = json.loads(forgot.stdout)
    assert len(report["held"]) == 1  # the first snapshot is still retained
    extended = {key for key, until in old.items()
                if client.head_object(Bucket=bucket, Key=key)["ObjectLockRetainUntilDate"] > until}
    held_manifest = f"snapshots/{report['held'][0]}"
    assert held_manifest not in extended  # what the rules drop is never extended
    assert "config" in extended and any(k.startswith("keys/") for k in extended)
    assert any(k.startswith("data/") for k in extended)
    assert report["prune"]["retention_extended"] == len(extended)
