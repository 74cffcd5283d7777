from datetime import datetime, timedelta, timezone

import pytest

from drtool.util.units import (
    BandwidthSchedule,
    format_bytes,
    format_rate,
    parse_doc_rate,
    parse_duration,
    parse_rate,
    parse_size,
)

MiB = 1024 * 1024
# 2024-01-01 is a Monday.
MON, TUE, FRI, SAT, SUN = (datetime(2024, 1, d) for d in (1, 2, 5, 6, 7))


def at(day: datetime, hh: int, mm: int = 0, ss: int = 0) -> datetime:
    return day.replace(hour=hh, minute=mm, second=ss)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0", 0), ("512", 512), ("512B", 512), ("1k", 1000), ("1KB", 1000), ("1KiB", 1024),
        ("20MiB", 20 * MiB), ("20 MiB", 20 * MiB), ("20mib", 20 * MiB), ("2M", 2_000_000),
        ("2MB", 2_000_000), ("1G", 10**9), ("1GB", 10**9), ("1GiB", 1024**3), ("1.5KiB", 1536),
        ("1TiB", 1024**4),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected
    assert isinstance(parse_size(text), int)


@pytest.mark.parametrize("text", ["", "MiB", "-1MiB", "20XB", "20 Mi B", "1e3", "twenty", "1,5MiB"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError, match=r'^expected a size like "20MiB"$'):
        parse_size(text)


@pytest.mark.parametrize(
    "text, expected",
    [("20MiB/s", 20.0 * MiB), ("20MiB", 20.0 * MiB), ("1k/s", 1000.0), ("off", None),
     ("OFF", None), ("unlimited", None), (" 5 MiB/s ", 5.0 * MiB)],
)
def test_parse_rate(text, expected):
    assert parse_rate(text) == expected


@pytest.mark.parametrize("text", ["fast", "0MiB/s", "0", "20MiB/h", "/s", "", "-5MiB/s"])
def test_parse_rate_rejects(text):
    with pytest.raises(ValueError, match=r'^expected a rate like "20MiB/s" or "off"'):
        parse_rate(text)


@pytest.mark.parametrize(
    "text, expected",
    [("20000docs/s", 20000.0), ("1doc/s", 1.0), ("20k docs/s", 20000.0), ("1.5M docs/s", 1.5e6),
     ("250 docs/s", 250.0)],
)
def test_parse_doc_rate(text, expected):
    assert parse_doc_rate(text) == expected


@pytest.mark.parametrize("text", ["20000", "0docs/s", "fast", "20000docs", "20000 docs/min"])
def test_parse_doc_rate_rejects(text):
    with pytest.raises(ValueError, match=r'^expected a document rate like "20000docs/s"$'):
        parse_doc_rate(text)


@pytest.mark.parametrize(
    "text, expected",
    [("6h", 21600.0), ("90m", 5400.0), ("30s", 30.0), ("1d", 86400.0), ("1h30m", 5400.0),
     ("2w", 1209600.0), ("1d2h3m4s", 93784.0), ("1.5h", 5400.0), ("0s", 0.0)],
)
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "6", "h", "30m1h", "1h1h", "6 hours", "1h 30m", "-1h", "1y"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match=r'^expected a duration like "6h", "90m" or "1h30m"$'):
        parse_duration(text)


@pytest.mark.parametrize(
    "n, expected",
    [(0, "0 B"), (512, "512 B"), (1023, "1023 B"), (1024, "1.0 KiB"),
     (int(12.3 * MiB), "12.3 MiB"), (3 * 1024**3, "3.0 GiB"), (5 * 1024**5, "5.0 PiB")],
)
def test_format_bytes(n, expected):
    assert format_bytes(n) == expected


def test_format_rate():
    assert format_rate(20.0 * MiB) == "20.0 MiB/s"
    assert format_rate(None) == "unlimited"


# --- bandwidth schedules ---------------------------------------------------------------------
def test_plain_rate_applies_both_ways_and_never_changes():
    s = BandwidthSchedule.parse("20MiB/s")
    assert not s.timetable
    assert s.limits_at(at(SAT, 3)) == (20.0 * MiB, 20.0 * MiB)
    assert s.next_change_after(at(SAT, 3)) is None
    assert str(s) == "20MiB/s"


def test_off_is_unlimited():
    assert BandwidthSchedule.parse("off").limits_at(at(MON, 0)) == (None, None)


@pytest.mark.parametrize(
    "text, expected",
    [("10MiB/s:off", (10.0 * MiB, None)), ("off:1MiB/s", (None, 1.0 * MiB)),
     ("1MiB/s:2MiB/s", (1.0 * MiB, 2.0 * MiB))],
)
def test_upload_download_pair(text, expected):
    assert BandwidthSchedule.parse(text).limits_at(at(TUE, 12)) == expected


