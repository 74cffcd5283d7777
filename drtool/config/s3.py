"""The s3:// part of the ``[repository]`` section: ``url = "s3://bucket/prefix"`` and the keys
only an S3 repository uses (helper of ``drtool.config.repository``; one-line PolicyErrors).

Credentials never go in the policy: boto3's standard chain finds them (README, "s3
repositories"); a user name or password in the URL or the endpoint is refused.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from drtool.errors import PolicyError
from drtool.config.fields import Section
from drtool.util.units import parse_duration

S3_KEYS = ("endpoint", "region", "addressing", "storage_class", "object_lock")
ADDRESSING = ("path", "virtual")
#: Storage classes whose objects can be read back at once (restore must read them).
STORAGE_CLASSES = ("STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING",
                   "REDUCED_REDUNDANCY", "GLACIER_IR")
_ARCHIVE_CLASSES = ("GLACIER", "DEEP_ARCHIVE")
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX_PART_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_REGION_RE = re.compile(r"[a-z0-9][a-z0-9-]*")
_URL_WHAT = 'an s3:// URL like "s3://bucket/prefix" (bucket: 3-63 of a-z 0-9 . -)'


_RETENTION_EXPECTED = 'a duration like "30d" or "2w"'


def _retention(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError:
        raise ValueError(f"expected {_RETENTION_EXPECTED}") from None


def refuse_s3_keys(sec: Section, scheme: str) -> None:
    """A PolicyError for the first s3-only key present in a ``scheme`` repository."""
    for key in S3_KEYS:
        if sec.has(key):
            raise sec.error(key, f"no {key} with a {scheme}:// repository (only s3:// uses one)",
                            sec.data[key])


def parse_s3(sec: Section, file: str, url: str) -> dict[str, Any]:
    """The fields of an s3:// RepositoryPolicy: scheme, bucket, path (the prefix, "" for the
    bucket's root), endpoint, region, addressing ("path" by default with an endpoint, else
    "virtual"), storage_class, object_lock (seconds, or None)."""
    split = urlsplit(url)
    if split.username is not None or split.password is not None:
        raise PolicyError(f"{file}: repository.url: secrets never go in a policy file: AWS "
                          "credentials come from the environment, ~/.aws or a role")
    bucket, prefix = split.netloc, split.path.strip("/")
    if (_BUCKET_RE.fullmatch(bucket) is None or ".." in bucket or split.query or split.fragment
            or "//" in split.path
            or any(_PREFIX_PART_RE.fullmatch(p) is None for p in prefix.split("/") if prefix)):
        raise sec.error("url", _URL_WHAT, url)
    endpoint = sec.string("endpoint")
    if endpoint is not None:
        ep = urlsplit(endpoint)
        if ep.username is not None or ep.password is not None:
            raise PolicyError(f"{file}: repository.endpoint: secrets never go in a policy file: "
                              "AWS credentials come from the environment, ~/.aws or a role")
        try:
            ep.port  # noqa: B018 (raises ValueError for a bad port)
        except ValueError:
            raise sec.error("endpoint", 'a URL like "https://s3.example.com:9000"', endpoint) from None
        if ep.scheme not in ("http", "https") or not ep.hostname or ep.path.strip("/") \
                or ep.query or ep.fragment:
            raise sec.error("endpoint", 'a URL like "https://s3.example.com:9000"', endpoint)
    region = sec.string("region")
    if region is not None and _REGION_RE.fullmatch(region) is None:
        raise sec.error("region", 'a region name like "eu-west-1" (or "auto" for R2)', region)
    addressing = sec.data.get("addressing", "path" if endpoint else "virtual")
    if addressing not in ADDRESSING:
        raise sec.error("addressing", '"path" or "virtual"', addressing)
    storage_class = sec.string("storage_class")
    if storage_class in _ARCHIVE_CLASSES:
        raise PolicyError(f"{file}: repository.storage_class: {storage_class} objects cannot be "
                          "read without a restore request, so restore would fail: use one of "
                          + ", ".join(STORAGE_CLASSES))
    if storage_class is not None and storage_class not in STORAGE_CLASSES:
        raise sec.error("storage_class", "one of " + ", ".join(STORAGE_CLASSES), storage_class)
    lock = None
    if sec.has("object_lock"):
        lock = sec.parsed("object_lock", _retention, _RETENTION_EXPECTED)
        if lock <= 0:
            raise sec.error("object_lock", 'a retention longer than zero, like "30d"',
                            sec.data["object_lock"])
    return dict(scheme="s3", bucket=bucket, path=prefix, endpoint=endpoint, region=region,
                addressing=addressing, storage_class=storage_class, object_lock=lock)
