"""The one error hierarchy of drtool.

Every error a user can cause is a ``DrtoolError``: its ``str()`` is one line saying what went
wrong, where, and what to do; its ``exit_code`` is the documented process exit code (see
README.md, "Exit codes"). Adapters translate third-party exceptions into these at their
boundary (``raise ... from None`` so that no driver traceback or secret leaks). ``retryable``
tells wrappers (storage retry, cluster resume) whether trying again can help.

Exit codes:
    0  success
    1  a check found a problem (verify, diff); nothing is broken in drtool itself
    2  usage or policy error: bad argument, bad policy file, unknown table or snapshot
    3  a cluster or repository cannot be reached (network, timeout): try again later
    4  credentials refused: database password, SSH key, unknown or changed SSH host key
    5  encryption keys: identity or passphrase missing, wrong, or unsafe (file mode)
    6  repository problem: missing, already exists, unsupported format, damaged object
    7  the cluster refused or failed an operation (conflicts, primary key mismatch, ...)
    8  another drtool process owns this policy: a runner lease is held, or the roles
       generation moved on (a stale runner after a failover)
  130  interrupted (Ctrl-C)
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_AUTH = 4
EXIT_KEYS = 5
EXIT_REPOSITORY = 6
EXIT_CLUSTER = 7
EXIT_OWNERSHIP = 8
EXIT_INTERRUPTED = 130


class DrtoolError(Exception):
    """Base of every error drtool reports to a user. ``str(err)`` is one line."""

    exit_code = EXIT_CHECK_FAILED
    retryable = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        # Keep user-facing messages on one line whatever the cause text contains.
        super().__init__(" ".join(str(message).split()))
        if retryable is not None:
            self.retryable = retryable


# --- 1: checks -------------------------------------------------------------------------
class CheckFailed(DrtoolError):
    """A verification or comparison found differences or damage."""

    exit_code = EXIT_CHECK_FAILED


# --- 2: usage / policy ------------------------------------------------------------------
class UsageError(DrtoolError):
    """The user asked for something malformed or nonexistent (argument, table, snapshot)."""

    exit_code = EXIT_USAGE


class PolicyError(UsageError):
    """A policy file is missing, unreadable or invalid.

    Message form: ``<file>: <key.path>: expected <what>, got <value>``.
    """


class NotFound(UsageError):
    """A named thing (table, snapshot, database) does not exist."""


# --- 3: unreachable ---------------------------------------------------------------------
class UnreachableError(DrtoolError):
    """A cluster or repository cannot be reached now; trying again later may work."""

    exit_code = EXIT_UNREACHABLE
    retryable = True


class ClusterUnreachable(UnreachableError):
    pass


class StorageUnreachable(UnreachableError):
    pass


# --- 4: auth ----------------------------------------------------------------------------
class AuthError(DrtoolError):
    """Credentials or host identity refused. Never retryable."""

    exit_code = EXIT_AUTH
    retryable = False


# --- 5: keys ----------------------------------------------------------------------------
class EncryptionKeyError(DrtoolError):
    """Encryption keys missing, wrong or unsafe (identity file, passphrase, writer key)."""

    exit_code = EXIT_KEYS


# --- 6: repository ----------------------------------------------------------------------
class RepositoryError(DrtoolError):
    """The repository is missing, already exists, has an unknown format, or is unusable."""

    exit_code = EXIT_REPOSITORY


class StorageError(RepositoryError):
    """A storage backend failed an operation (permission denied, disk full, ...)."""


class ObjectNotFound(StorageError):
    """The named object does not exist in the storage."""

    def __init__(self, name: str, where: str = "") -> None:
        self.name = name
        super().__init__(f"{where + ': ' if where else ''}object {name} does not exist")


class ObjectExists(StorageError):
    """An object of that name already exists with different content (objects are write-once)."""

    def __init__(self, name: str, where: str = "") -> None:
        self.name = name
        super().__init__(
            f"{where + ': ' if where else ''}object {name} already exists with different content"
        )


class ObjectRetained(StorageError):
    """The object is under Object Lock retention (s3:// with object_lock) until ``until``: it
    cannot be deleted before then. Not an error for forget/prune, which report it as waiting."""

    def __init__(self, name: str, until: str, where: str = "") -> None:
        self.name, self.until = name, until
        super().__init__(f"{where + ': ' if where else ''}object {name} is under Object Lock "
                         f"retention until {until}: it cannot be deleted before then")


class IntegrityError(RepositoryError):
    """An object failed authentication or a digest check: truncated, corrupted or swapped."""


# --- 7: cluster -------------------------------------------------------------------------
class ClusterError(DrtoolError):
    """The cluster refused or failed an operation."""

    exit_code = EXIT_CLUSTER


class ConflictError(ClusterError):
    """Documents already exist in the target and the chosen conflict mode forbids overwriting."""


class FeedOverflowed(ClusterError):
    """A changefeed dropped changes before it was ready (its queue filled at once)."""


class SchemaMismatch(ClusterError):
    """The target table's shape (e.g. primary key) does not match the source."""


class PermissionDenied(ClusterError):
    """The server refused a query for lack of a permission (the user's read, write or config
    permission in that database or table)."""


class FailoverError(ClusterError):
    """A failover or failback cannot go on (a check failed, another one is running, the
    clusters are not in the state the step needs). The message says what to do."""


# --- 8: ownership -----------------------------------------------------------------------
class OwnershipError(DrtoolError):
    """Another drtool process owns what this one wanted (a lease), or this process's roles
    generation is stale (a failover happened since it started)."""

    exit_code = EXIT_OWNERSHIP


class LeaseHeld(OwnershipError):
    """A lease (one runner per policy) is held by another live process."""


class StaleGeneration(OwnershipError):
    """The roles generation on a cluster is higher than the one this process started with."""
