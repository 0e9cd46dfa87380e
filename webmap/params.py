"""What the web app accepts as a number, a date or a piece of text, in one place.

Every view reads its parameters through these functions (query strings, path parts, JSON
members), so a value no caller means — an integer past 2^63, 1e308, NaN, a date in year 0 or
10000, a list where a number belongs — is a 400 that names the parameter and what it takes,
never a traceback further down (SQLite cannot bind an integer past 2^63, ``datetime`` ends at
9999-12-31, a lone surrogate cannot be written as UTF-8).

:func:`install` adds the two checks that hold for every route: JSON bodies are parsed strictly
(no ``NaN``/``Infinity``, no number beyond what a 64-bit integer or a double holds, no lone
surrogate ``\\ud800`` in any text), and an ``<int:…>`` path part past 2^63 − 1 names nothing (404).
"""

from __future__ import annotations

import json
import math
import re
from datetime import date, datetime, time
from typing import Any

from flask import Flask, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import BadRequest

from geodata.errors import NotFound, Refused
from geodata.i18n import _

#: the largest integer either database stores (SQLite's and PostgreSQL's BIGINT)
MAX_INT = 2**63 - 1
#: the dates gridplan takes: no record of a city's is older, no plan reaches further; keeps every
#: date far from ``datetime``'s ends (a day added to 9999-12-31 overflows)
FIRST_DAY = date(1900, 1, 1)
LAST_DAY = date(2199, 12, 31)

_SURROGATE = re.compile("[\ud800-\udfff]")
_WHOLE = re.compile("[+-]?[0-9]{1,20}")


def whole(value: Any, what: str, low: int = -MAX_INT, high: int = MAX_INT) -> int:
    """``value`` (a JSON integer, or text of ASCII digits from a URL) as a whole number from
    ``low`` to ``high``; 400 otherwise."""
    if isinstance(value, str):
        text = value.strip()
        if not _WHOLE.fullmatch(text):  # ASCII digits only: int() would take "١٢" and "1_000"
            raise Refused(_("{what} must be a whole number from {low} to {high}, not {value}",
                            what=what, low=low, high=high, value=repr(value[:40])))
        value = int(text)
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Refused(_("{what} must be a whole number from {low} to {high}, not {value}",
                        what=what, low=low, high=high, value=repr(value)[:40]))
    return value


def number(value: Any, what: str, low: float, high: float) -> float:
    """``value`` (a JSON number, or text) as a finite number from ``low`` to ``high``."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise Refused(_("{what} must be a number from {low} to {high}, not {value}",
                        what=what, low=low, high=high, value=repr(value)[:40]))
    try:
        result = float(value)
    except (ValueError, OverflowError):
        result = math.nan
    if not math.isfinite(result) or not low <= result <= high:
        raise Refused(_("{what} must be a number from {low} to {high}, not {value}",
                        what=what, low=low, high=high, value=repr(value)[:40]))
    return result


def day(value: Any, what: str) -> date:
    """``value`` as a day ``YYYY-MM-DD`` from :data:`FIRST_DAY` to :data:`LAST_DAY`."""
    try:
        parsed = date.fromisoformat(value) if isinstance(value, str) and len(value) == 10 else None
    except ValueError:
        parsed = None
    if parsed is None or not FIRST_DAY <= parsed <= LAST_DAY:
        raise Refused(_("{what} must be a date YYYY-MM-DD from {first} to {last}, not {value}",
                        what=what, first=FIRST_DAY.isoformat(), last=LAST_DAY.isoformat(),
                        value=repr(value)[:40]))
    return parsed


def day_start(value: str | None, what: str, *, end: bool = False) -> datetime | None:
    """A day from a query parameter as the first (or, with ``end``, the last) instant of it;
    None when the parameter is empty."""
    if not value:
        return None
    return datetime.combine(day(value, what), time.max if end else time.min)


def moment(value: Any, what: str) -> datetime:
    """``value`` as an ISO 8601 / RFC 3339 date and time (a ``Z`` or an offset allowed, kept
    on the result) whose day lies from :data:`FIRST_DAY` to :data:`LAST_DAY`."""
    parsed = None
    if isinstance(value, str) and 10 <= len(value) <= 40:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            parsed = None
    if parsed is None or not FIRST_DAY <= parsed.date() <= LAST_DAY:
        raise Refused(_("{what} must be a date and time (YYYY-MM-DDTHH:MM:SS, with Z or an offset "
                        "if you like) from {first} to {last}, not {value}",
                        what=what, first=FIRST_DAY.isoformat(), last=LAST_DAY.isoformat(),
                        value=repr(value)[:40]))
    return parsed


def text(value: Any, what: str, limit: int) -> str | None:
    """``value`` as text of at most ``limit`` characters, stripped; None when empty."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise Refused(_("{what} must be text", what=what))
    value = value.strip()
    if len(value) > limit:
        raise Refused(_("{what} is {n_value} characters long; at most {limit}",
                        what=what, n_value=len(value), limit=limit))
    return value or None


