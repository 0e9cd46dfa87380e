"""The incident loop on the command line: ``rates``, ``departments add|list``,
``incidents-export`` and ``open311-import``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from geodata import departments as depts
from geodata.i18n import N_, _
from layers.incidents import departments, exports, rates
from webmap.commands import command, group
from webmap.extensions import engine


@command("rates", help=N_(
    "Print the rates (closure, on-time closure, rework …) per cell, community, street or district as JSON."))
@click.option("--by", type=click.Choice(rates.LEVELS), default="community", show_default=True)
@click.option("--from", "since", help=N_("first day, YYYY-MM-DD (default: a year before --to)"))
@click.option("--to", "until", help=N_("last day, YYYY-MM-DD (default: today)"))
@click.option("--scope", help=N_("only under this code (district, street, community)"))
def rates_command(by: str, since: str | None, until: str | None, scope: str | None) -> None:
    first, last = rates.period(since, until)
    table = rates.rates(engine(), by, first, last, prefix=scope)
    click.echo(json.dumps(rates.as_json(table, by, first, last, rates.targets(engine())), ensure_ascii=False))


departments_cli = group("departments", help=N_("The departments cases are dispatched to."))


@command("add", help=N_(
    "Add the department NAME handling --categories (or change the one with --code)."), group=departments_cli)
@click.argument("name")
@click.option("--categories", required=True, help=N_("the category codes it handles, comma-separated"))
@click.option("--code", help=N_("its code (default: the next free D01, D02 …); an existing code is "
                                "changed"))
@click.option("--contact", help=N_("whom to call"))
@click.option("--limit", "limits", multiple=True, metavar="CATEGORY=HOURS",
              help=N_("its own time limit for a category, in working hours"))
@click.option("--default", "default_for", help=N_("categories it is the default department for, "
                                                  "comma-separated"))
def departments_add(name: str, categories: str, code: str | None, contact: str | None,
                    limits: tuple[str, ...], default_for: str | None) -> None:
    own: dict = {}
    for item in limits:
        category, _sep, hours = item.partition("=")
        try:
            own[category.strip()] = float(hours)
        except ValueError:
            raise click.ClickException(_("--limit {item}: write CATEGORY=HOURS", item=item)) from None
    data = {"code": code, "name": name, "categories": categories,
            "contact": contact, "limits": own, "default_for": default_for or []}
    saved, new = departments.save_department(engine(), data, actor="cli")
    click.echo(_("department {code} {name}: {categories}", code=saved["code"], name=saved["name"],
                 categories=", ".join(saved["categories"])))


@command("list", help=N_(
    "Print the departments as JSON."), group=departments_cli)
def departments_list() -> None:
    click.echo(json.dumps(depts.list_departments(engine()), ensure_ascii=False))


@command("incidents-export", help=N_(
    "Export cells (with their supervisors) or incidents with their history."))
@click.argument("layer", type=click.Choice(["incidents", "grid_cells"]))
@click.option("--format", "fmt", type=click.Choice(exports.FORMATS), default="gpkg", show_default=True)
@click.option("--scope", help=N_("only under this code"))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help=N_("a folder"))
def export_command(layer: str, fmt: str, scope: str | None, output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    click.echo(str(exports.export(engine(), layer, fmt, output, prefix=scope)))


@command("open311-import", help=N_(
    "Import 311 requests (Boston or NYC open data CSV, or Open311 JSON) into the loop."))
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--kind", type=click.Choice(["boston", "nyc", "open311"]), required=True)
@click.option("--default-category", help=N_("catalogue code for service types the mapping does not know"))
@click.option(
    "--district", default="000000", show_default=True, help=N_("district code for cases outside every "
                                                               "area")
)
def open311_import(path: Path, kind: str, default_category: str | None, district: str) -> None:
    from layers.incidents import open311

    result = open311.import_file(engine(), path, kind, default_category=default_category, district=district)
    click.echo(json.dumps(result, ensure_ascii=False))


COMMANDS = (rates_command, departments_cli, export_command, open311_import)
