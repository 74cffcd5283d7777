"""Each third-party library lives in one module (typer: the CLI package), and the core never
imports the CLI: read from the source with ``ast``, so a new import elsewhere fails here."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "drtool"
HOME = {  # library -> where it may be imported (a module, or a package ending in "/")
    "rethinkdb": "cluster/rethink_driver.py",
    "paramiko": "storage/sftp_connection.py",
    "boto3": "storage/s3_client.py",
    "botocore": "storage/s3_client.py",
    "cryptography": "crypto.py",
    "msgspec": "cluster/rethink_decoder.py",
    "prometheus_client": "standby/metrics.py",
    "zstandard": "repo/compression.py",
    "asyncio_throttle": "throttle.py",
    "rich": "cli/render.py",
    "typer": "cli/",
}


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0] if not node.module.startswith("drtool.cli")
                      else "drtool.cli")
    return found


def test_each_library_is_imported_in_one_place_only():
    wrong = []
    for path in sorted(ROOT.rglob("*.py")):
        where = path.relative_to(ROOT).as_posix()
        for lib in imports(path) & set(HOME):
            home = HOME[lib]
            if not (where == home or (home.endswith("/") and where.startswith(home))):
                wrong.append(f"{where} imports {lib} (only {home} may)")
    assert wrong == []


def test_the_core_never_imports_the_cli():
    entry = {"__main__.py"}  # ``python -m drtool`` starts the CLI
    wrong = [where for where in (p.relative_to(ROOT).as_posix() for p in sorted(ROOT.rglob("*.py")))
             if not where.startswith("cli/") and where not in entry
             and "drtool.cli" in imports(ROOT / where)]
    assert wrong == []


def test_every_home_exists():  # a renamed module must not make the checks above vacuous
    for lib, home in HOME.items():
        target = ROOT / home
        assert target.exists(), home
        if not home.endswith("/"):
            assert lib in imports(target), (lib, home)
