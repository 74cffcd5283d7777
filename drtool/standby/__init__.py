"""The warm-standby runner (``drtool replicate``): a long-running process beside ``core``.

``runner.Runner`` owns one policy's replication: lease, roles/generation checks, heartbeat,
schema polling, one ``table.TableReplicator`` per table and the scheduled snapshots. It uses
only the core API and the cluster interface; events go to an ``events.Events`` (log lines and
metrics), never to a terminal.
"""
