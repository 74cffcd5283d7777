"""The s3:// keys of [repository]: what is accepted, and one line for each bad value."""

from __future__ import annotations

import pytest

from tests.test_policy import error_of, load

URL_WHAT = 'expected an s3:// URL like "s3://bucket/prefix" (bucket: 3-63 of a-z 0-9 . -)'
CLASSES = "STANDARD, STANDARD_IA, ONEZONE_IA, INTELLIGENT_TIERING, REDUCED_REDUNDANCY, GLACIER_IR"


def test_s3_repository_with_every_key(tmp_path):
    r = load(tmp_path, repository='url = "s3://backups.example/prod/rethink"\n'
             'endpoint = "https://minio.lan:9000"\nregion = "eu-west-1"\naddressing = "virtual"\n'
             'storage_class = "STANDARD_IA"\nobject_lock = "30d"').repository
    assert (r.scheme, r.bucket, r.path, r.endpoint, r.region) == (
        "s3", "backups.example", "prod/rethink", "https://minio.lan:9000", "eu-west-1")
    assert (r.addressing, r.storage_class, r.object_lock) == ("virtual", "STANDARD_IA", 30 * 86400)
    assert r.user is r.host is r.identity_file is None


def test_s3_defaults(tmp_path):
    r = load(tmp_path, repository='url = "s3://my-bucket"').repository
    assert (r.bucket, r.path, r.endpoint, r.region, r.addressing) == ("my-bucket", "", None, None, "virtual")
    assert r.storage_class is r.object_lock is None
    r = load(tmp_path, repository='url = "s3://my-bucket/"\nendpoint = "http://127.0.0.1:9000"').repository
    assert (r.path, r.addressing) == ("", "path")  # self-hosted servers: path-style by default


CASES = {
    "bucket too short": ('url = "s3://x"', f'repository.url: {URL_WHAT}, got "s3://x"'),
    "bucket upper case": ('url = "s3://MyBucket/p"', f'repository.url: {URL_WHAT}, got "s3://MyBucket/p"'),
    "no bucket": ('url = "s3:///p"', f'repository.url: {URL_WHAT}, got "s3:///p"'),
    "dot-dot prefix": ('url = "s3://bkt/a/../b"', f'repository.url: {URL_WHAT}, got "s3://bkt/a/../b"'),
    "empty prefix part": ('url = "s3://bkt/a//b"', f'repository.url: {URL_WHAT}, got "s3://bkt/a//b"'),
    "query": ('url = "s3://bkt/p?region=x"', f'repository.url: {URL_WHAT}, got "s3://bkt/p?region=x"'),
    "endpoint scheme": ('url = "s3://bkt"\nendpoint = "minio:9000"',
                        'repository.endpoint: expected a URL like "https://s3.example.com:9000", got "minio:9000"'),
    "endpoint path": ('url = "s3://bkt"\nendpoint = "http://h/bkt"',
                      'repository.endpoint: expected a URL like "https://s3.example.com:9000", got "http://h/bkt"'),
    "endpoint port": ('url = "s3://bkt"\nendpoint = "http://h:99999"',
                      'repository.endpoint: expected a URL like "https://s3.example.com:9000", got "http://h:99999"'),
    "region": ('url = "s3://bkt"\nregion = "EU West"',
               'repository.region: expected a region name like "eu-west-1" (or "auto" for R2), got "EU West"'),
    "addressing": ('url = "s3://bkt"\naddressing = "dns"', 'repository.addressing: expected "path" or "virtual", got "dns"'),
    "storage class": ('url = "s3://bkt"\nstorage_class = "cheap"',
                      f'repository.storage_class: expected one of {CLASSES}, got "cheap"'),
    "archive class": ('url = "s3://bkt"\nstorage_class = "DEEP_ARCHIVE"',
                      "repository.storage_class: DEEP_ARCHIVE objects cannot be read without a restore "
                      f"request, so restore would fail: use one of {CLASSES}"),
    "lock not a duration": ('url = "s3://bkt"\nobject_lock = "30"',
                            'repository.object_lock: expected a duration like "30d" or "2w", got "30"'),
    "lock as number": ('url = "s3://bkt"\nobject_lock = 30',
                       'repository.object_lock: expected a duration like "30d" or "2w", got 30'),
    "lock zero": ('url = "s3://bkt"\nobject_lock = "0d"',
                  'repository.object_lock: expected a retention longer than zero, like "30d", got "0d"'),
    "s3 key on file": ('url = "file:///r"\nendpoint = "http://h"',
                       'repository.endpoint: expected no endpoint with a file:// repository (only s3:// uses one), got "http://h"'),
    "s3 key on sftp": ('url = "sftp://h/r"\nobject_lock = "30d"',
                       'repository.object_lock: expected no object_lock with a sftp:// repository (only s3:// uses one), got "30d"'),
    "sftp key on s3": ('url = "s3://bkt"\nidentity_file = "id"',
                       'repository.identity_file: expected no identity_file with a s3:// repository (only sftp:// uses one), got "id"'),
}


@pytest.mark.parametrize("body, expected", CASES.values(), ids=CASES.keys())
def test_s3_policy_errors(tmp_path, body, expected):
    assert error_of(tmp_path, repository=body) == expected


@pytest.mark.parametrize("body, secret", [
    ('url = "s3://AKIAEXAMPLE:wJalrXUt@bkt/p"', "wJalrXUt"),
    ('url = "s3://bkt"\nendpoint = "https://AKIAEXAMPLE:wJalrXUt@minio:9000"', "wJalrXUt"),
])
def test_s3_credentials_in_urls_are_refused_without_echo(tmp_path, body, secret):
    message = error_of(tmp_path, repository=body)
    assert "secrets never go in a policy file: AWS credentials come from the environment" in message
    assert secret not in message


def test_s3_secret_keys_are_refused(tmp_path):
    message = error_of(tmp_path, repository='url = "s3://bkt"\naws_secret_access_key = "wJalrXUt"')
    assert message.startswith("repository.aws_secret_access_key: secrets never go in a policy file")
    assert "wJalrXUt" not in message
