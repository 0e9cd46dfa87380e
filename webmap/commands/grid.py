"""Grid cells (网格) on the command line: ``grid [--community CODE | --street CODE | --all]``
(``--all``: a task per district, on a dask cluster or this machine's cores)."""

from __future__ import annotations

import json

import click

from geodata.errors import Refused
from geodata.i18n import N_, _
from layers.grid.cells import generate_grid, grid_rules, grid_scope
from webmap.commands import command, district_options, every_district
from webmap.extensions import engine


@command("grid", help=N_(
    "Generate and store grid cells; print one JSON object of what was made."))
@click.option("--community", help=N_("only this community (12-digit code)"))
@click.option("--street", help=N_("only this street (9-digit code)"))
@click.option("--min", "minimum", type=int, help=N_("households per cell, at least (default: settings)"))
@click.option("--max", "maximum", type=int, help=N_("households per cell, at most (default: settings)"))
@click.option("--area", "area_m2", type=float, help=N_("aim at cells of this area (m²) instead"))
@district_options(N_("every district of the database, one task per district"))
def grid_command(community, street, minimum, maximum, area_m2, every_district, cluster, workers) -> None:
    scope = grid_scope({"community": community, "street": street})
    for name, value in (("--min", minimum), ("--max", maximum), ("--area", area_m2)):
        if value is not None and value <= 0:
            raise Refused(_("{name} must be above 0", name=name))
    rules = grid_rules(engine(), minimum, maximum, area_m2)
    if every_district:
        if community or street:
            raise Refused(_("--all generates every district of the database: leave out --community and "
                            "--street"))
        click.echo(json.dumps(_grid_every_district(rules, cluster, workers), ensure_ascii=False))
        return
    answer = generate_grid(engine(), rules, **scope)
    click.echo(json.dumps(answer, ensure_ascii=False))


def _grid_every_district(rules, cluster, workers) -> dict:
    """``grid --all``: a task per district (:mod:`layers.grid.districts`); districts without
    units named on stderr."""
    from layers.grid.districts import grid_all

    with every_district(_("generating districts' cells")) as progress:
        return grid_all(engine(), rules, cluster=cluster, workers=workers, progress=progress).summary()


COMMANDS = (grid_command,)
