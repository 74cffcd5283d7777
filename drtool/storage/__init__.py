"""Storage backends and the one place where they are built: ``open_storage``.

Stacking order (innermost first): backend -> bandwidth limit -> retry. Retry is outermost so
that a retried upload is throttled again like the first attempt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from drtool.errors import StorageError, UsageError
from drtool.storage.base import ObjectInfo, Storage, check_name
from drtool.storage.limiter import limit_bandwidth
from drtool.util.units import BandwidthSchedule

__all__ = ["ObjectInfo", "Storage", "check_name", "open_storage"]


def open_storage(repo: Any, *, create: bool = False,
                 bandwidth: BandwidthSchedule | None = None,
                 short_lived: tuple[str, ...] = ()) -> Storage:
    """Build the storage for a repository policy, with its wrappers.

    ``repo`` has the attributes ``url``, ``scheme`` ("file", "sftp" or "s3"), ``path``, ``user``,
    ``host``, ``port``, ``identity_file`` and ``known_hosts`` (``drtool.config.policy``).

    file://: the directory must exist; with ``create=True`` it is made (its parent must
    exist). sftp://: nothing is contacted until the first operation; with ``create=True`` the
    remote directory is made then. Raises StorageError, or UsageError for an unknown scheme.
    ``bandwidth`` is the policy's ``throttle.bandwidth`` (None: unlimited): upload and download
    limits follow its timetable in local time.

    s3://: ``repo`` also has ``bucket``, ``endpoint``, ``region``, ``addressing``,
    ``storage_class`` and ``object_lock`` (seconds or None); nothing is contacted until the
    first operation (``create`` makes no bucket: ``Storage.check`` says how). Objects whose
    names start with one of ``short_lived`` (the repository's locks) get no Object Lock.
    """
    scheme = getattr(repo, "scheme", None)
    if scheme == "file":
        storage: Storage = _open_local(Path(repo.path), create=create)
    elif scheme == "sftp":
        # Imported here: paramiko is only loaded when an SFTP repository is used.
        from drtool.storage.sftp import SFTPStorage

        storage = SFTPStorage(
            host=repo.host,
            path=repo.path,
            user=repo.user,
            port=repo.port or 22,
            identity_file=repo.identity_file,
            known_hosts=repo.known_hosts,
            create=create,
        )
    elif scheme == "s3":
        # Imported here: boto3 is only loaded when an S3 repository is used.
        from drtool.storage.s3 import S3Storage

        storage = S3Storage(
            repo.bucket, repo.path, endpoint=repo.endpoint, region=repo.region,
            addressing=repo.addressing, storage_class=repo.storage_class,
            retention=repo.object_lock, unretained=short_lived,
        )
    else:
        raise UsageError(
            f"{repo.url}: unsupported repository scheme {scheme!r}: use file://, sftp:// or s3://"
        )

    # --- wrappers, innermost first ---
    storage = limit_bandwidth(storage, bandwidth)  # inside retry: retried bytes count too

    if scheme in ("sftp", "s3"):
        from drtool.storage.retry import RetryingStorage

        storage = RetryingStorage(storage)
    return storage


def _open_local(root: Path, *, create: bool) -> Storage:
    from drtool.storage.local import LocalStorage

    if create and not root.is_dir():
        root = root.absolute()
        if not root.parent.is_dir():
            raise StorageError(
                f"file://{root}: parent directory {root.parent} does not exist: create it first"
            )
        try:
            root.mkdir()
        except FileExistsError:
            raise StorageError(f"file://{root}: exists and is not a directory") from None
        except OSError as exc:
            raise StorageError(f"file://{root}: cannot create directory: {exc.strerror}") from None
    return LocalStorage(root)
