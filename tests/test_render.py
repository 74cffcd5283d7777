"""The progress rate text: tasks count documents; the byte rate comes from the bytes seen."""

from __future__ import annotations

from drtool.cli.render import rate_text


def test_rate_text_shows_documents_and_bytes_per_second():
    assert rate_text(None, 0, 0) == ""
    assert rate_text(2000.0, 100, 100 * 512) == "2,000 docs/s 1000.0 KiB/s"
