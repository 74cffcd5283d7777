"""The warm-standby runner (``drtool replicate``): a long-running process.

``runner.Runner`` owns one policy's replication: lease, roles/generation checks, heartbeat,
schema polling, one ``table.TableReplicator`` per table and the scheduled snapshots. It speaks
the protocol of ``drtool.coordination`` (roles, leases, fences, users sync) and never imports
``drtool.failover``; events go to an ``events.Events`` (log lines and metrics), never to a
terminal.
"""
