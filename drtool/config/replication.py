"""The ``[replication]`` section of a policy: how ``drtool replicate`` keeps the standby.

Helper of ``drtool.config.policy`` (which calls ``parse_replication``); every failure is a one-line
PolicyError. Durations are policy durations ("5s", "1m"); see policies/example.toml.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from drtool.config.fields import Section
from drtool.util.units import DURATION_EXPECTED, parse_duration

KEYS = ("state_db", "lag_threshold", "lease_ttl", "schema_poll", "changefeed_queue_size",
        "batch_size", "drop_tables", "standby_shards", "standby_replicas", "share_tables",
        "feed_gather")
MAX_FEED_GATHER = 5.0  # seconds: more would only add lag
_DB_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")


@dataclass(frozen=True)
class ReplicationPolicy:
    """``state_db``: drtool's own database on both clusters (heartbeat, roles, leases, table
    states); never selected as user data. ``lag_threshold``: seconds of lag above which
    ``drtool status`` calls the standby unhealthy. ``lease_ttl``: seconds a runner's lease
    lasts unless renewed (renewed every second). ``schema_poll``: seconds between catalogue
    polls (new tables, indexes). ``changefeed_queue_size``: changes the server keeps per feed
    for a slow runner before dropping (then the table is repaired). ``batch_size``: changes
    applied per write. ``drop_tables``: drop a table on the standby when it is dropped on the
    primary (default: only report it). ``standby_shards``/``standby_replicas``: create tables
    on the standby with these counts instead of the primary's (a smaller standby).
    ``share_tables``: several runners of the policy split its tables (per-table leases; one
    of them also holds the policy-wide duties) instead of one active runner and spares.
    ``feed_gather``: seconds between a table changefeed's requests for more changes (those
    made meanwhile come in one answer, every one of them); 0: every change is sent at once
    (lowest lag, far more runner CPU per change at low rates)."""

    state_db: str = "drtool"
    lag_threshold: float = 10.0
    lease_ttl: float = 15.0
    schema_poll: float = 5.0
    changefeed_queue_size: int = 1_000_000
    batch_size: int = 1000
    drop_tables: bool = False
    standby_shards: int | None = None
    standby_replicas: int | None = None
    share_tables: bool = False
    feed_gather: float = 0.1


def parse_replication(sec: Section | None) -> ReplicationPolicy:
    if sec is None:
        return ReplicationPolicy()
    default = ReplicationPolicy()
    db = sec.string("state_db", default=default.state_db)
    if _DB_NAME.fullmatch(db) is None or db == "rethinkdb":
        raise sec.error("state_db", "a database name of letters, digits and '_' (not rethinkdb)", db)

    def seconds(key: str, value: float) -> float:
        got = sec.positive_duration(key)
        return value if got is None else got

    def integer(key: str, value: int | None, minimum: int = 1) -> int | None:
        got = sec.integer(key, minimum=minimum)
        return value if got is None else got

    gather = default.feed_gather
    if sec.has("feed_gather"):
        gather = sec.parsed("feed_gather", parse_duration, DURATION_EXPECTED)
        if gather > MAX_FEED_GATHER:
            raise sec.error("feed_gather", f"at most {MAX_FEED_GATHER:g}s (it adds to the lag)",
                            sec.data["feed_gather"])
    lease_ttl = seconds("lease_ttl", default.lease_ttl)
    if lease_ttl < 3:
        raise sec.error("lease_ttl", "at least 3s (the lease is renewed every second)",
                        sec.data["lease_ttl"])
    return ReplicationPolicy(
        state_db=db,
        lag_threshold=seconds("lag_threshold", default.lag_threshold),
        lease_ttl=lease_ttl,
        schema_poll=seconds("schema_poll", default.schema_poll),
        changefeed_queue_size=integer("changefeed_queue_size", default.changefeed_queue_size, 10),
        batch_size=integer("batch_size", default.batch_size),
        drop_tables=sec.boolean("drop_tables"),
        standby_shards=integer("standby_shards", None),
        standby_replicas=integer("standby_replicas", None),
        share_tables=sec.boolean("share_tables"),
        feed_gather=gather,
    )
