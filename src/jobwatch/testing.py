"""Fakes for people who test code built on jobwatch (and for jobwatch's own tests)."""

from __future__ import annotations

from collections import Counter

from jobwatch.events import Event

__all__ = ["MemorySink"]


class MemorySink:
    """An :class:`~jobwatch.events.EventSink` that keeps every event in a list."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def kinds(self) -> Counter[str]:
        return Counter(e.kind for e in self.events)

    def of(self, kind: str, job_id: str | None = None) -> list[Event]:
        return [
            e
            for e in self.events
            if e.kind == kind and (job_id is None or e.change.job.job_id == job_id)
        ]

    def clear(self) -> None:
        self.events.clear()
