"""structlog set-up: JSON lines by default, a console renderer for humans.

Every line jobwatch writes goes through here, its own and the libraries' alike:
records of the standard ``logging`` module (botocore, aiobotocore, aiohttp,
asyncio) and Python warnings are rendered by the same processors, so each one
is a single JSON object with ``timestamp``, ``level``, ``event`` and ``logger``,
and an exception is an ``exception`` field, not a traceback across lines.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO, cast

import structlog
from structlog.typing import FilteringBoundLogger, Processor

__all__ = ["configure_logging", "get_logger"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
#: The libraries speak from this level up, whatever ``log.level`` says: at debug
#: and info botocore alone writes several lines per request and per credential lookup.
_LIBRARY_LEVEL = logging.WARNING
_LEAD = ("timestamp", "level", "event", "logger")


def _lead_with_event(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Put ``timestamp``, ``level``, ``event`` and ``logger`` first: easier to read, same JSON."""
    lead: dict[str, Any] = {}
    for key in _LEAD:
        if key in event_dict:
            lead[key] = event_dict.pop(key)
    lead.update(event_dict)
    return lead


def _add_logger_name(
    logger: Any, _: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    record = event_dict.get("_record")
    name = record.name if record is not None else getattr(logger, "name", "")
    if name:
        event_dict["logger"] = name
    return event_dict


class _NamedPrintLogger(structlog.PrintLogger):
    """structlog's ``PrintLogger`` that remembers the name it was asked for."""

    def __init__(self, file: TextIO, name: str) -> None:
        super().__init__(file)
        self.name = name


class _NamedPrintLoggerFactory:
    # structlog's PrintLoggerFactory drops the name given to get_logger(name).
    def __init__(self, file: TextIO) -> None:
        self._file = file

    def __call__(self, *args: Any) -> _NamedPrintLogger:
        return _NamedPrintLogger(self._file, str(args[0]) if args else "")


class _LineHandler(logging.Handler):
    """Writes formatted records through a ``PrintLogger``: the same stream and lock as structlog."""

    def __init__(self, file: TextIO) -> None:
        super().__init__()
        self._out = structlog.PrintLogger(file)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._out.msg(self.format(record))
        except Exception:
            self.handleError(record)


_handler: _LineHandler | None = None


def configure_logging(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Route every structlog logger, and the standard library's, to ``stream`` (stdout).

    JSON lines or console text; timestamps are ISO-8601 UTC. Safe to call more
    than once (tests, ``demo``): the standard library handler is replaced.
    """
    global _handler
    out = stream or sys.stdout
    renderer: Processor
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    threshold = _LEVELS.get(level, logging.INFO)
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _add_logger_name,
            stamp,
            structlog.processors.format_exc_info,
            _lead_with_event,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=_NamedPrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )

    handler = _LineHandler(out)
    handler.setLevel(max(threshold, _LIBRARY_LEVEL))
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                _add_logger_name,
                stamp,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                _lead_with_event,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    _handler = handler
    # A warnings.warn() from a library (botocore's Python deprecation notices) is a
    # logging record too, instead of two lines of plain text on stderr.
    logging.captureWarnings(True)


def get_logger(name: str) -> FilteringBoundLogger:
    """A structlog logger whose lines carry ``"logger": name``."""
    return cast(FilteringBoundLogger, structlog.get_logger(name))
