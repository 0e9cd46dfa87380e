"""Grid cells (网格) on the command line: ``grid [--community CODE | --street CODE]``."""

from __future__ import annotations

import json

import click

from geodata.errors import Refused
from geodata.i18n import N_, _
from layers.grid.cells import generate_grid, grid_rules, grid_scope
from webmap.commands import command
from webmap.extensions import engine


@command("grid", help=N_(
    "Generate and store grid cells; print one JSON object of what was made."))
@click.option("--community", help=N_("only this community (12-digit code)"))
@click.option("--street", help=N_("only this street (9-digit code)"))
@click.option("--min", "minimum", type=int, help=N_("households per cell, at least (default: settings)"))
@click.option("--max", "maximum", type=int, help=N_("households per cell, at most (default: settings)"))
@click.option("--area", "area_m2", type=float, help=N_("aim at cells of this area (m²) instead"))
def grid_command(community, street, minimum, maximum, area_m2) -> None:
    scope = grid_scope({"community": community, "street": street})
    for name, value in (("--min", minimum), ("--max", maximum), ("--area", area_m2)):
        if value is not None and value <= 0:
            raise Refused(_("{name} must be above 0", name=name))
    answer = generate_grid(engine(), grid_rules(engine(), minimum, maximum, area_m2), **scope)
    click.echo(json.dumps(answer, ensure_ascii=False))


COMMANDS = (grid_command,)
