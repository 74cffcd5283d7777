"""The generation check every drtool command that writes into a cluster makes first.

After a failover the policy still names ``[primary]`` and ``[standby]``, but drtool's roles
(drtool.coordination.state) say which one is the primary now. A command acting on the policy's names
alone would be stale: ``reconcile --direction primary-to-standby`` after a failover to the
standby would overwrite the new primary with the old one's data. ``check_write`` reads the
roles on the clusters given (the highest generation wins) and refuses, in one line:

* any write while a failover or failback is in progress (a step is recorded);
* a copy from one cluster into the other (``source`` given) whose target is the current
  primary: it would overwrite the primary with the old primary's data;
* with ``must_be_primary``, a write into a cluster that is not the current primary.

Restores into any cluster stay allowed outside a failover (restoring is an explicit act).
"""

from __future__ import annotations

from drtool.cluster.base import Cluster
from drtool.coordination.state import Roles, current_roles  # noqa: F401 (re-exported)
from drtool.errors import StaleGeneration
from drtool.config.policy import Policy


async def check_write(policy: Policy, target_role: str, target: Cluster, *,
                      source_role: str | None = None, source: Cluster | None = None,
                      must_be_primary: bool = False, what: str = "this command") -> Roles:
    """Refuse (StaleGeneration, exit 7) a write into ``target`` that the roles forbid; see
    the module doc. Returns the roles read."""
    roles = await current_roles(policy, *[c for c in (target, source) if c is not None])
    g = roles.generation
    if roles.step is not None:
        raise StaleGeneration(
            f"a failover is in progress (step {roles.step}, generation {g}): {what} would write "
            f"into the {target_role}; finish it first (run the same drtool failover/failback "
            "command again)")
    if source_role is not None and target_role == roles.primary and g > 0:
        raise StaleGeneration(
            f"the {target_role} is the primary since generation {g}: {what} from the "
            f"{source_role} would overwrite it with the old primary's data; copy the other way "
            f"({target_role} to {source_role}) or see drtool status")
    if must_be_primary and target_role != roles.primary:
        raise StaleGeneration(
            f"the {target_role} is not the primary (generation {g}: the {roles.primary} is): "
            f"{what} writes into the current primary only")
    return roles
