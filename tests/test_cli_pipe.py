"""A reader that closes drtool's stdout (``drtool status | head -1``) is a quiet exit."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_status_into_a_closed_pipe_exits_quietly(tmp_path: Path):
    port = closed_port()
    policy = tmp_path / "policy.toml"
    policy.write_text(f'name = "p"\n[primary]\nhosts = ["127.0.0.1:{port}"]\n[standby]\n'
                      f'hosts = ["127.0.0.1:{port}"]\n[repository]\nurl = "file://{tmp_path}/r"\n')
    read, write = os.pipe()
    os.close(read)  # the reader is gone before drtool writes its first line
    try:
        done = subprocess.run([sys.executable, "-m", "drtool", "-p", str(policy), "status"],
                              stdout=write, stderr=subprocess.PIPE, text=True, timeout=60,
                              cwd=Path(__file__).parents[1])
    finally:
        os.close(write)
    assert done.stderr == ""
    assert done.returncode == 0
