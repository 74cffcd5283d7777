"""The drtool command line (Typer). Thin: parse arguments, call the core, render results.

Errors: every DrtoolError becomes one line on stderr (``drtool: error: ...``) and its exit code
(drtool.errors); no traceback reaches the user unless DRTOOL_DEBUG=1.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from drtool import __version__
from drtool.cli import render
from drtool.errors import EXIT_INTERRUPTED, DrtoolError, UsageError
from drtool.policy import Policy, load_policy

EXIT_INTERNAL = 70

app = typer.Typer(
    name="drtool",
    help="Disaster recovery for RethinkDB: encrypted snapshots, restore, verify.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
)

PolicyOpt = Annotated[
    Path | None,
    typer.Option("--policy", "-p", envvar="DRTOOL_POLICY", show_envvar=True,
                 help="Policy file (TOML) describing the deployment."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]

F = TypeVar("F", bound=Callable[..., Any])


class State:
    policy: Path | None = None
    quiet: bool = False


def _print_version(value: bool) -> None:
    if value:
        print(f"drtool {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    ctx: typer.Context,
    policy: Annotated[Path | None, typer.Option("--policy", "-p", help="Policy file (TOML).")] = None,
    quiet: QuietOpt = False,
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print drtool's version and exit.")] = False,
) -> None:
    state = State()
    state.policy, state.quiet = policy, quiet
    ctx.obj = state


INTERRUPTED_DEFAULT = "nothing was left half-written in the repository"
INTERRUPTED = {
    "snapshot": "no snapshot was made (one exists only once its manifest is written); what was "
                "already stored is reused by the next run",
    "restore": "the target tables may be partly restored: run the same restore again with "
               "--conflict replace",
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


def quiet(ctx: typer.Context, flag: bool) -> bool:
    return flag or bool(ctx.obj and ctx.obj.quiet)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:  # outside any command (e.g. while parsing)
        sys.exit(EXIT_INTERRUPTED)


# Command modules register themselves on ``app``.
from drtool.cli import data_commands, repo_commands, retention_commands  # noqa: E402,F401
from drtool.cli import diff_commands  # noqa: E402,F401
from drtool.cli import interop_commands  # noqa: E402,F401
from drtool.cli import failover_commands  # noqa: E402,F401
from drtool.cli import standby_commands  # noqa: E402,F401
from drtool.cli import log_commands  # noqa: E402,F401
