"""The language of the pages, the messages and the command line (Flask-Babel).

Chinese (``zh``) unless someone says otherwise: a signed-in user's own setting (the switch in
the top bar), else for someone not signed in the switch's cookie, else the browser's
``Accept-Language`` best match among zh/en, else ``DEFAULT_LOCALE`` (``GRIDPLAN_LOCALE`` in the
environment, default zh; the command line, which has no browser, follows it). Catalogues live in
``webmap/translations/<locale>/LC_MESSAGES/messages.po`` (msgids in English); ``make setup``
compiles them, ``make messages`` extracts new strings into them.

The pages' scripts get their part of the catalogue as JSON (``<script id="messages">``), read by
``t(msgid, params)`` in ``static/js/i18n.js``; the domain's messages (:mod:`geodata.i18n`) are
translated through Flask-Babel's gettext installed here.
"""

from __future__ import annotations

import functools
from datetime import date, datetime
from pathlib import Path

import flask_babel
from babel.messages.pofile import read_po
from flask import (
    Blueprint,
    Flask,
    current_app,
    has_app_context,
    has_request_context,
    redirect,
    request,
)
from jinja2 import pass_context
from markupsafe import Markup
from sqlalchemy.exc import SQLAlchemyError

from geodata import i18n as domain_i18n
from geodata.accounts import LOCALES, ROLE_WORDS, role_word
from geodata.i18n import N_
from geodata.standards import FACILITY_KIND_LABELS, FACILITY_PROBLEM_LABELS
from layers.administration import set_locale

TRANSLATIONS = Path(__file__).resolve().parent / "translations"
COOKIE = "gridplan_locale"
#: what ``<html lang>`` and the scripts' Intl formatters are told for each locale
HTML_LANG = {"zh": "zh-CN", "en": "en"}
LABELS = {"zh": "中文", "en": "English"}

#: the life circles of GB 50180-2018 as the pages name them
LIFE_CIRCLES = {"5-minute": N_("5-minute life circle"), "10-minute": N_("10-minute life circle"),
                "15-minute": N_("15-minute life circle")}

bp = Blueprint("i18n", __name__)
babel = flask_babel.Babel()


def select_locale() -> str:
    """The locale of this request (or of the command line: ``DEFAULT_LOCALE``)."""
    default = current_app.config.get("DEFAULT_LOCALE") or "zh"
    if not has_request_context():
        return default if default in LOCALES else "zh"
    try:
        from webmap.auth import current_account
        account = current_account()
    except SQLAlchemyError:  # the database is not ready: the error page still needs a language
        account = None
    if account is not None and account.locale in LOCALES:
        return account.locale
    if request.cookies.get(COOKIE) in LOCALES:
        return request.cookies[COOKIE]
    best = request.accept_languages.best_match(LOCALES)
    if best:
        return best
    return default if default in LOCALES else "zh"


def current_locale() -> str:
    """``zh`` or ``en``: the locale Flask-Babel chose for this request."""
    locale = flask_babel.get_locale()
    return locale.language if locale is not None and locale.language in LOCALES else "zh"


def _domain_translator(message: str) -> str:
    if not has_app_context():
        return message
    return flask_babel.gettext(message)


@functools.cache
def script_messages(locale: str) -> dict[str, str]:
    """The translations of the messages the scripts show (msgids found in ``*.js``)."""
    return {msgid: text for msgid, text, files in _script_entries(locale)
            if any(f.endswith(".js") for f in files)}


@functools.cache
def _script_entries(locale: str) -> tuple[tuple[str, str, frozenset[str]], ...]:
    """The catalogue's translated messages with the names of the files they are in (read once
    per process: the pages' scripts' part of the catalogue is cut from it)."""
    path = TRANSLATIONS / locale / "LC_MESSAGES" / "messages.po"
    if not path.exists():
        return ()
    with path.open("rb") as fh:
        catalog = read_po(fh)
    return tuple((m.id, m.string, frozenset(Path(loc).name for loc, _line in m.locations)) for m in catalog
                 if m.id and isinstance(m.id, str) and m.string and not m.fuzzy)


@functools.cache
def page_messages(locale: str, scripts: tuple[str, ...]) -> dict[str, str]:
    """The translations of the messages ``scripts`` (file names: ``cases.js`` …) show: a page
    that loads only those carries only their part of the catalogue (the phone's case pages, where
    every byte waits on a slow signal)."""
    return {msgid: text for msgid, text, files in _script_entries(locale) if files & set(scripts)}


