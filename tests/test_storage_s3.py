"""The storage contract against s3:// (moto's server, and DRTOOL_TEST_S3_URL when set): the
backend itself, the backend without conditional writes (HEAD then PUT), and what
open_storage builds (retry around S3)."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from drtool.storage import open_storage
from drtool.storage.retry import RetryingStorage
from drtool.storage.s3 import PROBE_PREFIX
from tests.storage_contract import StorageContract, names


def s3_policy(target, **extra) -> SimpleNamespace:
    fields = dict(url=target.url, scheme="s3", bucket=target.bucket, path=target.prefix,
                  endpoint=target.endpoint, region=None, addressing="path", storage_class=None,
                  object_lock=None)
    return SimpleNamespace(**{**fields, **extra})


class TestS3Storage(StorageContract):
    @pytest.fixture
    async def storage(self, s3_target):
        storage = s3_target.storage(addressing="path")
        yield storage
        await storage.close()


class TestS3StorageWithoutConditionalWrites(StorageContract):
    """As on a server that ignores If-None-Match: * (HEAD before every PUT), with the retry
    open_storage adds: moto's server answers 500 to concurrent plain PUTs of one key."""

    @pytest.fixture
    async def storage(self, s3_target):
        inner = s3_target.storage(addressing="path")
        inner._conditional = False
        storage = RetryingStorage(inner, base_delay=0.05, max_delay=0.2)
        yield storage
        await storage.close()


class TestOpenedS3Storage(StorageContract):
    @pytest.fixture
    async def storage(self, s3_target):
        storage = open_storage(s3_policy(s3_target))
        assert isinstance(storage, RetryingStorage)
        yield storage
        await storage.close()


async def test_moto_honours_conditional_writes_and_the_probe_leaves_nothing(s3_moto):
    storage = s3_moto.storage(addressing="path")
    assert await storage.check() == []
    assert await storage.conditional_writes()
    await storage.put("a", b"1")
    assert not any(PROBE_PREFIX in key for key in s3_moto.keys())
    await storage.close()


async def test_large_objects_go_up_in_parts_and_leave_no_upload(s3_moto):
    storage = s3_moto.storage(addressing="path")
    data = os.urandom(17 * 1024 * 1024)
    await storage.put("data/big", data)
    assert await storage.get("data/big") == data
    assert s3_moto.client().head_object(Bucket=s3_moto.bucket, Key="data/big")["ETag"].endswith('-3"')
    assert s3_moto.uploads() == []
    await storage.close()


async def test_keys_outside_drtools_names_are_not_listed(s3_moto):
    storage = s3_moto.storage(addressing="path")
    client = s3_moto.client()
    for key in ("folder/", ".drtool-probe-x", "data/.hidden", "a b"):
        client.put_object(Bucket=s3_moto.bucket, Key=key, Body=b"x")
    await storage.put("data/ok", b"1")
    assert await names(storage) == {"data/ok": 1}
    await storage.close()
