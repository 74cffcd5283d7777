"""The progress rate text: tasks count documents; the byte rate comes from the bytes seen."""

from __future__ import annotations

from drtool.cli.render import rate_text


def test_rate_text_shows_documents_and_bytes_per_second():
    assert rate_text(None, 0, 0) == ""
    assert rate_text(2000.0, 100, 100 * 512) == "2,000 docs/s 1000.0 KiB/s"


def test_tables_never_cut_ids_or_numbers_on_a_narrow_terminal(monkeypatch):
    import io

    from rich.console import Console

    from drtool.cli import render

    for width in (80, 60):
        out = io.StringIO()
        monkeypatch.setattr(render, "stdout", Console(file=out, width=width, highlight=False))
        ids = ["20261201T085230Z-abcd1234", "20261201T091500Z-00ff00ff"]
        render.print_table(None, ["id", "time (UTC)", "policy", "tables", "documents", "stored", "new"], [
            (sid, "2026-12-01 08:52:30", "production-cluster-eu-west", 12, 1234567, "40.5 MiB", "1.2 MiB")
            for sid in ids])
        text = out.getvalue()
        assert "…" not in text
        assert all(len(line) <= width for line in text.splitlines())
        for value in ids + ["1234567", "2026-12-01 08:52:30"]:
            assert value in text, (width, text)
