"""The layers of docs/ARCHITECTURE.md, read from the source with ``ast``: what each package may
import (so an arrow pointing the wrong way fails here), each third-party library in one module
(typer: the CLI package), and no import circle among the CLI's modules."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "drtool"
HOME = {  # library -> where it may be imported (a module, or a package ending in "/")
    "rethinkdb": "cluster/rethink/driver.py",
    "paramiko": "storage/sftp_connection.py",
    "boto3": "storage/s3_client.py",
    "botocore": "storage/s3_client.py",
    "cryptography": "repo/crypto.py",
    "msgspec": "cluster/rethink/decoder.py",
    "prometheus_client": "standby/metrics.py",
    "zstandard": "repo/compression.py",
    "asyncio_throttle": "util/throttle.py",
    "rich": "cli/render.py",
    "typer": "cli/",
}

_BASE = {"errors", "model"}
_LOW = _BASE | {"util", "reql"}
#: package (or top-level module) -> the drtool packages it may import besides itself
MAY_IMPORT: dict[str, set[str]] = {
    "errors": set(),
    "model": {"errors"},
    "util": _BASE,
    "reql": _BASE,
    "storage": _LOW,
    "cluster": _LOW,
    "repo": _LOW | {"storage"},
    "config": _LOW | {"repo"},
    "compare": _LOW | {"cluster", "config"},
    "coordination": _LOW | {"cluster", "config", "compare"},
    "snapshots": _LOW | {"cluster", "repo", "config", "compare"},
    "dumps": _LOW | {"cluster", "repo", "config", "snapshots"},
    "wiring": _LOW | {"storage", "cluster", "repo", "config", "coordination", "snapshots"},
    "changelog": _LOW | {"storage", "cluster", "repo", "config", "snapshots", "wiring"},
    "standby": _LOW | {"storage", "cluster", "repo", "config", "compare", "coordination",
                       "snapshots", "wiring", "changelog"},
    "failover": _LOW | {"cluster", "repo", "config", "compare", "coordination", "snapshots",
                        "wiring"},
    "cli": _LOW | {"storage", "cluster", "repo", "config", "compare", "coordination",
                   "snapshots", "dumps", "wiring", "standby", "failover", "changelog",
                   "__init__"},
    "__main__": {"cli"},
    "__init__": set(),
}


def _drtool_imports(path: Path) -> set[str]:
    """The drtool modules ``path`` imports, dotted without the leading ``drtool.``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "drtool":
                found.update(alias.name for alias in node.names)
            elif node.module.startswith("drtool."):
                found.add(node.module[len("drtool."):])
        elif isinstance(node, ast.Import):
            found.update(a.name[len("drtool."):] for a in node.names if a.name.startswith("drtool."))
    return {"__init__" if name == "__version__" else name for name in found}


def _libraries(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def _package(where: str) -> str:
    """``cluster/rethink/driver.py`` -> ``cluster``; ``errors.py`` -> ``errors``."""
    return where.split("/")[0].removesuffix(".py")


def _modules() -> list[tuple[str, Path]]:
    return [(p.relative_to(ROOT).as_posix(), p) for p in sorted(ROOT.rglob("*.py"))]


def test_each_library_is_imported_in_one_place_only():
    wrong = []
    for where, path in _modules():
        for lib in _libraries(path) & set(HOME):
            home = HOME[lib]
            if not (where == home or (home.endswith("/") and where.startswith(home))):
                wrong.append(f"{where} imports {lib} (only {home} may)")
    assert wrong == []


def test_every_package_imports_only_the_layers_below_it():
    wrong = []
    for where, path in _modules():
        me = _package(where)
        assert me in MAY_IMPORT, f"{where}: a new package; say in MAY_IMPORT what it may import"
        for name in _drtool_imports(path):
            target = name.split(".")[0]
            if target != me and target not in MAY_IMPORT[me]:
                wrong.append(f"{where} imports drtool.{name} ({me} may not import {target})")
    assert wrong == []


def test_the_layers_have_no_circle():
    """MAY_IMPORT itself is a partial order: no package may reach itself through others."""
    def reach(start: str) -> set[str]:
        seen, todo = set(), list(MAY_IMPORT[start])
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(MAY_IMPORT[name])
        return seen
    assert [p for p in MAY_IMPORT if p in reach(p)] == []


def test_standby_and_failover_do_not_import_each_other():
    assert "failover" not in MAY_IMPORT["standby"] and "standby" not in MAY_IMPORT["failover"]


def test_cli_command_modules_do_not_import_each_other():
    """The command modules register on ``cli.app``; the shared pieces (app, render, common)
    are the only CLI modules another one imports, so the CLI has no import circle."""
    shared = {"cli.app", "cli.render", "cli.common", "cli"}
    wrong = []
    for where, path in _modules():
        if where.startswith("cli/") and where not in ("cli/app.py", "cli/__init__.py"):
            wrong += [f"{where} imports drtool.{name}" for name in _drtool_imports(path)
                      if name.startswith("cli") and name not in shared]
    assert wrong == []


def test_every_home_exists():  # a renamed module must not make the checks above vacuous
    for lib, home in HOME.items():
        target = ROOT / home
        assert target.exists(), home
        if not home.endswith("/"):
            assert lib in _libraries(target), (lib, home)


def test_the_checks_see_a_wrong_arrow(tmp_path: Path):
    """A module of a low layer importing a higher one is found (the check is not vacuous)."""
    probe = tmp_path / "probe.py"
    probe.write_text("from drtool.standby.runner import Runner\nimport drtool.cli.app\n")
    assert _drtool_imports(probe) == {"standby.runner", "cli.app"}
    assert "standby" not in MAY_IMPORT["snapshots"]
