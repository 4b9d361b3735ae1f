"""Fakes for people who test code built on jobwatch (and for jobwatch's own tests)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from jobwatch.events import EventRecord

__all__ = ["MemorySink"]


class MemorySink:
    """An :class:`~jobwatch.events.EventSink` that keeps every event in a list."""

    def __init__(self) -> None:
        # Events as emitted (``jobwatch.events.Event``, or ``RecordedEvent`` on replay).
        self.events: list[Any] = []

    def emit(self, event: EventRecord) -> None:
        self.events.append(event)

    def kinds(self) -> Counter[str]:
        return Counter(e.kind for e in self.events)

    def of(self, kind: str, job_id: str | None = None) -> list[Any]:
        return [
            e
            for e in self.events
            if e.kind == kind and (job_id is None or e.to_dict()["job_id"] == job_id)
        ]

    def clear(self) -> None:
        self.events.clear()
