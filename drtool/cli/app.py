"""The drtool command line (Typer): the one module that registers the commands. Thin: each
command module parses its arguments, calls the core and renders results; they share only
``drtool.cli.common`` (options, errors) and ``drtool.cli.render`` (output), so the CLI has no
import circle.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from drtool import __version__
from drtool.cli import (
    data_commands, diff_commands, failover_commands, interop_commands, repo_commands,
    log_commands, retention_commands, standby_commands,
)
from drtool.cli.common import QuietOpt, State, closed_pipe
from drtool.errors import EXIT_INTERRUPTED

app = typer.Typer(
    name="drtool",
    help="Disaster recovery for RethinkDB: encrypted snapshots, restore, verify.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
)


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
    state = ctx.obj if isinstance(ctx.obj, State) else State()
    state.policy, state.quiet = policy, quiet
    ctx.obj = state


#: every command, in the order ``drtool --help`` lists them
COMMANDS = (
    (data_commands.snapshot, "snapshot"),
    (data_commands.restore, "restore"),
    (log_commands.timeline, "timeline"),
    (repo_commands.keygen, "keygen"),
    (repo_commands.init, "init"),
    (repo_commands.snapshots, "snapshots"),
    (repo_commands.verify, "verify"),
    (retention_commands.forget, "forget"),
    (retention_commands.prune_command, "prune"),
    (retention_commands.unlock, "unlock"),
    (diff_commands.diff, "diff"),
    (diff_commands.reconcile, "reconcile"),
    (interop_commands.import_dump_command, "import-dump"),
    (interop_commands.export_dump_command, "export-dump"),
    (failover_commands.failover, "failover"),
    (failover_commands.failback, "failback"),
    (failover_commands.reapply, "reapply"),
    (standby_commands.replicate, "replicate"),
    (standby_commands.status, "status"),
)
for _command, _name in COMMANDS:
    app.command(_name)(_command)


def main() -> None:
    """Console-script entry point."""
    try:
        try:
            app()
        finally:
            sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
    except KeyboardInterrupt:  # outside any command (e.g. while parsing)
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        sys.exit(closed_pipe())
