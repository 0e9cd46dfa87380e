"""The refusals every part of gridplan speaks in, so the web app turns each into one HTTP answer
(RFC 9457 problem details for the API, the error page for HTML) and the CLI into one exit code.

``NotFound`` → 404, ``Refused`` (bad input: a wrong code, a broken file, an unknown unit) → 400,
``Forbidden`` (what the user's role or the object's status does not allow) → 403, ``Conflict``
(someone changed it first: a plan version, stale boundaries) → 409, ``DatabaseTrouble`` (the
database down, busy, its disk full: :func:`geodata.db.database_trouble`) → 503.
"""

from __future__ import annotations

from geodata.i18n import N_


class GridplanError(Exception):
    """A refusal with an HTTP status and a short title; the message says what and why."""

    status = 400
    title = N_("Refused")  # the web app translates titles; messages are translated when raised
    #: seconds after which trying again may help (the ``Retry-After`` header), when it may
    retry_after: int | None = None

    def __init__(self, message: str = "", **details) -> None:
        super().__init__(message)
        self.details = details  # extra members of the problem details (e.g. the current state)

    @property
    def code(self) -> str:
        """What kind of refusal it is, for programs (the problem details' ``code``)."""
        return type(self).__name__


class Refused(GridplanError, ValueError):
    """Input that cannot be used (a ValueError, so callers that catch those still do)."""

    status = 400
    title = N_("Refused")


class NotFound(GridplanError, LookupError):
    status = 404
    title = N_("Not found")


class Forbidden(GridplanError):
    status = 403
    title = N_("Forbidden")


class Conflict(GridplanError):
    status = 409
    title = N_("Conflict")


class DatabaseTrouble(GridplanError):
    """The database cannot do it now; ``code`` says why (``DatabaseUnreachable``, ``DatabaseBusy``,
    ``DiskFull``, ``DatabaseNotReady``, ``DatabaseFailed``), ``retry_after`` when waiting helps."""

    status = 503
    title = N_("Service Unavailable")

    def __init__(self, message: str, *, code: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self._code, self.retry_after = code, retry_after

    @property
    def code(self) -> str:
        return self._code


def excerpt(value: object, limit: int = 80) -> str:
    """``value`` as one short line a terminal or a page shows as it is, for a message that quotes
    something read from a file someone sent: line breaks, escape codes and other unprintable
    characters become ``\\xNN``, and it stops after ``limit`` characters (a line can be a megabyte)."""
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}"
                   for c in str(value)[: limit + 1])
    return text if len(text) <= limit else text[: limit - 1] + "…"
