"""The replication/failover protocol: which of a policy's two clusters is primary, the steps
a failover records, and the names of the leases (STATE-DB.md). ``drtool.standby`` (the runner)
and ``drtool.failover`` both speak it and neither defines any part of it.

* Roles are stored per cluster in the state database (``drtool.coordination.state``); the
  current record is the one ``newest_roles`` picks, the only rule for it.
* A failover records ``step = STOP_REPLICATION`` (same generation) on the replication target
  to make the runner stop applying and release its lease; the runner obeys it.
* Leases: ``runner_lease`` (one active runner per policy), ``failover_lease`` (one failover
  run at a time), ``table_lease`` (a table's owner when several runners share a policy),
  ``member_lease`` (a runner sharing the tables), ``spare_lease`` (a runner waiting).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from drtool.coordination.documents import doc_text, epoch
from drtool.errors import ClusterError
from drtool.model import TableName

ROLE_NAMES = ("primary", "standby")
STOP_REPLICATION = "stop-replication"  # the step the runner obeys


def other_role(role: str) -> str:
    """The policy's other cluster: "standby" for "primary" and the reverse."""
    return "standby" if role == "primary" else "primary"


def policy_leases(policy: str) -> str:
    """The prefix of every lease and record id of ``policy`` (runner, spares, members,
    tables, failover)."""
    return f"{policy}:"


def runner_lease(policy: str) -> str:
    """The id of the lease that makes one runner per policy."""
    return f"{policy}:runner"


def failover_lease(policy: str) -> str:
    """The id of the lease that makes one failover at a time per policy (issue 10)."""
    return f"{policy}:failover"


def spare_lease(policy: str, holder: str = "") -> str:
    """The id of a spare runner's record (``holder`` empty: the prefix of every spare's)."""
    return f"{policy}:spare:{holder}"


def table_lease(policy: str, table: TableName | str) -> str:
    """The id of a per-table lease (several runners share a policy's tables; ``""``: the
    prefix of every table lease of the policy)."""
    return f"{policy}:table:{table}"


def member_lease(policy: str, holder: str = "") -> str:
    """The id of a sharing runner's membership record (``holder`` empty: the prefix)."""
    return f"{policy}:member:{holder}"


@dataclass(frozen=True)
class Roles:
    """Which of the policy's clusters is primary now. ``extra`` keeps fields this module does
    not know (failover's), so rewriting a document never loses them."""

    generation: int = 0
    primary: str = "primary"
    step: str | None = None
    replicate: bool = True
    updated: float | None = None
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def source(self) -> str:
        """The role name ("primary"/"standby" in the policy) replication reads from."""
        return self.primary

    @property
    def target(self) -> str:
        """The role name replication writes into: the cluster that is not primary now."""
        return other_role(self.primary)

    def to_doc(self, policy: str) -> str:
        doc = {**self.extra, "id": policy, "generation": self.generation,
               "primary": self.primary, "step": self.step, "replicate": self.replicate}
        doc.pop("updated", None)
        return doc_text(doc)

    @classmethod
    def from_doc(cls, text: str | None) -> "Roles":
        if text is None:
            return cls()
        doc = json.loads(text)
        known = ("id", "generation", "primary", "step", "replicate", "updated")
        primary = doc.get("primary", "primary")
        if primary not in ROLE_NAMES:
            raise ClusterError(f"roles document {doc.get('id')!r}: primary must be primary or "
                               f"standby, got {primary!r}")
        return cls(int(doc.get("generation", 0)), primary, doc.get("step"),
                   bool(doc.get("replicate", True)), epoch(doc.get("updated")),
                   {k: v for k, v in doc.items() if k not in known})


def newest_roles(*found: Roles) -> Roles:
    """THE rule for which roles record is current (generation 0 when none is given): the
    highest generation; among equal generations the latest write of a failover run (its
    ``seq``: a run killed between writing the two clusters leaves them at one generation with
    different steps); then one that records a step (a step in progress is never hidden by an
    older record without one). Used by the runner, ``status``, the write guard and failover."""
    return max(found, default=Roles(), key=lambda r: (
        r.generation, int(r.extra.get("seq", 0)), r.step is not None))
