"""Durations as scenario files write them: ``30s``, ``1h30m``, ``90d``, ``-10m``, ``12.5``."""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BeforeValidator

__all__ = ["Duration", "parse_duration"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+")


def parse_duration(value: object) -> float:
    """Seconds from a number or a string like ``"1h30m"``; a leading ``-`` means the past.

    Raises ``ValueError`` (which pydantic reports under the key's path) for
    anything else, including booleans, NaN and infinities.
    """
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '30s', '2m', '1h'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        sign = 1.0
        if text.startswith("-"):
            sign, text = -1.0, text[1:]
        elif text.startswith("+"):
            text = text[1:]
        try:
            seconds = sign * float(text)
        except ValueError:
            if not _WHOLE.fullmatch(text):
                raise ValueError(
                    f"{value!r} is not a duration: write seconds (12.5) or units "
                    "like '30s', '2m', '1h30m', '90d' (units: ms s m h d w)"
                ) from None
            seconds = sign * sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))
    else:
        raise ValueError("a duration is a number of seconds or a string like '30s', '2m', '1h'")
    if not math.isfinite(seconds):
        raise ValueError("a duration must be finite")
    return seconds


#: A float of seconds that also accepts ``"30s"``-style strings on validation.
Duration = Annotated[float, BeforeValidator(parse_duration)]