# --- the checks every route gets -------------------------------------------------------------


class BadJSON(BadRequest):
    """A JSON body gridplan cannot take (a 400 naming why, even for views that read the body
    with ``silent=True``: a ``BadRequest`` is no ``ValueError``, so Werkzeug lets it through)."""


def body(shape: str | None = None, *, optional: bool = False) -> dict:
    """The request's body as a JSON object: the one reader every view uses.

    Parsed strictly whatever the ``Content-Type`` says (the app's :class:`StrictJSON`: NaN,
    numbers out of range and lone surrogates are a 400 naming them; a body nested too deeply is
    refused by :class:`webmap.security.GuardedRequest`); malformed JSON, or JSON that is no
    object, is a 400 that says so. ``shape`` names the members the route takes, for the message
    (``"{upload, mode, crs, mapping}"``); with ``optional``, no body at all reads as ``{}``."""
    if optional and not request.get_data(cache=True).strip():
        return {}
    data = request.get_json(force=True, silent=True)
    if data is None and request.get_data(cache=True).strip() not in (b"", b"null"):
        raise Refused(_("the body is not valid JSON: send a JSON object"))
    if not isinstance(data, dict):
        if shape:
            raise Refused(_("send a JSON object {shape}", shape=shape))
        raise Refused(_("send a JSON object"))
    return data


def _constant(name: str):
    raise BadJSON(_("the JSON body holds {name}: JSON has no such number", name=name))


def _integer(digits: str) -> int:
    value = int(digits)
    if not -MAX_INT <= value <= MAX_INT:
        raise BadJSON(_("the JSON body holds the integer {digits}, beyond the 64-bit range",
                        digits=digits[:30] + ("…" if len(digits) > 30 else "")))
    return value


def _float(digits: str) -> float:
    value = float(digits)
    if not math.isfinite(value):
        raise BadJSON(_("the JSON body holds the number {digits}, beyond what a double holds",
                        digits=digits[:30]))
    return value


def has_surrogate(value: Any) -> bool:
    """Whether a parsed JSON value holds a lone surrogate (``"\\ud800"``) in any text or key:
    no character, and no database can store it."""
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(has_surrogate(k) or has_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_surrogate(v) for v in value)
    return False


class StrictJSON(DefaultJSONProvider):
    """Flask's JSON, parsing strictly (see the module's docstring); writing as before."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        """Flask's own writing (``jsonify``), with NaN and infinities written as ``null``: JSON
        has neither, and a browser's ``JSON.parse`` refuses the bare words."""
        from webmap.responses import finite

        kwargs.setdefault("allow_nan", False)
        return super().dumps(finite(obj), **kwargs)

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        value = json.loads(s, parse_constant=_constant, parse_int=_integer, parse_float=_float, **kwargs)
        if has_surrogate(value):
            raise BadJSON(_("the JSON body holds a lone surrogate (\\ud800 … \\udfff), which is no "
                            "character"))
        return value


def _ids_in_range() -> None:
    """An ``<int:…>`` path part past 2^63 − 1 is no stored id: 404 before the view binds it."""
    for value in (request.view_args or {}).values():
        if isinstance(value, int) and not isinstance(value, bool) and value > MAX_INT:
            raise NotFound(_("there is nothing numbered {number}", number=str(value)[:30]))


def install(app: Flask) -> None:
    """Strict JSON bodies and path ids in range, for every route of ``app``."""
    app.json = StrictJSON(app)
    app.before_request(_ids_in_range)
