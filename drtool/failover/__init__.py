"""Failover and failback (``drtool failover``, ``drtool failback``): moving the application's
writes between the policy's two clusters.

Modules: ``run`` (one run: connections, roles, the failover lease, step recording), ``steps``
(each step, idempotent), ``planned``, ``unplanned``, ``failback``, ``lost_writes`` (the
documents only the old primary has, written for re-applying). The protocol they share with the
runner (roles, fences, users sync, the write guard) lives in ``drtool.coordination``.
Long-running-safe: nothing global, every cluster passed in and left open.
"""
