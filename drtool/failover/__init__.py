"""Failover and failback (``drtool failover``, ``drtool failback``): moving the application's
writes between the policy's two clusters.

Modules: ``fence`` (stopping the application's writes on a cluster and undoing it),
``users_sync`` (keeping users and permissions the same on the other cluster; the runner calls
it), ``lost_writes`` (the documents only the old primary has, written for re-applying),
``procedure`` (the planned/unplanned failover and failback steps on drtool's roles).
Long-running-safe like the core: nothing global, every cluster passed in and left open.
"""
