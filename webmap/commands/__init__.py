"""The command line: ``flask --app webmap …``, one module per capability named like :mod:`layers`
(and like :mod:`webmap.views`): :mod:`.admin` (database, backups, accounts, tokens, the worker),
:mod:`.layers` (import, export), :mod:`.plans`, :mod:`.coverage`, :mod:`.grid`, :mod:`.incidents`,
:mod:`.onboarding` and :mod:`.sample_data`.

Every command is made by :func:`command` (or on a :func:`group`), which wraps it in
:func:`one_line`: a domain refusal (:mod:`geodata.errors`) or a database failure ends the
command with one line on stderr and exit status 1, never a traceback — the command-line twin of
:mod:`webmap.errors`. Each module lists its commands in ``COMMANDS``; :func:`register` adds
them all to the app's CLI.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import sys
from collections.abc import Callable, Iterator
from importlib import import_module

import click
from flask import Flask, has_app_context
from flask.cli import AppGroup, ScriptInfo, with_appcontext
from sqlalchemy import Engine

from geodata.db import DATABASE_ERRORS, database_trouble
from geodata.errors import GridplanError
from geodata.i18n import N_, _
from geodata.migrate import upgrade
from geodata.standards import seed_settings
from webmap.extensions import engine

_CJK = re.compile(r"[\u3400-\u9fff]")
#: the modules holding the commands (``flask --help`` lists the commands by name)
MODULES = ("admin", "layers", "sample_data", "plans", "incidents", "coverage", "grid", "onboarding")


def one_line(function: Callable, refused: str | None = None,
             also: tuple[type[Exception], ...] = ()) -> Callable:
    """``function`` ending with one line and exit status 1 when the domain refuses (a
    :class:`~geodata.errors.GridplanError`, or one of ``also``) or the database fails (down,
    busy, its disk full: the transaction was rolled back). ``refused`` words a refusal with a
    ``{reason}`` placeholder ("import refused, nothing written: {reason}"); a database failure is
    worded as the web's 503 words it."""

    @functools.wraps(function)
    def run(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except DATABASE_ERRORS as exc:
            raise click.ClickException(str(database_trouble(exc))) from None
        except (GridplanError, *also) as exc:
            raise click.ClickException(_(refused, reason=exc) if refused else str(exc)) from None

    return run


#: Click's own words in a help page, marked for our catalogue: Click translates them with the
#: standard library's gettext, which knows neither our catalogue nor ``GRIDPLAN_LOCALE``
_CLICK_SECTIONS = (N_("Options"), N_("Commands"), N_("Arguments"))
_USAGE = N_("Usage:")
_HELP_OPTION = N_("Show this message and exit.")
#: the words of the ``[default: 1; required]`` Click puts after an option's help
_EXTRA_WORDS = {"default": N_("default"), "env var": N_("env var"), "required": N_("required")}
_EXTRA = re.compile(r"\[(?P<items>[^\[\]]*)\]$")


def _worded_extra(text: str) -> str:
    """An option's help with Click's ``[default: …; required]`` after it in the command line's
    language."""
    found = _EXTRA.search(text)
    if found is None:
        return text
    items = []
    for item in found["items"].split("; "):
        word, colon, value = item.partition(": ")
        if word in _EXTRA_WORDS:
            items.append(f"{_(_EXTRA_WORDS[word])}{colon}{value}")
        else:
            items.append(item)
    return f"{text[:found.start()]}[{'; '.join(items)}]"


class _WordedFormatter(click.HelpFormatter):
    """Click's formatter with its usage line, section titles and the defaults after options in
    the command line's language."""

    def write_usage(self, prog: str, args: str = "", prefix: str | None = None) -> None:
        super().write_usage(prog, args, f"{_(_USAGE)} " if prefix is None else prefix)

    def write_dl(self, rows, col_max: int = 30, col_spacing: int = 2) -> None:
        super().write_dl([(term, _worded_extra(text)) for term, text in rows], col_max, col_spacing)

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        with super().section(_(name) if name in _CLICK_SECTIONS else name):
            yield


class _WordedContext(click.Context):
    formatter_class = _WordedFormatter


@contextlib.contextmanager
def _help_translated(cmd: click.Command) -> Iterator[None]:
    """While ``cmd``'s help is shown: its help and its options' help (English msgids, marked with
    ``N_``) in the command line's language (``GRIDPLAN_LOCALE``). Click keeps help as plain
    strings, so they are translated when shown and put back after."""
    kept = [(cmd, cmd.help)] + [(p, p.help) for p in cmd.params if isinstance(p, click.Option)]
    context = click.get_current_context(silent=True)
    helping = cmd.get_help_option(context) if context is not None else None
    if helping is not None and helping.help == _HELP_OPTION:  # Click's words, not ours
        kept.append((helping, helping.help))
    with contextlib.ExitStack() as stack:
        if not has_app_context() and context is not None:  # `flask` pushes one, a test's runner does not
            stack.enter_context(context.ensure_object(ScriptInfo).load_app().app_context())
        try:
            for holder, text in kept:
                if text:
                    holder.help = _(text)
            yield
        finally:
            for holder, text in kept:
                holder.help = text


def _short(cmd: click.Command, limit: int) -> str:
    """A command's help in the list of commands: Click's shortening (at a sentence's end, else at
    ``limit`` by words) for English; Chinese, which has no spaces between words, up to its first
    full stop or semicolon."""
    text = cmd.help or ""
    if not _CJK.search(text):
        return click.Command.get_short_help_str(cmd, limit)
    for i, char in enumerate(text):
        if char in "。；":
            return text[:i] + "。"
    return text


class _WordedHelp:
    """``--help`` and the one-line summary in the command line's language (mixed into a click
    command or group), Click's own words included."""

    context_class = _WordedContext

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with _help_translated(self):
            super().format_help(ctx, formatter)

    def get_short_help_str(self, limit: int = 45) -> str:
        with _help_translated(self):
            return _short(self, limit)


class Worded(_WordedHelp, click.Command):
    """A command whose ``--help`` speaks the command line's language."""


class WordedGroup(_WordedHelp, AppGroup):
    """A group of commands whose ``--help`` speaks the command line's language."""


def command(name: str, *, help: str, group: click.Group | None = None, refused: str | None = None,
            also: tuple[type[Exception], ...] = ()) -> Callable[[Callable], click.Command]:
    """A command ``name`` (a sub-command of ``group`` when given) run in the app's context, its
    refusals and database failures answered by :func:`one_line`; ``help`` is its ``--help``, an
    English msgid marked with ``N_`` (options' ``help`` too: both are shown translated). Put it
    above the options."""

    def make(function: Callable) -> click.Command:
        wrapped = one_line(function, refused, also)
        if group is not None:
            return group.command(name, cls=Worded, help=help)(wrapped)
        return click.command(name, cls=Worded, help=help)(with_appcontext(wrapped))

    return make


def group(name: str, help: str) -> AppGroup:
    """A group of commands (``user add``, ``codes apply`` …) run in the app's context; ``help``
    as for :func:`command`."""
    return WordedGroup(name, help=help)


def ready() -> Engine:
    """The app's engine with the newest schema and the default settings (idempotent, fast)."""
    eng = engine()
    upgrade(eng)
    with eng.begin() as conn:
        seed_settings(conn)
    return eng


def district_options(every: str) -> Callable[[Callable], Callable]:
    """The options of a command run district by district (``plan``, ``grid``, ``coverage``,
    ``site``): ``--all`` (``every`` is its help, an English msgid marked with ``N_``: what the
    command does with every district), ``--cluster`` and ``--workers``. Put it among the
    command's options where they are to show."""
    options = (
        click.option("--all", "every_district", is_flag=True, help=every),
        click.option("--cluster", metavar="tcp://HOST:8786",
                     help=N_("with --all: the dask scheduler (default GRIDPLAN_DASK_SCHEDULER, else this "
                             "machine)")),
        click.option("--workers", type=click.IntRange(min=1),
                     help=N_("with --all and no cluster: processes (default: cores)")),
    )

    def add(function: Callable) -> Callable:
        for option in reversed(options):  # as if written one above the other, in this order
            function = option(function)
        return function

    return add


@contextlib.contextmanager
def every_district(label: str) -> Iterator[Callable]:
    """A ``--all`` run's progress on stderr: a bar over the districts and the callback that moves
    it, naming each district skipped (no units); a district task that kept failing (its workers
    dying) ends the command in one line."""
    from layers.plans.scale import DistrictFailed

    with click.progressbar(length=1, label=label, file=sys.stderr) as bar:
        def progress(done: int, total: int, outcome) -> None:
            bar.length = total
            bar.update(1)
            if outcome.skipped:
                click.echo(_("district {district} has no units: skipped", district=outcome.district),
                           err=True)

        try:
            yield progress
        except DistrictFailed as exc:
            raise click.ClickException(str(exc)) from None


def plain(value):
    """JSON for what :mod:`json` does not know: numpy scalars and dates."""
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def echo_json(value) -> None:
    """Print ``value`` as one line of JSON (Chinese as it is)."""
    click.echo(json.dumps(value, ensure_ascii=False))


def street_code(value: str | None) -> str | None:
    """``--street`` checked to be a 9-digit code (None: every street)."""
    if value is not None and not (value.isdigit() and len(value) == 9):
        raise click.BadParameter(_("{value} is not a 9-digit street code", value=repr(value)),
                                 param_hint="--street")
    return value


def register(app: Flask) -> None:
    """Add every module's commands to ``app``'s CLI."""
    for name in MODULES:
        for cmd in import_module(f"{__name__}.{name}").COMMANDS:
            app.cli.add_command(cmd)
