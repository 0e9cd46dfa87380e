"""Automatic plans on the command line: ``plan`` (one street, the stored units or a file of units,
written to a file) and ``plan --all`` (every district as a task, stored as a draft plan). Both
make the plan as the web does (:func:`layers.plans.workflow.draw_plan`)."""

from __future__ import annotations

import json
import sys
from datetime import date
from pathlib import Path

import click

from geodata.i18n import N_, _
from layers.onboarding.imports import ImportRefused
from layers.plans.communities import Bounds
from layers.plans.files import export_plan, units_from_file
from layers.plans.memory import UnitSet
from layers.plans.partition import UnitGraph
from layers.plans.workflow import draw_plan, draw_stored_plan
from webmap.commands import command, district_options, every_district, ready
from webmap.commands.layers import parse_mapping
from webmap.extensions import plans


@command("plan", help=N_(
    "Make an automatic plan; print its scores as one JSON object on stdout."), also=(ValueError,))
@click.option("--min", "minimum", type=int, default=None, help=N_("households, at least (default: "
                                                                  "settings)"))
@click.option("--max", "maximum", type=int, default=None, help=N_("households, at most (default: "
                                                                  "settings)"))
@click.option("--target", type=int, help=N_("preferred households per community"))
@click.option("--street", help=N_("only this street (9-digit code)"))
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--fresh", is_flag=True, help=N_("redraw every community, not only those breaking the rules"))
@click.option("--units", "units_path", type=click.Path(path_type=Path),
              help=N_("plan units from this file instead of the database"))
@click.option("--map", "mapping", multiple=True, metavar="SRC=DST", help=N_("rename a column of --units"))
@click.option("--crs", help=N_("CRS of --units when its file does not say"))
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help=N_(".gpkg or .zip (shapefiles); needed unless --all"))
@district_options(N_("plan every district of the database, one task per district, into a draft plan"))
@click.option("--name", "plan_name", help=N_("with --all: the plan's name"))
def plan_command(minimum, maximum, target, street, seed, fresh, units_path, mapping, crs, output,
                 every_district, cluster, workers, plan_name) -> None:
    if every_district:
        if street or units_path:
            raise click.ClickException(_("--all plans every district of the database: leave out --street "
                                         "and --units"))
        _plan_every_district(minimum, maximum, target, seed, fresh, cluster, workers, plan_name)
        return
    if output is None:
        raise click.ClickException(_("name the plan's file with -o (.gpkg or .zip), or plan every district "
                                     "into the database with --all"))
    if units_path is None:
        ready()
        unit_set = plans().units(street)  # refused here when there are none; kept for the plan
    else:
        unit_set = _units_of_file(units_path, mapping, crs, street)
    if output.suffix.lower() not in (".gpkg", ".zip"):
        raise click.ClickException(_("{file}: write the plan to a .gpkg or a .zip", file=output.name))
    rules = {"minimum": minimum, "maximum": maximum, "target": target, "fresh": fresh, "seed": seed}
    streets = len(set(unit_set.graph.street))
    with click.progressbar(length=streets, label=_("planning"), file=sys.stderr) as bar:
        def progress(_done: int, _total: int) -> None:
            bar.update(1)

        if units_path is None:
            unit_set, _rules, result = draw_stored_plan(plans(), street=street, progress=progress, **rules)
        else:
            _rules, result = draw_plan(unit_set, rules, Bounds(), progress=progress)
    export_plan(result, unit_set.units, output)
    click.echo(json.dumps(result.scores(), ensure_ascii=False))


def _units_of_file(path: Path, mapping: tuple[str, ...], crs: str | None, street: str | None) -> UnitSet:
    """``--units``: the units of a file (of ``street`` only when given), refused when there are none."""
    try:
        units = units_from_file(path, parse_mapping(mapping), crs)
    except ImportRefused as exc:
        raise click.ClickException(_("cannot read the units: {reason}", reason=exc)) from None
    if street:
        units = units[units["street_code"] == street]
    if units.empty:
        raise click.ClickException(_("no units to plan in street {street}", street=street) if street
                                   else _("no units to plan"))
    return UnitSet(0, street, units, UnitGraph.from_units(units, None))


def _plan_every_district(minimum, maximum, target, seed, fresh, cluster, workers, plan_name) -> None:
    """``plan --all``: every district as a task (:mod:`layers.plans.scale`), stored as a draft plan;
    skipped districts named on stderr, the plan's id and scores as JSON on stdout."""
    from layers.plans.scale import plan_all

    eng = ready()
    name = plan_name or _("plan of every district, {day}", day=date.today().isoformat())
    with every_district(_("planning districts")) as progress:
        made = plan_all(eng, name, "cli", minimum=minimum, maximum=maximum, target=target, fresh=fresh,
                        seed=seed, cluster=cluster, workers=workers, progress=progress)
    click.echo(json.dumps(made.summary(), ensure_ascii=False))


COMMANDS = (plan_command,)
