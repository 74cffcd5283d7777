"""S3 storage when things go wrong, against moto's server: the server going away in the middle
of an upload and coming back, wrong or missing credentials, a missing bucket, credentials
without the permission to list or delete (moto with IAM checks on), Object Lock refusing a
delete, and a clock too far off."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime, timedelta

import pytest

from drtool.errors import (
    EXIT_AUTH, EXIT_REPOSITORY, AuthError, ObjectExists, ObjectRetained, RepositoryError,
    StorageError, StorageUnreachable,
)
from drtool.storage.retry import RetryingStorage
from drtool.storage.s3 import NO_CONDITIONAL_NOTE, S3Storage
from tests.s3server import MotoServer, boto_client
from tests.storage_contract import names
from tests.tcp_proxy import Connection, TcpProxy


class StoppingProxy(TcpProxy):
    """A loopback TCP proxy to the S3 server that, once ``stop_after`` bytes went upstream,
    drops every connection and stops listening (the server going away mid-upload) until
    ``listen()`` is called again (same port)."""

    def __init__(self, target_port: int, stop_after: int) -> None:
        super().__init__(target_port)
        self.stop_after, self.stops = stop_after, 0

    def upstream(self, conn: Connection) -> bool:
        if self.sent < self.stop_after or self.stops:
            return False
        self.stops += 1
        self.server.close()
        for c in list(self.open):
            c.abort()
        return True


@pytest.mark.parametrize("size", [3 * 1024 * 1024, 20 * 1024 * 1024], ids=["put", "multipart"])
async def test_server_gone_mid_upload_then_back_is_retried_with_no_partial_object(s3_moto, size):
    data = os.urandom(size)
    proxy = StoppingProxy(int(s3_moto.endpoint.rsplit(":", 1)[1]), stop_after=size // 2)
    await proxy.listen()
    waits: list[float] = []

    async def restart_then_go_on(seconds: float) -> None:  # the retry's wait: the server is back
        waits.append(seconds)
        await proxy.listen()

    inner = S3Storage(s3_moto.bucket, "repo", endpoint=f"http://127.0.0.1:{proxy.port}",
                      addressing="path")
    storage = RetryingStorage(inner, sleep=restart_then_go_on)
    try:
        await storage.put("data/ab/big", data)
        assert proxy.stops == 1 and len(waits) == 1
        assert await names(storage) == {"data/ab/big": size}
        assert await storage.get("data/ab/big") == data
    finally:
        await storage.close()
        proxy.server.close()
    assert s3_moto.keys().keys() == {"repo/data/ab/big"}  # nothing partial, no second object
    # An upload cut before its completion is invisible; a later list aborts it once stale.
    direct = s3_moto.storage(addressing="path")
    await asyncio.to_thread(direct.client.abort_stale_uploads, "repo/",
                            datetime.now(UTC) + timedelta(seconds=1))
    assert s3_moto.uploads() == []
    await direct.close()


async def test_server_down_is_unreachable_and_retryable(s3_env):
    from tests.sshd import free_port

    storage = S3Storage("some-bucket", endpoint=f"http://127.0.0.1:{free_port()}",
                        addressing="path", timeout=5)
    with pytest.raises(StorageUnreachable, match="connection failed reading x") as info:
        await storage.stat("x")
    assert info.value.retryable and info.value.exit_code == 3
    await storage.close()


async def test_missing_bucket_is_exit_6_naming_it_and_how_to_create_it(s3_moto):
    storage = S3Storage("no-such-bucket-here", "p", endpoint=s3_moto.endpoint, addressing="path")
    for attempt in (storage.check(), storage.put("config", b"x")):
        with pytest.raises(RepositoryError) as info:
            await attempt
        assert info.value.exit_code == EXIT_REPOSITORY == 6 and not info.value.retryable
        assert "bucket no-such-bucket-here does not exist" in str(info.value)
        assert f"aws s3api create-bucket --bucket no-such-bucket-here --endpoint-url {s3_moto.endpoint}" in str(info.value)
    await storage.close()


async def test_no_credentials_anywhere_is_exit_4(s3_moto, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    storage = s3_moto.storage(addressing="path")
    with pytest.raises(AuthError, match="no usable AWS credentials") as info:
        await storage.stat("x")
    assert info.value.exit_code == EXIT_AUTH == 4
    assert "AWS_PROFILE" in str(info.value)
    await storage.close()


# --- moto with IAM checks on ----------------------------------------------------------------
@pytest.fixture(scope="module")
def iam_moto():
    """A moto server checking credentials and IAM policies after the setup's 8 requests: a
    bucket; user "writer" (get, put, head; no list, no delete) and user "lister" (everything
    but delete)."""
    pytest.importorskip("moto.server", reason="moto[server] is not installed")
    server = MotoServer({"INITIAL_NO_AUTH_ACTION_COUNT": "8"}).start()
    import boto3

    admin = dict(aws_access_key_id="setup", aws_secret_access_key="setup")
    iam = boto3.client("iam", endpoint_url=server.endpoint, region_name="us-east-1", **admin)
    boto_client(server.endpoint, **admin).create_bucket(Bucket="guarded")  # 1
    users = {}
    for user, actions in (("writer", ["s3:GetObject", "s3:PutObject"]),
                          ("lister", ["s3:GetObject", "s3:PutObject", "s3:ListBucket",
                                      "s3:ListBucketMultipartUploads"])):
        iam.create_user(UserName=user)
        key = iam.create_access_key(UserName=user)["AccessKey"]
        iam.put_user_policy(UserName=user, PolicyName="drtool", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}))
        users[user] = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                       "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
    server.users = users
    yield server
    server.stop()


def as_user(monkeypatch, server, env: dict[str, str]) -> S3Storage:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # At the bucket's root: moto's signature check fails a list whose prefix= holds a "/".
    return S3Storage("guarded", "", endpoint=server.endpoint, addressing="path")


@pytest.mark.parametrize("secret_ok", [False, True], ids=["unknown key", "wrong secret"])
async def test_wrong_credentials_are_exit_4_never_retried(s3_env, iam_moto, monkeypatch, secret_ok):
    good = iam_moto.users["writer"]
    env = {"AWS_ACCESS_KEY_ID": good["AWS_ACCESS_KEY_ID"] if secret_ok else "AKIAUNKNOWN000000000",
           "AWS_SECRET_ACCESS_KEY": "wrong-secret-value"}
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    storage = RetryingStorage(as_user(monkeypatch, iam_moto, env), sleep=record)
    with pytest.raises(AuthError) as info:
        await storage.put("config", b"x")
    message = str(info.value)
    assert info.value.exit_code == 4 and waits == []
    assert "the server refused the AWS credentials" in message
    assert ("SignatureDoesNotMatch" if secret_ok else "InvalidAccessKeyId") in message
    assert "wrong-secret-value" not in message and "\n" not in message
    await storage.close()


async def test_no_permission_to_list_or_delete_is_exit_4_saying_which(s3_env, iam_moto, monkeypatch):
    storage = as_user(monkeypatch, iam_moto, iam_moto.users["writer"])
    await storage.put("data/x", b"written")  # allowed
    assert await storage.get("data/x") == b"written"
    with pytest.raises(AuthError) as info:
        await names(storage)
    assert "access denied listing" in str(info.value) and info.value.exit_code == 4
    assert "bucket guarded" in str(info.value)
    await storage.close()

    storage = as_user(monkeypatch, iam_moto, iam_moto.users["lister"])
    assert await names(storage) == {"data/x": 7}
    with pytest.raises(AuthError, match="access denied deleting data/x"):
        await storage.delete("data/x")
    assert await names(storage) == {"data/x": 7}
    await storage.close()


# --- Object Lock ----------------------------------------------------------------------------
async def test_object_lock_refuses_a_delete_and_the_server_enforces_it(s3_lock_bucket):
    storage = s3_lock_bucket.storage(addressing="path", retention=3600, unretained=("locks/",))
    await storage.put("data/ab/obj", b"precious")
    await storage.put("locks/l1", b"short-lived")
    info = await storage.stat("data/ab/obj")
    assert info.retain_until - info.modified >= timedelta(seconds=3590)
    with pytest.raises(ObjectRetained) as refused:
        await storage.delete("data/ab/obj")
    assert refused.value.exit_code == 6 and "under Object Lock retention until" in str(refused.value)
    assert await storage.get("data/ab/obj") == b"precious"
    # Not drtool's own restraint: the server refuses to delete the version too.
    client = s3_lock_bucket.client()
    version = client.head_object(Bucket=s3_lock_bucket.bucket, Key="data/ab/obj")["VersionId"]
    with pytest.raises(Exception, match="AccessDenied"):
        client.delete_object(Bucket=s3_lock_bucket.bucket, Key="data/ab/obj", VersionId=version)
    # Lock objects carry no retention and go for good (no version, no delete marker left).
    assert (await storage.stat("locks/l1")).retain_until is None
    await storage.delete("locks/l1")
    await storage.delete("locks/l1")
    versions = client.list_object_versions(Bucket=s3_lock_bucket.bucket, Prefix="locks/")
    assert versions.get("Versions", []) == [] and versions.get("DeleteMarkers", []) == []
    await storage.close()


async def test_an_expired_retention_lets_the_object_go(s3_lock_bucket):
    storage = s3_lock_bucket.storage(addressing="path", retention=1)
    await storage.put("snapshots/s1", b"old")
    until = (await storage.stat("snapshots/s1")).retain_until
    await asyncio.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds()) + 1.1)
    await storage.delete("snapshots/s1")
    assert await names(storage) == {}
    await storage.close()


async def test_init_check_needs_object_lock_on_the_bucket(s3_moto, s3_lock_bucket):
    plain = s3_moto.storage(addressing="path", retention=86400)
    with pytest.raises(RepositoryError) as info:
        await plain.check()
    assert f"bucket {s3_moto.bucket} does not have Object Lock enabled" in str(info.value)
    assert "--object-lock-enabled-for-bucket" in str(info.value) and info.value.exit_code == 6
    await plain.close()
    locked = s3_lock_bucket.storage(addressing="path", retention=86400)
    assert await locked.check() == []
    await locked.close()


# --- translation of what moto cannot produce ------------------------------------------------
def test_clock_skew_is_one_line_saying_so():
    from botocore.exceptions import ClientError

    from drtool.storage.s3_client import S3Client

    client = S3Client("b", "s3://b/p", endpoint=None, region=None, addressing="path",
                      connections=1, timeout=1)
    skew = ClientError({"Error": {"Code": "RequestTimeTooSkewed", "Message": "The difference "
                                  "between the request time and the current time is too large."},
                        "ResponseMetadata": {"HTTPStatusCode": 403}}, "PutObject")
    error = client.error(skew, "writing", "config")
    assert isinstance(error, StorageError) and not isinstance(error, AuthError)
    assert str(error) == ("s3://b/p: this host's clock is too far from the server's (S3 allows 15 "
                          "minutes): set the time right (NTP), then try again")
    slow = ClientError({"Error": {"Code": "SlowDown", "Message": "Reduce your request rate."},
                        "ResponseMetadata": {"HTTPStatusCode": 503}}, "PutObject")
    assert isinstance(client.error(slow, "writing", "x"), StorageUnreachable)


# --- a server that ignores conditional writes -----------------------------------------------
class IgnoringProxy(TcpProxy):
    """Renames the If-None-Match request header (same length; moto checks no signature
    here), so that moto behaves like a server that ignores conditional writes."""

    def rewrite(self, data: bytes) -> bytes:
        return data.replace(b"\r\nIf-None-Match: ", b"\r\nX-Not-A-Match: ")


async def test_a_server_ignoring_if_none_match_is_noted_and_write_once_still_holds(s3_moto):
    proxy = IgnoringProxy(int(s3_moto.endpoint.rsplit(":", 1)[1]))
    await proxy.listen()
    storage = S3Storage(s3_moto.bucket, "p", endpoint=f"http://127.0.0.1:{proxy.port}",
                        addressing="path")
    try:
        notes = await storage.check()
        assert notes == [NO_CONDITIONAL_NOTE] and not await storage.conditional_writes()
        assert "drtool checks with a HEAD before each PUT instead" in notes[0]
        await storage.put("k", b"original")
        await storage.put("k", b"original")
        with pytest.raises(ObjectExists):
            await storage.put("k", b"a different, longer content")
        assert await storage.get("k") == b"original"
        assert await names(storage) == {"k": 8}
    finally:
        await storage.close()
        proxy.server.close()


async def test_extend_retention_only_when_half_of_it_is_gone(s3_lock_bucket):
    # 10 s, so a loaded machine still asks the first time with more than half of it ahead
    storage = s3_lock_bucket.storage(addressing="path", retention=10)
    await storage.put("data/ab/obj", b"kept")
    first = (await storage.stat("data/ab/obj")).retain_until
    assert not await storage.extend_retention("data/ab/obj")  # most of it is still ahead
    await asyncio.sleep(5.5)
    assert await storage.extend_retention("data/ab/obj")
    assert (await storage.stat("data/ab/obj")).retain_until > first + timedelta(seconds=5)
    plain = s3_lock_bucket.storage(addressing="path")  # no object_lock in the policy
    assert not await plain.extend_retention("data/ab/obj")
    await storage.close()
    await plain.close()