def test_daily_timetable_across_midnight():
    s = BandwidthSchedule.parse("08:00,5MiB/s 20:00,off")
    assert s.timetable
    assert s.limits_at(at(TUE, 7, 59, 59)) == (None, None)  # wraps from 20:00 the day before
    assert s.limits_at(at(TUE, 8)) == (5.0 * MiB, 5.0 * MiB)  # at the entry time exactly
    assert s.limits_at(at(TUE, 19, 59)) == (5.0 * MiB, 5.0 * MiB)
    assert s.limits_at(at(TUE, 20)) == (None, None)
    assert s.limits_at(at(TUE, 23, 59)) == (None, None)
    assert s.next_change_after(at(TUE, 21)) == at(TUE + timedelta(days=1), 8)
    assert s.next_change_after(at(TUE, 8)) == at(TUE, 20)


def test_timetable_wraps_across_the_week_boundary():
    s = BandwidthSchedule.parse("Mon-09:00,1MiB/s Sun-18:00,2MiB/s:off")
    # Monday 08:00 is before the first entry of the week: the last one (Sunday 18:00) applies.
    assert s.limits_at(at(MON, 8)) == (2.0 * MiB, None)
    assert s.limits_at(at(MON, 9)) == (1.0 * MiB, 1.0 * MiB)
    assert s.limits_at(at(SUN, 17, 59)) == (1.0 * MiB, 1.0 * MiB)
    assert s.limits_at(at(SUN, 18)) == (2.0 * MiB, None)
    assert s.next_change_after(at(SUN, 20)) == at(SUN + timedelta(days=1), 9)
    assert s.next_change_after(at(MON, 10)) == at(SUN, 18)


def test_day_entry_overrides_daily_entry_at_the_same_time():
    s = BandwidthSchedule.parse("08:00,5MiB/s 20:00,off Sat-08:00,off Sun-08:00,off")
    assert s.limits_at(at(FRI, 9)) == (5.0 * MiB, 5.0 * MiB)
    assert s.limits_at(at(SAT, 9)) == (None, None)
    assert s.limits_at(at(SUN, 9)) == (None, None)
    # From Friday night the limits stay "off" until Monday 08:00.
    assert s.next_change_after(at(FRI, 21)) == at(MON + timedelta(days=7), 8)
    # Whatever the order of the entries in the text.
    assert BandwidthSchedule.parse("Sat-08:00,off 08:00,5MiB/s 20:00,off").limits_at(at(SAT, 9)) == (None, None)


def test_day_entry_applies_only_until_the_next_daily_entry():
    s = BandwidthSchedule.parse("08:00,5MiB/s 20:00,1MiB/s Sat-00:00,off")
    assert s.limits_at(at(FRI, 23)) == (1.0 * MiB, 1.0 * MiB)
    assert s.limits_at(at(SAT, 7)) == (None, None)
    assert s.limits_at(at(SAT, 9)) == (5.0 * MiB, 5.0 * MiB)
    assert s.next_change_after(at(FRI, 23)) == at(SAT, 0)


def test_full_day_names_and_entry_order_do_not_matter():
    a = BandwidthSchedule.parse("Saturday-10:00,off 8:00,1M")
    b = BandwidthSchedule.parse("08:00,1M sat-10:00,off")
    assert a.entries == b.entries
    assert a.limits_at(at(SAT, 11)) == (None, None)


def test_timetable_of_equal_limits_never_changes():
    s = BandwidthSchedule.parse("08:00,1MiB/s 20:00,1MiB/s")
    assert s.next_change_after(at(MON, 9)) is None


def test_timetable_keeps_timezone_and_seconds():
    s = BandwidthSchedule.parse("08:00,5MiB/s 20:00,off")
    tz = timezone(timedelta(hours=2))
    dt = datetime(2024, 1, 2, 7, 59, 30, 500, tzinfo=tz)
    assert s.next_change_after(dt) == datetime(2024, 1, 2, 8, 0, tzinfo=tz)


@pytest.mark.parametrize(
    "text, detail",
    [
        ("fast", None),
        ("1MiB/s:2MiB/s:3MiB/s", None),
        ("08:00,5MiB/s 25:00,off", 'entry "25:00,off": time must be HH:MM from 00:00 to 23:59'),
        ("08:60,5MiB/s", 'entry "08:60,5MiB/s": time must be HH:MM'),
        ("08:00,fast", 'entry "08:00,fast": rate must be like'),
        ("Foo-08:00,off", 'entry "Foo-08:00,off": day must be Mon..Sun'),
        ("08:00,off 20:00", 'entry "20:00": no comma between time and rate'),
        ("08:00,off 08:00,1M", 'two entries for "08:00"'),
        ("Mon-08:00,off Mon-08:00,1M", 'two entries for "Mon-08:00"'),
    ],
)
def test_bad_bandwidth(text, detail):
    with pytest.raises(ValueError) as info:
        BandwidthSchedule.parse(text)
    message = str(info.value)
    if detail is None:
        assert message == 'expected a rate like "20MiB/s" or a timetable'
    else:
        assert message.startswith('expected a timetable like "08:00,5MiB/s 20:00,off Sat-00:00,off"')
        assert detail in message
