"""What every command module of the CLI shares: its options, the one-line error handling, the
policy and the flags given before the command, and running the core's coroutines.

Errors: every DrtoolError becomes one line on stderr (``drtool: error: ...``) and its exit code
(drtool.errors); no traceback reaches the user unless DRTOOL_DEBUG=1.
"""

from __future__ import annotations

import asyncio
import functools
import os
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer

from drtool.cli import render
from drtool.cluster import Connector
from drtool.config.policy import Policy, load_policy
from drtool.errors import EXIT_INTERRUPTED, DrtoolError, UsageError

EXIT_INTERNAL = 70

PolicyOpt = Annotated[
    Path | None,
    typer.Option("--policy", "-p", envvar="DRTOOL_POLICY", show_envvar=True,
                 help="Policy file (TOML) describing the deployment."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]

TableOpt = Annotated[
    Optional[list[str]],
    typer.Option("--table", "-t", help="db.table to include (repeatable; default: the policy's)."),
]
Role = Annotated[str | None, typer.Option(help="Cluster to use: primary or standby.")]


F = TypeVar("F", bound=Callable[..., Any])


#: keys of a list shown in a table's line (the rest: --json, or a dry run lists every key)
SAMPLE_KEYS = 5


class State:
    """The options given before the command (``drtool -p FILE -q COMMAND``), and how the
    clusters are reached: None, the real servers, unless the caller of the application (a
    test, a bench) passed a State with its own ``connector`` as Typer's ``obj``."""

    def __init__(self, connector: Connector | None = None) -> None:
        self.policy: Path | None = None
        self.quiet = False
        self.connector = connector


INTERRUPTED_DEFAULT = "nothing was left half-written in the repository"
INTERRUPTED = {
    "snapshot": "no snapshot was made (one exists only once its manifest is written); what was "
                "already stored is reused by the next run",
    "restore": "the target tables may be partly restored: run the same restore again with "
               "--delta (it writes only what differs) or with --conflict replace",
    "reconcile": "the target may be partly repaired: run reconcile again",
    "prune": "run prune again to finish (deletions are idempotent)",
}


def reports_errors(fn: F) -> F:
    """Turn drtool errors into one line and an exit code; hide tracebacks."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DrtoolError as err:
            render.error(str(err))
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            render.error(f"interrupted: {INTERRUPTED.get(fn.__name__, INTERRUPTED_DEFAULT)}")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except typer.Exit:
            raise
        except Exception as err:  # a bug in drtool: say so, without a traceback by default
            if os.environ.get("DRTOOL_DEBUG"):
                traceback.print_exc()
            render.error(f"internal error: {type(err).__name__}: {err} (set DRTOOL_DEBUG=1 for "
                         "a traceback and please report it)")
            raise typer.Exit(EXIT_INTERNAL) from None

    return wrapper  # type: ignore[return-value]


def policy_from(ctx: typer.Context, policy: Path | None) -> Policy:
    path = policy or (ctx.obj.policy if ctx.obj else None)
    if path is None:
        raise UsageError("no policy given: pass --policy FILE or set DRTOOL_POLICY")
    return load_policy(path, command=ctx.info_name)


def connector(ctx: typer.Context) -> Connector | None:
    """How this invocation reaches the clusters (see ``State``)."""
    return ctx.obj.connector if isinstance(ctx.obj, State) else None


def quiet(ctx: typer.Context, flag: bool) -> bool:
    return flag or bool(ctx.obj and ctx.obj.quiet)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def parse_role(value: str | None, default: str) -> str:
    """``--to``/``--from``: primary or standby (``default`` when not given)."""
    role = value or default
    if role not in ("primary", "standby"):
        raise UsageError(f"expected primary or standby, got {role!r}")
    return role
