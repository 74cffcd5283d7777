"""What the change log needs of the runner's reporting (``drtool.standby.events.Events``
provides it): one line per event and the metrics. A Protocol, so the log does not depend on
the standby package."""

from __future__ import annotations

from typing import Any, Protocol


class Reporter(Protocol):
    metrics: Any  # drtool.standby.events.Metrics: log_break, slice_sealed, archive, ...

    def emit(self, event: str, message: str, **fields: Any) -> None: ...

    def warn(self, event: str, message: str, **fields: Any) -> None: ...
