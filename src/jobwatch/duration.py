"""Durations as people write them, one grammar for the config file, the command line and scenarios.

A duration is a number of seconds (``90``, ``"12.5"``) or a string of one or
more ``<number><unit>`` parts (``"500ms"``, ``"30s"``, ``"1h30m"``, ``"90d"``,
``"1w"``; units ``ms s m h d w``, spaces allowed between parts). A leading
``-`` or ``+`` is part of the grammar; whether a negative duration makes sense
is the field's business: :data:`Duration` (the config, ``--duration``) refuses
it, :data:`SignedDuration` (scenario times, where ``-10m`` means before the
start) takes it.
"""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BeforeValidator

__all__ = ["Duration", "SignedDuration", "parse_duration", "parse_signed_duration"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_NUMBER = r"\d+(?:\.\d+)?"
_UNIT = r"ms|s|m|h|d|w"
_WHOLE = re.compile(rf"([+-]?)\s*(?:({_NUMBER})|((?:{_NUMBER}\s*(?:{_UNIT})\s*)+))")
_PART = re.compile(rf"({_NUMBER})\s*({_UNIT})")
_EXAMPLES = "'30s', '5m', '1h30m' or '2d'"


def parse_signed_duration(value: object) -> float:
    """Seconds from a number or a duration string; ``"-10m"`` is ``-600.0``.

    Raises ``ValueError`` (which pydantic reports under the key's path) for
    anything else, booleans, NaN and infinities included.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(
            f"a duration is a number of seconds or a string like {_EXAMPLES}, got {value!r}"
        )
    if isinstance(value, str):
        m = _WHOLE.fullmatch(value.strip())
        if m is None:
            raise ValueError(
                f"{value!r} is not a duration: write seconds (90, 12.5) or a number with a "
                f"unit, like {_EXAMPLES} (units: ms s m h d w)"
            )
        sign, plain, parts = m.groups()
        if plain is not None:
            seconds = float(plain)
        else:
            seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(parts))
        return -seconds if sign == "-" else seconds
    seconds = float(value)
    if not math.isfinite(seconds):
        raise ValueError(f"a duration must be finite, got {value!r}")
    return seconds


def parse_duration(value: object) -> float:
    """:func:`parse_signed_duration`, refusing a negative duration."""
    seconds = parse_signed_duration(value)
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {value!r}")
    return seconds


#: Seconds, >= 0, that also accept ``"30s"``-style strings on validation.
Duration = Annotated[float, BeforeValidator(parse_duration)]
#: Seconds that may be negative (``"-10m"``): times relative to a start.
SignedDuration = Annotated[float, BeforeValidator(parse_signed_duration)]
