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


#: translated only in the Chinese catalogue: tells which language the interface speaks
_ENGLISH_MARK = N_("the interface speaks English")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_BILINGUAL = re.compile(r"^\s*(?P<zh>.*?\S)\s*[(（](?P<en>[^()（）]*)[)）]\s*$")


def speaks_english() -> bool:
    """Whether messages are read in English now (the request's or the command line's language)."""
    return _(_ENGLISH_MARK) == _ENGLISH_MARK


def in_language(text: str | None) -> str | None:
    """A name written in both languages, ``中文 (English)`` (the default incident categories),
    as the interface reads it: the Chinese part on a Chinese page, the English on an English
    one. A name in one language (a city's own) is given as it is."""
    if not text:
        return text
    m = _BILINGUAL.match(text)
    if m is None or not _CJK.search(m["zh"]) or _CJK.search(m["en"]) or not m["en"].strip():
        return text
    return m["en"].strip() if speaks_english() else m["zh"]
