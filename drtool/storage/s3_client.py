"""The S3 client behind ``s3://`` storage: the only module importing boto3/botocore.

Blocking calls, one per S3 request, used from worker threads by ``drtool.storage.s3`` (boto3
clients are thread-safe once built). Every botocore exception is translated here, at the
boundary, into drtool's hierarchy (``S3Client.error``): no botocore type escapes.

Credentials come only from the AWS SDK's standard chain (environment variables, the shared
config/credentials files and ``AWS_PROFILE``, container and instance roles), never from the
policy. botocore's own retries are off: ``RetryingStorage`` is the one place that retries.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError, ClientError, ConnectionError as BotoConnectionError, CredentialRetrievalError,
    HTTPClientError, NoCredentialsError, PartialCredentialsError,
)

from drtool.errors import (
    AuthError, DrtoolError, ObjectNotFound, RepositoryError, StorageError, StorageUnreachable,
)

#: S3 error codes that mean "these credentials are not accepted".
_BAD_CREDENTIALS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                    "TokenRefreshRequired", "InvalidClientTokenId", "AuthorizationHeaderMalformed"}
#: Codes of failures that may pass (server busy or restarting); HTTP 5xx counts too.
_TRANSIENT = {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling",
              "ThrottlingException", "RequestThrottled", "OperationAborted"}
_MISSING_OBJECT = {"NoSuchKey", "404", "NotFound"}


class PreconditionFailed(Exception):
    """A conditional PUT (If-None-Match: *) found the key already there (HTTP 412)."""


@dataclass(frozen=True)
class Head:
    """What a HEAD of one object tells: size, time of the write, version, Object Lock date."""

    size: int
    modified: datetime | None
    version_id: str | None
    retain_until: datetime | None


class S3Client:
    """One bucket at one endpoint; ``location`` (``s3://bucket/prefix``) starts every message.

    ``addressing`` is "path" (``endpoint/bucket/key``: MinIO, Ceph, most self-hosted servers)
    or "virtual" (``bucket.endpoint/key``: AWS). Nothing is contacted until the first call."""

    def __init__(self, bucket: str, location: str, *, endpoint: str | None, region: str | None,
                 addressing: str, connections: int, timeout: float) -> None:
        self.bucket, self.location, self.endpoint = bucket, location, endpoint
        self._region, self._addressing = region, addressing
        self._connections, self._timeout = connections, timeout
        self._lock = threading.Lock()
        self._client = None

    # --- the client, built on first use ---------------------------------------------------
    @property
    def s3(self):
        with self._lock:
            if self._client is None:
                session = boto3.session.Session()  # the standard credential chain
                region = self._region or session.region_name or "us-east-1"
                self._client = session.client("s3", endpoint_url=self.endpoint, region_name=region,
                                              config=Config(
                    s3={"addressing_style": self._addressing},
                    max_pool_connections=self._connections,
                    retries={"total_max_attempts": 1},  # RetryingStorage retries
                    connect_timeout=self._timeout, read_timeout=self._timeout,
                ))
            return self._client

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # --- errors -----------------------------------------------------------------------------
    def missing_bucket(self) -> RepositoryError:
        where = f" at {self.endpoint}" if self.endpoint else ""
        flag = f" --endpoint-url {self.endpoint}" if self.endpoint else ""
        return RepositoryError(
            f"{self.location}: bucket {self.bucket} does not exist{where}: create it first, e.g. "
            f"aws s3api create-bucket --bucket {self.bucket}{flag} (add "
            "--object-lock-enabled-for-bucket for object_lock)")

    def lock_disabled(self) -> RepositoryError:
        return RepositoryError(
            f"{self.location}: bucket {self.bucket} does not have Object Lock enabled, which "
            "repository.object_lock needs: create a bucket with "
            f"aws s3api create-bucket --bucket NAME --object-lock-enabled-for-bucket, or remove "
            "object_lock from the policy")

    def error(self, exc: Exception, doing: str, name: str) -> DrtoolError:
        """The drtool error for ``exc``, raised while ``doing`` (a verb) object ``name``."""
        if isinstance(exc, DrtoolError):
            return exc
        what = f"{doing} {name}".strip()
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)):
            return AuthError(
                f"{self.location}: no usable AWS credentials ({exc}): set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run with an instance or container role")
        if isinstance(exc, (BotoConnectionError, HTTPClientError)):
            return StorageUnreachable(
                f"{self.location}: connection failed {what} ({type(exc).__name__}): check the "
                f"endpoint {self.endpoint or 'of AWS S3'} and the network, then try again")
        if not isinstance(exc, ClientError):
            if isinstance(exc, BotoCoreError):
                return StorageError(f"{self.location}: {what} failed: {exc}")
            return StorageUnreachable(f"{self.location}: {what} failed ({exc}): try again")
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        message = str(err.get("Message", "")) or code
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code == "NoSuchBucket" or (code in ("404", "NotFound") and not name):
            return self.missing_bucket()
        if code in _MISSING_OBJECT or (status == 404 and name):
            return ObjectNotFound(name, self.location)
        if code in _BAD_CREDENTIALS:
            return AuthError(
                f"{self.location}: the server refused the AWS credentials ({code}): check "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the profile in use")
        if code == "RequestTimeTooSkewed":
            return StorageError(
                f"{self.location}: this host's clock is too far from the server's (S3 allows 15 "
                "minutes): set the time right (NTP), then try again")
        if code in ("AccessDenied", "AllAccessDisabled") or status == 403:
            return AuthError(
                f"{self.location}: access denied {what}: the credentials in use lack the "
                f"permission for it on bucket {self.bucket} (see README, s3 repositories)")
        if "object lock" in message.lower() and code in ("InvalidRequest", "InvalidArgument"):
            return self.lock_disabled()
        if code in _TRANSIENT or status >= 500:
            return StorageUnreachable(
                f"{self.location}: the server failed {what} ({code}: {message}): try again later")
        return StorageError(f"{self.location}: {what} failed ({code}: {message})")

    @staticmethod
    def code(exc: Exception) -> str:
        return str(exc.response.get("Error", {}).get("Code", "")) if isinstance(exc, ClientError) else ""

    def _call(self, doing: str, name: str, op, *args, **kwargs):
        try:
            return op(*args, **kwargs)
        except PreconditionFailed:
            raise
        except ClientError as exc:
            if self.code(exc) in ("PreconditionFailed", "412") or (
                    exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 412):
                raise PreconditionFailed() from None
            raise self.error(exc, doing, name) from None
        except (BotoCoreError, OSError) as exc:
            raise self.error(exc, doing, name) from None

    # --- objects ----------------------------------------------------------------------------
    @staticmethod
    def _write_args(if_none_match: bool, retain_until: datetime | None,
                    storage_class: str | None) -> dict:
        args: dict = {}
        if if_none_match:
            args["IfNoneMatch"] = "*"
        if retain_until is not None:
            args.update(ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=retain_until)
        if storage_class:
            args["StorageClass"] = storage_class
        return args

    def put(self, key: str, name: str, data: bytes, *, if_none_match: bool,
            retain_until: datetime | None = None, storage_class: str | None = None) -> None:
        """One PUT. Raises PreconditionFailed when ``if_none_match`` and the key exists."""
        args = self._write_args(if_none_match, retain_until, storage_class)
        self._call("writing", name, self.s3.put_object, Bucket=self.bucket, Key=key, Body=data,
                   **args)

    def put_multipart(self, key: str, name: str, data: bytes, part_size: int, *,
                      if_none_match: bool, retain_until: datetime | None = None,
                      storage_class: str | None = None) -> None:
        """A multipart upload of ``data``: nothing is visible until the completion, and any
        failure aborts the upload (best effort; ``abort_stale_uploads`` gets the rest)."""
        lock_args = self._write_args(False, retain_until, storage_class)
        upload = self._call("writing", name, self.s3.create_multipart_upload,
                            Bucket=self.bucket, Key=key, **lock_args)["UploadId"]
        done = False
        try:
            parts, view = [], memoryview(data)
            for number, start in enumerate(range(0, len(data), part_size), start=1):
                reply = self._call("writing", name, self.s3.upload_part, Bucket=self.bucket,
                                   Key=key, UploadId=upload, PartNumber=number,
                                   Body=bytes(view[start:start + part_size]))
                parts.append({"PartNumber": number, "ETag": reply["ETag"]})
            extra = {"IfNoneMatch": "*"} if if_none_match else {}
            self._call("writing", name, self.s3.complete_multipart_upload, Bucket=self.bucket,
                       Key=key, UploadId=upload, MultipartUpload={"Parts": parts}, **extra)
            done = True
        finally:
            if not done:
                try:
                    self.s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload)
                except (BotoCoreError, ClientError):
                    pass  # the server is gone: a later list() aborts it once it is stale

    def get(self, key: str, name: str, offset: int, length: int | None) -> bytes:
        """The object's bytes from ``offset`` (``length`` of them, fewer at the end)."""
        args = {}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            args["Range"] = f"bytes={offset}-{end}"
        try:
            reply = self.s3.get_object(Bucket=self.bucket, Key=key, **args)
            with reply["Body"] as body:
                return body.read()
        except ClientError as exc:
            if self.code(exc) == "InvalidRange":
                self.head(key, name)  # past the end of an object, or no object at all?
                return b""
            raise self.error(exc, "reading", name) from None
        except (BotoCoreError, OSError) as exc:
            raise self.error(exc, "reading", name) from None

    def head(self, key: str, name: str) -> Head:
        """Raises ObjectNotFound."""
        reply = self._call("reading", name, self.s3.head_object, Bucket=self.bucket, Key=key)
        return Head(reply["ContentLength"], reply.get("LastModified"), reply.get("VersionId"),
                    reply.get("ObjectLockRetainUntilDate"))

    def list_page(self, prefix: str, token: str | None) -> tuple[list[tuple], str | None]:
        """One page of (key, size, time written) under ``prefix`` and the token of the next
        (None: last)."""
        args = {"ContinuationToken": token} if token else {}
        reply = self._call("listing", prefix, self.s3.list_objects_v2, Bucket=self.bucket,
                           Prefix=prefix, **args)
        found = [(o["Key"], o["Size"], o.get("LastModified")) for o in reply.get("Contents", ())]
        return found, reply.get("NextContinuationToken") if reply.get("IsTruncated") else None

    def delete(self, key: str, name: str, version_id: str | None = None) -> None:
        """DELETE (of one version when given: permanent, no delete marker). S3 answers a
        missing key with success, so this is idempotent."""
        args = {"VersionId": version_id} if version_id else {}
        self._call("deleting", name, self.s3.delete_object, Bucket=self.bucket, Key=key, **args)

    def put_retention(self, key: str, name: str, version_id: str | None,
                      until: datetime) -> None:
        """Set the COMPLIANCE retention of one version to ``until`` (S3 only lets it grow)."""
        args = {"VersionId": version_id} if version_id else {}
        self._call("extending the retention of", name, self.s3.put_object_retention,
                   Bucket=self.bucket, Key=key, Retention={"Mode": "COMPLIANCE",
                                                           "RetainUntilDate": until}, **args)

    def abort_stale_uploads(self, prefix: str, older_than: datetime) -> int:
        """Abort the multipart uploads under ``prefix`` started before ``older_than``."""
        aborted, args = 0, {}
        while True:
            reply = self._call("listing", "uploads", self.s3.list_multipart_uploads,
                               Bucket=self.bucket, Prefix=prefix, **args)
            for up in reply.get("Uploads", ()):
                if up["Initiated"] < older_than:
                    self._call("deleting", up["Key"], self.s3.abort_multipart_upload,
                               Bucket=self.bucket, Key=up["Key"], UploadId=up["UploadId"])
                    aborted += 1
            if not reply.get("IsTruncated"):
                return aborted
            args = {"KeyMarker": reply["NextKeyMarker"],
                    "UploadIdMarker": reply["NextUploadIdMarker"]}

    # --- the bucket ---------------------------------------------------------------------------
    def check_bucket(self) -> None:
        """Raises RepositoryError naming the bucket when it does not exist."""
        self._call("checking", "", self.s3.head_bucket, Bucket=self.bucket)

    def object_lock_enabled(self) -> bool:
        try:
            reply = self.s3.get_object_lock_configuration(Bucket=self.bucket)
        except ClientError as exc:
            if self.code(exc) in ("ObjectLockConfigurationNotFoundError", "NotImplemented"):
                return False
            raise self.error(exc, "checking Object Lock of", self.bucket) from None
        except (BotoCoreError, OSError) as exc:
            raise self.error(exc, "checking Object Lock of", self.bucket) from None
        return reply.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"

    def supports_if_none_match(self, probe_key: str) -> bool:
        """Whether a PUT with If-None-Match: * is refused when the key exists: writes
        ``probe_key`` twice, then deletes every version of it."""
        self.put(probe_key, probe_key, b"probe", if_none_match=False)
        try:
            self.put(probe_key, probe_key, b"probe", if_none_match=True)
            supported = False
        except PreconditionFailed:
            supported = True
        except DrtoolError as exc:
            if "NotImplemented" not in str(exc):
                raise
            supported = False
        try:
            self.delete_all_versions(probe_key)
        except DrtoolError:
            pass  # no permission to delete: the probe stays, hidden (list never shows it)
        return supported

    def delete_all_versions(self, key: str) -> None:
        try:
            reply = self.s3.list_object_versions(Bucket=self.bucket, Prefix=key)
            versions = [v for v in reply.get("Versions", []) + reply.get("DeleteMarkers", [])
                        if v["Key"] == key]
        except ClientError:
            versions = []  # a server without versioning: one plain delete does it
        for v in versions:
            self.delete(key, key, v["VersionId"])
        if not versions:
            self.delete(key, key)
