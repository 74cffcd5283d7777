"""The ``[schedule]`` and ``[retention]`` sections of a policy: when snapshots are taken (and
when a table is copied in full again), and how many are kept.

Helper of ``drtool.config.policy`` (which calls ``parse_schedule`` and ``parse_retention``; it also
checks that ``snapshot_from = "standby"`` has a [standby] section); every failure is a
one-line PolicyError. Durations are policy durations ("1h", "30m"), ``full_after_delta`` a
percentage ("30%").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from drtool.config.fields import Section
from drtool.util.units import PERCENT_EXPECTED, parse_percent

SCHEDULE_KEYS = ("snapshot_every", "snapshot_from", "full_after_layers", "full_after_delta",
                 "prune")
RETENTION_KEYS = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly",
                  "keep_log")


@dataclass(frozen=True)
class SchedulePolicy:
    """``snapshot_every``: seconds between scheduled snapshots (None: no schedule);
    ``snapshot_from``: which cluster snapshots read ("standby" needs [standby]; when not
    given, ``drtool snapshot`` reads the primary and the runner's scheduled snapshots the
    standby: see ``scheduled_from``);
    a table is copied in full instead of incrementally once its chain has
    ``full_after_layers`` layers or its deltas exceed ``full_after_delta`` of its base.
    ``prune``: after each scheduled snapshot the runner applies [retention] (forget) and,
    when true, prunes the data no snapshot references any more."""

    snapshot_every: float | None = None
    snapshot_from: Literal["primary", "standby"] = "primary"
    full_after_layers: int = 7
    full_after_delta: float = 0.3
    prune: bool = False
    snapshot_from_given: bool = False

    @property
    def scheduled_from(self) -> Literal["primary", "standby"]:
        """The cluster the runner's scheduled snapshots read: ``snapshot_from`` when the
        policy names one, else the standby (to spare the primary)."""
        return self.snapshot_from if self.snapshot_from_given else "standby"


@dataclass(frozen=True)
class RetentionPolicy:
    """How many snapshots to keep, restic style; None = rule not used. All None = keep all.
    ``keep_log``: seconds of change log kept restorable (None: the whole log is kept)."""

    keep_last: int | None = None
    keep_hourly: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None
    keep_monthly: int | None = None
    keep_log: float | None = None


def parse_schedule(sec: Section | None) -> SchedulePolicy:
    """The SchedulePolicy of [schedule] (no schedule when ``sec`` is None). Raises
    PolicyError; whether snapshot_from = "standby" has a [standby] is the loader's check."""
    if sec is None:
        return SchedulePolicy()
    every = sec.positive_duration("snapshot_every")
    defaults = SchedulePolicy()
    layers = sec.integer("full_after_layers", minimum=1)
    delta = (sec.parsed("full_after_delta", parse_percent, PERCENT_EXPECTED)
             if sec.has("full_after_delta") else defaults.full_after_delta)
    return SchedulePolicy(
        snapshot_every=every, snapshot_from=sec.choice("snapshot_from", ("primary", "standby")),
        full_after_layers=defaults.full_after_layers if layers is None else layers,
        full_after_delta=delta, prune=sec.boolean("prune"), snapshot_from_given=sec.has("snapshot_from"),
    )


def parse_retention(sec: Section | None) -> RetentionPolicy:
    """The RetentionPolicy of [retention] (keep everything when ``sec`` is None). Raises
    PolicyError for a key that is not a non-negative integer."""
    if sec is None:
        return RetentionPolicy()
    return RetentionPolicy(**{key: sec.integer(key) for key in RETENTION_KEYS
                              if key != "keep_log"}, keep_log=sec.positive_duration("keep_log"))
