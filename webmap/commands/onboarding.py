"""A real city's data as it arrives, on the command line (``flask --app webmap …``):

- ``topology communities`` — overlaps, gaps inside streets, parts outside the street (one JSON object);
- ``clean communities [--max-sliver 50]`` — resolve the small ones, print the same object and ``changed``;
- ``codes apply TABLE.csv`` — the official code table replaces provisional codes (one transaction);
- ``units build [--street CODE] [--households TABLE.csv] [--raster FILE.tif] [--shape hex|square]
  [--cell-m2 M2]`` — blocks from roads, or a tessellation where no roads are stored;
- ``onboard FOLDER --district CODE`` — all of it for a folder of whatever the city has.

The commands parse their input and call :mod:`layers.onboarding`; nothing else happens here.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import click
from flask import current_app, render_template
from sqlalchemy import make_url

from geodata.code_table import apply_code_table
from geodata.crs import to_wgs84
from geodata.i18n import N_, _
from layers.onboarding.boundaries import MAX_SLIVER_M2, clean_stored, stored_topology
from layers.onboarding.folder import STEPS, onboard
from layers.onboarding.imports import read_source
from layers.onboarding.units import CELL_M2, MIN_BLOCK_M2, SHAPES, build_stored, residential_points
from webmap.commands import command, echo_json, group, ready, street_code

BOUNDARY_LAYERS = click.Choice(["communities"])


@command("topology", help=N_(
    "Report the overlaps, gaps and parts outside their street of LAYER as one JSON object."))
@click.argument("layer", type=BOUNDARY_LAYERS)
@click.option("--street", help=N_("only this street (9-digit code)"))
def topology_command(layer: str, street: str | None) -> None:
    eng = ready()
    echo_json(stored_topology(eng, street_code(street)).summary())


@command("clean", help=N_(
    "Resolve the small overlaps, gaps and outside pieces of LAYER; print the topology after and what "
    "changed (the old polygons are kept in the history)."), also=(ValueError,))
@click.argument("layer", type=BOUNDARY_LAYERS)
@click.option("--max-sliver", type=float, default=MAX_SLIVER_M2, show_default=True,
              help=N_("resolve overlaps, gaps and outside pieces up to this area (m²)"))
@click.option("--street", help=N_("only this street (9-digit code)"))
def clean_command(layer: str, max_sliver: float, street: str | None) -> None:
    eng = ready()
    if max_sliver < 0:
        raise click.BadParameter(_("an area in m² cannot be negative"), param_hint="--max-sliver")
    result = clean_stored(eng, max_sliver, street=street_code(street))
    echo_json(result.summary())
    click.echo(_("{changes} changes, {communities} communities redrawn", changes=len(result.changed),
                 communities=len(result.communities)), err=True)


codes = group("codes", help=N_("The official code table (the statistical division codes) and provisional "
                               "codes."))
units = group("units", help=N_("Planning units where the city has none: blocks from the roads, or a "
                               "tessellation without them."))


@command("apply", help=N_(
    "Replace provisional codes by the official ones of TABLE (CSV: code, name, parent) everywhere, in one"
    " transaction; print what matched, what did not and what was ambiguous (one JSON object)."),
         group=codes, refused=N_("code table refused, nothing written: {reason}"))
@click.argument("table", type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help=N_("report what would change, write nothing"))
def codes_apply(table: Path, dry_run: bool) -> None:
    eng = ready()
    result = apply_code_table(eng, table, actor="cli", dry_run=dry_run)
    echo_json(result.summary())


@command("build", help=N_(
    "Cut the streets into blocks along the roads and community boundaries — or, where no roads are stored"
    " (or --shape/--cell-m2 ask for it), tessellate them into cells cut by the community boundaries — "
    "estimate their households, and replace the streets' units (one transaction); print one JSON object."),
         group=units, refused=N_("units not built, nothing written: {reason}"),
         also=(ValueError,))
@click.option("--street", help=N_("only this street (9-digit code)"))
@click.option("--households", "households", type=click.Path(path_type=Path),
              help=N_("CSV of community name or code, households, population: totals honoured exactly"))
@click.option("--raster", type=click.Path(path_type=Path),
              help=N_("population GeoTIFF in EPSG:4326 (WorldPop …)"))
@click.option("--pois", type=click.Path(path_type=Path),
              help=N_("points of interest; residential ones weigh households"))
@click.option("--category", help=N_("the column of --pois holding the category (residential compound …)"))
@click.option("--min-block", type=float, default=MIN_BLOCK_M2, show_default=True,
              help=N_("blocks smaller than this (m²) are merged into a neighbour"))
@click.option("--shape", type=click.Choice(SHAPES),
              help=N_("tessellate into cells of this shape instead of blocks (the default, hex, when no "
                      "roads are stored)"))
@click.option("--cell-m2", type=float,
              show_default=f"{CELL_M2:,.0f}",  # the domain's default: None here tells "not asked for"
              help=N_("tessellated cells of about this area (m²)"))
def units_build(street, households, raster, pois, category, min_block, shape, cell_m2) -> None:
    eng = ready()
    points = None
    if pois is not None:
        with tempfile.TemporaryDirectory(prefix="gridplan-pois-") as tmp:
            points = to_wgs84(read_source(pois, workdir=Path(tmp)))
        points = residential_points(points, category)
    with click.progressbar(length=1, label=_("building units"), file=sys.stderr) as bar:
        def tick(done: int, total: int) -> None:
            bar.length = total
            bar.update(done - bar.pos)

        result = build_stored(eng, street=street_code(street), households=households, raster=raster,
                              pois=points, min_block_m2=min_block, progress=tick, shape=shape,
                              cell_m2=cell_m2)
    echo_json(result.summary())


@command("onboard", help=N_(
    "Load a whole city from FOLDER (streets, communities, roads, households table, buildings or POIs, "
    "facilities, incidents, code table; onboard.toml says what their fields mean) and write a report of "
    "what was loaded, estimated, provisional, cleaned and left for the planner."),
         refused=N_("onboarding stopped: {reason}"))
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--district", help=N_("the district the city's streets lie in (6 digits)"))
@click.option("--report", "report_dir", type=click.Path(path_type=Path),
              help=N_("where to write onboard-report.json and .html (default: FOLDER)"))
def onboard_command(folder: Path, district: str | None, report_dir: Path | None) -> None:
    eng = ready()
    with click.progressbar(length=len(STEPS), label=_("onboarding"), file=sys.stderr,
                           item_show_func=lambda name: _(ONBOARD_STEPS[name]) if name in ONBOARD_STEPS
                           else name) as bar:
        def tick(name: str, index: int, _total: int) -> None:
            bar.update(index - bar.pos, name)

        report = onboard(eng, folder, district, progress=tick, private=_own_paths())
        bar.update(len(STEPS) - bar.pos)
    out = report_dir or folder
    out.mkdir(parents=True, exist_ok=True)
    data = report.as_dict()
    _write_new(out / "onboard-report.json", json.dumps(data, ensure_ascii=False, indent=2, default=str))
    _write_new(out / "onboard-report.html", render_report(data))
    figures = data["steps"].get("report", {})
    click.echo(_("onboarded {communities} communities in {streets} streets ({provisional} provisional "
                 "codes), {units} units, {households} households; {seconds} s",
                 communities=figures.get("communities", 0), streets=figures.get("streets", 0),
                 provisional=figures.get("provisional_communities", 0), units=figures.get("units", 0),
                 households=f"{figures.get('households', 0):,}", seconds=data["total_seconds"]))
    click.echo(_("report: {path}", path=out / "onboard-report.html"))


#: the steps of an onboarding as its progress bar names them
ONBOARD_STEPS = {"streets": N_("streets"), "communities": N_("communities"),
                 "clean": N_("cleaning boundaries"), "roads": N_("roads"), "buildings": N_("buildings"),
                 "units": N_("planning units"),
                 "facilities": N_("facilities"), "incidents": N_("incidents"), "codes": N_("code table"),
                 "report": N_("report")}


def _own_paths() -> tuple[Path, ...]:
    """What an onboarding folder may not be, hold or lie in: the instance folder (the secret key)
    and the SpatiaLite database file, wherever DATABASE_URL puts it."""
    own = [Path(current_app.instance_path)]
    url = make_url(current_app.config["DATABASE_URL"])
    if url.drivername.startswith("sqlite") and url.database and url.database != ":memory:":
        own.append(Path(url.database))
    return tuple(own)


def _write_new(path: Path, content: str) -> None:
    """Write ``path`` as a new file: a link of that name in the department's folder is replaced,
    never followed (it could point at any file this user may write)."""
    fd, temporary = tempfile.mkstemp(prefix=".onboard-report-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(content)
        os.chmod(temporary, 0o644)  # a report to share, as write_text would have left it
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def render_report(data: dict) -> str:
    """The onboarding report as an HTML page (``templates/onboard_report.html``, values escaped)."""
    return render_template("onboard_report.html", **data)


COMMANDS = (topology_command, clean_command, codes, units, onboard_command)
