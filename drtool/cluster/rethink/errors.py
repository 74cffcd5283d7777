"""Driver errors to drtool errors: ``translate_error`` (part of the real-server adapter).

Every exception of the ``rethinkdb`` driver (and of its sockets) that a query or a connection
raises is translated here and raised ``from None``, so none escapes the adapter:
ReqlAuthError -> AuthError; driver, socket and "Connection is closed" errors ->
ClusterUnreachable (retryable); permission errors -> PermissionDenied (2.4.4 reports a missing
``config`` permission for ``ignore_write_hook`` as an internal error); a missing table,
database or user -> NotFound; an indeterminate or "not available now" failure ->
ClusterUnreachable; any other ReQL error -> ClusterError with the server's message. Messages
never carry the query printout (documents) nor the password.
"""

from __future__ import annotations

import re

from drtool.cluster.rethink import util
from drtool.cluster.rethink.driver import rerr
from drtool.cluster.rethink.util import PermissionDenied
from drtool.errors import AuthError, ClusterError, ClusterUnreachable, DrtoolError, NotFound
from drtool.model import TableName

_MISSING = re.compile(
    r"^(Table `[^`]*` does not exist|Database `[^`]*` does not exist|User `[^`]*` not found)")
# 2.4.4 reports a missing config permission for ignore_write_hook as an internal error
_PERMISSION = re.compile(r"does not have the required `\w+` permission")
#: What a failed query or connection raises from the driver (translated by translate_error)
DRIVER_FAILURES = (rerr.ReqlError, OSError, EOFError)
# OpFailed/OpIndeterminate/runtime messages meaning "not available now" (retryable)
_UNAVAILABLE = re.compile(
    r"unavailable|not available|Cannot perform (read|write)|lost contact|timed out|"
    r"Could not find|not ready|Connection is closed", re.IGNORECASE)


def translate_error(err: BaseException, where: str, table: TableName | None = None,
                    secret: str | None = None) -> DrtoolError:
    """Map a driver (or socket) exception to the drtool error to raise ``from None``.

    ``where`` is the role and host (``Cluster.description``). Uses the server's message
    without the query printout, so documents in a query never end up in a message."""
    msg = util.scrub(" ".join(str(getattr(err, "message", None) or err).split()), secret)
    what = f"{where} table {table}" if table is not None else where
    if isinstance(err, rerr.ReqlAuthError):
        return AuthError(f"{where}: credentials refused: {msg}")
    if isinstance(err, (rerr.ReqlDriverError, OSError, EOFError)) or (
        isinstance(err, rerr.ReqlRuntimeError) and msg.startswith("Connection is closed")
    ):
        return ClusterUnreachable(f"{what}: connection lost ({msg.rstrip('.')}); try again later")
    if isinstance(err, rerr.ReqlPermissionError) or (
        isinstance(err, rerr.ReqlInternalError) and _PERMISSION.search(msg)
    ):
        return PermissionDenied(f"{what}: permission denied: {msg}")
    if isinstance(err, rerr.ReqlOpFailedError) and _MISSING.match(msg):
        return NotFound(f"{what}: {msg}")
    if isinstance(err, rerr.ReqlOpIndeterminateError) or (
        isinstance(err, rerr.ReqlRuntimeError) and _UNAVAILABLE.search(msg)
    ):
        return ClusterUnreachable(f"{what}: the cluster is not available: {msg.rstrip('.')}; "
                                  "try again later")
    if isinstance(err, rerr.ReqlError):
        return ClusterError(f"{what}: the server refused the query: {msg}")
    return ClusterError(f"{what}: unexpected {type(err).__name__}: {msg}")
