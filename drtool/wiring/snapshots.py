"""What a snapshot of a policy's cluster is taken with, decided once for the CLI's ``snapshot``
and the runner's scheduled snapshots, and the read-rate rule both apply."""

from __future__ import annotations

from drtool.cluster.base import Cluster
from drtool.config.policy import Policy
from drtool.coordination.roles import Roles
from drtool.coordination.standby_fence import fenced_hooks
from drtool.coordination.state import current_roles
from drtool.snapshots.snapshot import SnapshotOptions


def read_limit(policy: Policy, role: str, roles: Roles) -> float | None:
    """``[throttle] primary_reads`` (documents per second) when ``role`` is the cluster that is
    primary now (after a failover: the policy's standby), else None: the application's cluster
    is spared, the other one is read at full speed."""
    return policy.throttle.primary_reads if role == roles.primary else None


async def snapshot_options(policy: Policy, cluster: Cluster, role: str, *,
                           full: bool = False) -> SnapshotOptions:
    """The options of a snapshot of ``cluster`` (the policy's ``role``): the [schedule]'s
    full-copy thresholds, the read limit when it is the primary now (by the roles recorded on
    it, read only when the policy sets a limit), and, on a standby fenced by drtool's write
    hook, the primary's own hooks to record in place of the fence. Raises what the cluster
    raises."""
    reads = None
    if policy.throttle.primary_reads is not None:
        reads = read_limit(policy, role, await current_roles(policy, cluster))
    return SnapshotOptions(
        full=full, primary_reads=reads,
        max_layers=policy.schedule.full_after_layers,
        max_delta_ratio=policy.schedule.full_after_delta,
        fenced_hooks=await fenced_hooks(cluster, policy))
