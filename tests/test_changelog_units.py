"""Units of the change log: slice format, the primary's clock (jumps), the spool, --at and
[archive] bad input."""

from __future__ import annotations

import asyncio

import pytest

from drtool.changelog.clock import PrimaryClock
from drtool.changelog.slices import (
    GRANULE_MS, OpenSlice, SliceHeader, decode_slice, encode_slice, slice_name,
)
from drtool.changelog.spool import Spool, SpoolFull
from drtool.errors import IntegrityError, PolicyError
from tests.conftest import Cli

KEY = "0" * 32
TL = "1796385492399-72160678"


def test_slice_round_trip_keeps_last_version_per_granule_and_tombstones():
    t0 = 1796385492399
    open_ = OpenSlice(t0=t0)
    open_.add(t0 + 10, '"a"', '{"id":"a","v":1}')
    open_.add(t0 + 20, '"a"', '{"id":"a","v":2}')  # same granule: replaces v1
    open_.add(t0 + GRANULE_MS + 30, '"a"', None)  # next granule: a tombstone, kept
    open_.add(t0 + 5, '"b"', '{"id":"b","tab":"\\t"}')  # stamps never go back: clamped
    entries = open_.entries()
    assert [(k, d) for _, k, d in entries] == [
        ('"a"', '{"id":"a","v":2}'), ('"a"', None), ('"b"', '{"id":"b","tab":"\\t"}')]
    assert entries[2][0] == t0 + GRANULE_MS + 30
    t1 = t0 + 10_000
    name = slice_name(KEY, TL, t0, t1)
    header = SliceHeader("app.t", TL, t0, t1, "base", len(entries))
    assert decode_slice(name, encode_slice(header, entries)) == (header, entries)


def test_a_slice_that_does_not_match_its_name_or_count_is_refused():
    t0, t1 = 1796385492399, 1796385493399
    header = SliceHeader("app.t", TL, t0, t1, "base", 1)
    text = encode_slice(header, [(t0 + 1, '"a"', "{}")])
    with pytest.raises(IntegrityError, match="does not match its name"):
        decode_slice(slice_name(KEY, TL, t0, t1 + 1), text)
    with pytest.raises(IntegrityError, match="malformed"):
        decode_slice(slice_name(KEY, TL, t0, t1), b"not json\n")
    short = encode_slice(SliceHeader("app.t", TL, t0, t1, "base", 2), [(t0 + 1, '"a"', "{}")])
    with pytest.raises(IntegrityError, match="count"):
        decode_slice(slice_name(KEY, TL, t0, t1), short)


async def test_the_clock_never_goes_back_when_the_primarys_jumps():
    server = [1000.0]
    mono = [0.0]

    async def server_time() -> float:
        return server[0] + mono[0]

    clock = PrimaryClock(server_time, monotonic=lambda: mono[0])
    await clock.measure()
    first = clock.now_ms()
    assert first == 1_000_000
    server[0] -= 60  # the primary's clock jumps back a minute
    for _ in range(11):  # the old sample leaves the window of 10
        await clock.measure()
    mono[0] += 1
    assert clock.now_ms() == first  # held at the newest stamp handed out, never lower
    server[0] += 120  # and forward two minutes
    for _ in range(11):
        await clock.measure()
    assert clock.now_ms() == 1_000_000 + 61_000


async def test_spool_is_bounded_whole_files_and_keeps_order(tmp_path):
    spool = Spool(tmp_path / "spool", 1000)
    (tmp_path / "spool" / "leftover.slice.tmp").write_bytes(b"half")  # a killed writer's
    spool = Spool(tmp_path / "spool", 1000)
    assert not list((tmp_path / "spool").glob("*.tmp"))
    await spool.put("log/a/b/s-1-2", b"x" * 400)
    await asyncio.sleep(0.001)
    await spool.put("log/a/b/s-2-3", b"y" * 400)
    with pytest.raises(SpoolFull, match="is full"):
        await spool.put("log/a/b/s-3-4", b"z" * 400)
    assert [name for _, name in spool.pending()] == ["log/a/b/s-1-2", "log/a/b/s-2-3"]
    await spool.remove(spool.pending()[0][0])
    assert spool.size == 400
    assert Spool(tmp_path / "spool", 1000).size == 400  # a new run counts what is left


@pytest.mark.parametrize("text, expected", [
    ('slice_every = "0.1s"', "archive.slice_every: expected a duration from 0.5s to 1h"),
    ('slice_every = "often"', "archive.slice_every: expected a duration like"),
    ('spool_size = "10"', "archive.spool_size: expected at least 1048576 bytes"),
    ('slice_evry = "10s"', "archive.slice_evry"),
])
def test_archive_section_bad_values_are_one_line(tmp_path, text, expected):
    from drtool.config.policy import load_policy

    path = tmp_path / "p.toml"
    path.write_text(f'name = "x"\n[primary]\nhosts = ["h:1"]\n[archive]\n{text}\n')
    with pytest.raises(PolicyError, match=expected.replace(".", r"\.")):
        load_policy(path)


def test_restore_at_bad_input_is_one_line_exit_2(deployment):
    cli = Cli(deployment.path)
    for args, said in ((["restore", "--at", "yesterday"], "--at yesterday: expected a time"),
                       (["restore", "--at", "2026-12-04T10:00:00"], "give the time zone"),
                       (["restore", "latest", "--at", "-5m"], "not both"),
                       (["restore"], "give a snapshot id")):
        got = cli(*args)
        assert got.exit_code == 2, got.stderr
        assert got.stderr.strip().count("\n") == 0 and said in got.stderr, got.stderr
