"""The ``[archive]`` section of a policy: the continuous change log (point-in-time recovery).

Helper of ``drtool.policy`` (which calls ``parse_archive``); every failure is a one-line
PolicyError. With ``[archive]`` the runner (``drtool replicate``) writes every change of the
selected tables into the repository (drtool.changelog); without ``[standby]`` it runs for the
log alone. See policies/example.toml.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from drtool.config.fields import Section
from drtool.util.units import DURATION_EXPECTED, SIZE_EXPECTED, parse_duration, parse_size

KEYS = ("slice_every", "max_slice", "spool", "spool_size", "base_every")


@dataclass(frozen=True)
class ArchivePolicy:
    """``slice_every``: seconds between sealed slices (the log's granularity in the
    repository: the repository's RPO is about this plus the upload time); ``max_slice``: a
    slice is sealed sooner when its changes reach this many bytes; ``spool``: the directory
    where sealed slices wait for the repository (default: ``.drtool-spool-<policy name>``
    next to the policy file); ``spool_size``: its limit (a full spool breaks the log);
    ``base_every``: a new base (an incremental snapshot of the table) this often on a running
    timeline, so restores read at most this much log and ``keep_log`` can drop older slices."""

    spool: Path
    slice_every: float = 10.0
    max_slice: int = 8 << 20
    spool_size: int = 1 << 30
    base_every: float = 3600.0


def parse_archive(sec: Section | None, base: Path, policy_name: str) -> ArchivePolicy | None:
    if sec is None:
        return None
    slice_every = 10.0
    if sec.has("slice_every"):
        slice_every = sec.parsed("slice_every", parse_duration, DURATION_EXPECTED)
        if not 0.5 <= slice_every <= 3600:
            raise sec.error("slice_every", "a duration from 0.5s to 1h", sec.data["slice_every"])

    def size(key: str, default: int, minimum: int) -> int:
        if not sec.has(key):
            return default
        got = sec.parsed(key, parse_size, SIZE_EXPECTED)
        if got < minimum:
            raise sec.error(key, f"at least {minimum} bytes", sec.data[key])
        return got

    return ArchivePolicy(
        spool=sec.path("spool", base) or base / f".drtool-spool-{policy_name}",
        slice_every=slice_every,
        max_slice=size("max_slice", 8 << 20, 64 << 10),
        spool_size=size("spool_size", 1 << 30, 1 << 20),
        base_every=sec.positive_duration("base_every") or 3600.0,
    )
