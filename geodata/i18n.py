"""Messages people read, in their language, without the domain knowing Flask.

``_("no community {code}", code=code)`` marks a message for extraction (``make messages``) and
translates it through the translator the web app installs (:func:`install`: Flask-Babel's
gettext, which knows the request's locale, or the command line's ``GRIDPLAN_LOCALE``); with no
translator installed the English msgid is used. ``{named}`` parameters are filled in after the
translation, so a translation may put them in another order. ``N_`` only marks a message.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_translator: Callable[[str], str] | None = None
_FIELD = re.compile(r"\{(\w+)\}")


def install(translator: Callable[[str], str] | None) -> None:
    """Translate every later message with ``translator`` (None: the English msgids)."""
    global _translator
    _translator = translator


def fill(text: str, params: dict) -> str:
    """``text`` with each ``{name}`` replaced by ``params[name]`` (others left as they are)."""
    if not params:
        return text
    return _FIELD.sub(lambda m: str(params[m.group(1)]) if m.group(1) in params else m.group(0), text)


def _(message: str, **params) -> str:
    """``message`` translated into the current locale, its ``{named}`` parameters filled in."""
    text = _translator(message) if _translator is not None else message
    return fill(text or message, params)


def N_(message: str) -> str:
    """Mark ``message`` for extraction; translate it later with :func:`_`."""
    return message
