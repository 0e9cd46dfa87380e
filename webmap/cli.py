"""Command line: ``flask --app webmap init-db | demo | import | export``.

Each command shows a progress bar on long work and exits non-zero with a one-line message
naming the problem when it fails.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import click
from flask import Flask
from flask.cli import with_appcontext
from sqlalchemy import func, select

from geodata.catalog import LAYERS
from geodata.demo import generate, write_demo
from geodata.exporter import ENCODINGS, FORMATS, ExportError, export_layer
from geodata.importer import MODES, ImportRefused, import_layer
from geodata.migrate import upgrade
from geodata.models import Unit
from geodata.standards import seed_settings
from webmap import engine

LAYER = click.Choice(list(LAYERS))


def _ready():
    """The app's engine with the newest schema and default settings (idempotent, fast)."""
    eng = engine()
    upgrade(eng)
    with eng.begin() as conn:
        seed_settings(conn)
    return eng


@click.command("init-db")
@with_appcontext
def init_db() -> None:
    """Create or upgrade the database schema and seed the default settings."""
    _ready()
    click.echo("database ready")


@click.command("demo")
@with_appcontext
@click.option("--units", default=4000, show_default=True, help="planning units (200000 ≈ a city)")
@click.option("--seed", default=1, show_default=True, help="random seed")
@click.option("--reference", type=click.DateTime(["%Y-%m-%d"]), default="2026-11-01",
              show_default=True, help="last day of the year of incidents")
@click.option("--if-empty", is_flag=True, help="only when the database holds no units yet")
def demo(units: int, seed: int, reference, if_empty: bool) -> None:
    """Replace every layer with a generated demo district."""
    eng = _ready()
    if if_empty:
        with eng.connect() as conn:
            if conn.execute(select(func.count()).select_from(Unit)).scalar_one():
                click.echo("demo data already present")
                return
    steps = ["road network and blocks", "river", "households", "blind spot", "communities",
             "streets, communities, district", "facilities", "grid cells", "roads", "incidents"]
    with click.progressbar(length=len(steps), label="generating") as bar:
        data = generate(units, seed, reference.date() if reference else date(2026, 11, 1),
                        progress=lambda _msg: bar.update(1))
    total = sum(len(v) for v in data.layers.values())
    with click.progressbar(length=total, label="writing") as bar:
        last: dict[str, int] = {}

        def tick(layer: str, done: int, _total: int) -> None:
            bar.update(done - last.get(layer, 0))
            last[layer] = done

        write_demo(eng, data, progress=tick)
    counts = ", ".join(f"{len(v):,} {k}" for k, v in data.layers.items())
    click.echo(f"demo written: {counts}")


def _mapping(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        src, sep, dst = pair.partition("=")
        if not sep or not src or not dst:
            raise click.BadParameter(f"{pair!r} is not src=dst", param_hint="--map")
        out[src] = dst
    return out


@click.command("import")
@with_appcontext
@click.argument("layer", type=LAYER)
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--mode", type=click.Choice(MODES), default="append", show_default=True)
@click.option("--crs", help="source CRS over the file's own: EPSG:4490, EPSG:4326, GCJ02 …")
@click.option("--map", "mapping", multiple=True, metavar="SRC=DST", help="rename a source field")
def import_command(layer: str, path: Path, mode: str, crs: str | None, mapping: tuple[str, ...]) -> None:
    """Import LAYER from PATH (shapefile zip, .gpkg, .geojson or .csv with lon/lat)."""
    eng = _ready()
    with click.progressbar(length=1, label=f"importing {layer}") as bar:

        def tick(done: int, total: int) -> None:
            bar.length = total  # known once the file has been read and checked
            bar.update(done - bar.pos)

        try:
            report = import_layer(eng, layer, path, mode=mode, crs=crs, mapping=_mapping(mapping),
                                  progress=tick)
        except ImportRefused as exc:
            raise click.ClickException(f"import refused, nothing written: {exc}") from None
    click.echo(report.summary())


@click.command("export")
@with_appcontext
@click.argument("layer", type=LAYER)
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True)
@click.option("--encoding", type=click.Choice(list(ENCODINGS)), default="utf-8", show_default=True,
              help="text encoding of shapefile and CSV")
@click.option("--crs", help="EPSG:4326 (default), EPSG:4490 or a projected EPSG code")
@click.option("--street", help="only this street (9-digit code)")
@click.option("--community", help="only this community (12-digit code)")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
def export_command(layer: str, fmt: str, encoding: str, crs: str | None, street: str | None,
                   community: str | None, output: Path) -> None:
    """Export LAYER as a shapefile zip, GeoPackage, GeoJSON or CSV."""
    eng = _ready()
    try:
        report = export_layer(eng, layer, fmt, output, encoding=encoding, crs=crs, street=street,
                              community=community)
    except (ExportError, ValueError) as exc:
        raise click.ClickException(f"export failed: {exc}") from None
    click.echo(report.summary())


def register(app: Flask) -> None:
    for command in (init_db, demo, import_command, export_command):
        app.cli.add_command(command)