def number(value, digits: int | None = None) -> str:
    """A number as the locale writes it (thousands separators; ``digits`` after the point)."""
    if value is None:
        return "—"
    if digits is None:
        return flask_babel.format_decimal(value)
    return flask_babel.format_decimal(value, format="#,##0." + "0" * digits if digits else "#,##0")


def percent(value, digits: int = 1) -> str:
    return flask_babel.format_percent(value, format="#,##0." + "0" * digits + "%" if digits else "#,##0%")


def when(value: datetime | date | None, seconds: bool = False) -> str:
    """A date and time as the locale writes them (short form; with seconds when asked)."""
    if value is None:
        return "—"
    if isinstance(value, datetime):
        return flask_babel.format_datetime(value, "medium" if seconds else "short")
    return flask_babel.format_date(value, "medium")


@bp.post("/locale")
def switch():
    """The top bar's switch: keep the choice (the user's setting, and a cookie for the sign-in
    page) and go back where the user was."""
    locale = request.form.get("locale", "")
    if locale not in LOCALES:
        from geodata.errors import Refused
        raise Refused(domain_i18n._("unknown language {locale}: use {choices}", locale=repr(locale),
                                    choices=", ".join(LOCALES)))
    from webmap.auth import current_account, safe_next
    from webmap.extensions import engine
    account = current_account()
    if account is not None and not account.via_token:
        set_locale(engine(), account.id, locale)
    response = redirect(safe_next(request.form.get("next")))  # only to this site's own pages
    response.set_cookie(COOKIE, locale, max_age=365 * 24 * 3600, samesite="Lax", httponly=True)
    return response


@pass_context
def _template_text(context, message: str, **variables) -> str:
    """A template's ``_("…")``: translated, its parameters filled in — ``{named}`` as everywhere
    else in gridplan, ``%(named)s`` as Jinja's own gettext does; values are escaped."""
    text = flask_babel.get_translations().ugettext(message)
    if context.eval_ctx.autoescape:
        text = Markup(text)
    if variables and "{" in message and "%(" not in message:
        try:
            return text.format(**variables)
        except (KeyError, IndexError, ValueError):  # a translation naming a parameter not given
            return text
    return text % variables


def init_app(app: Flask) -> None:
    app.config.setdefault("BABEL_DEFAULT_LOCALE", "zh")
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", str(TRANSLATIONS))
    babel.init_app(app, locale_selector=select_locale)
    domain_i18n.install(_domain_translator)
    app.register_blueprint(bp)
    app.jinja_env.filters.update(number=number, percent=percent, when=when)
    app.jinja_env.globals.update(_=_template_text, gettext=_template_text)

    @app.context_processor
    def _locale_context():
        locale = current_locale()
        return {"locale": locale, "html_lang": HTML_LANG[locale], "locale_labels": LABELS,
                "script_messages": script_messages(locale), "role_names": role_names(),
                "role_word": role_word,
                "plan_statuses": plan_statuses(), "facility_kind_name": facility_kind_name,
                "life_circle": life_circle, "catalogue_text": catalogue_text,
                "facility_problem": facility_problem}


def plan_statuses() -> dict[str, str]:
    """A plan's statuses as the pages name them."""
    gettext = flask_babel.gettext
    return {"draft": gettext("draft"), "submitted": gettext("submitted"), "approved": gettext("approved"),
            "rejected": gettext("rejected"), "adopted": gettext("adopted")}


def facility_kind_name(kind: str, fallback: str | None = None) -> str:
    """A facility kind's name in the request's language (a city's own kinds: ``fallback``)."""
    label = FACILITY_KIND_LABELS.get(kind)
    return domain_i18n._(label) if label else (fallback or kind)


def facility_problem(problem: str | None) -> str:
    """What is wrong with a facility (``under_floor_area`` …) in the request's language."""
    label = FACILITY_PROBLEM_LABELS.get(problem or "")
    return domain_i18n._(label) if label else (problem or "")


def catalogue_text(text: str | None) -> str:
    """A text stored as the catalogue wrote it (a default standard's source) in the request's
    language; a text the city wrote itself is given as written."""
    return domain_i18n._(text) if text else ""


def life_circle(level: str) -> str:
    """A life-circle level (``5-minute`` …) in the request's language."""
    label = LIFE_CIRCLES.get(level)
    return domain_i18n._(label) if label else level


def role_names() -> dict[str, str]:
    """The roles as the pages name them."""
    return {role: flask_babel.gettext(word) for role, word in ROLE_WORDS.items()}
