"""drtool: disaster recovery for RethinkDB."""

__version__ = "0.1.0"
