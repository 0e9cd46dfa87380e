"""A department's layers in and out: ``import LAYER PATH`` and ``export LAYER``."""

from __future__ import annotations

from pathlib import Path

import click
from flask import current_app

from geodata.catalog import LAYERS
from geodata.exporter import ENCODINGS, FORMATS, ExportError
from geodata.i18n import N_, _, speaks_english
from layers.exports import export_recorded
from layers.onboarding.boundaries import stored_topology
from layers.onboarding.imports import MODES, UNMAPPED, import_layer, parse_values
from webmap.commands import command, ready

LAYER = click.Choice(list(LAYERS))


def parse_mapping(pairs: tuple[str, ...]) -> dict[str, str]:
    """``--map SRC=DST`` options as a renaming of source fields."""
    out = {}
    for pair in pairs:
        src, sep, dst = pair.partition("=")
        if not sep or not src or not dst:
            raise click.BadParameter(_("{pair} is not src=dst", pair=repr(pair)), param_hint="--map")
        out[src] = dst
    return out


@command("import", help=N_(
    "Import LAYER from PATH (shapefile zip, .gpkg, .geojson or .csv with lon/lat)."),
         refused=N_("import refused, nothing written: {reason}"))
@click.argument("layer", type=LAYER)
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--mode", type=click.Choice(MODES), default="append", show_default=True)
@click.option("--crs", help=N_("source CRS over the file's own: EPSG:4490, EPSG:4326, GCJ02 …"))
@click.option("--map", "mapping", multiple=True, metavar="SRC=DST", help=N_("rename a source field"))
@click.option("--district", help=N_("streets and communities without codes lie in this district (6 "
                                    "digits): they get provisional codes under it"))
@click.option("--values", "values", multiple=True, metavar="FIELD:SRC=DST,…|FIELD=TABLE.csv",
              help=N_("map the source's values of a field to gridplan's (e.g. 'kind:nursery=kindergarten')"))
@click.option("--unmapped", type=click.Choice(UNMAPPED), default="refuse", show_default=True,
              help=N_("rows whose value has no mapping: refuse the file, or leave them out"))
@click.option("--layer", "source_layer", metavar="NAME",
              help=N_("the layer of a GeoPackage holding several to import (without it such a file is "
                      "refused, its layers listed)"))
@click.option("--force", is_flag=True,
              help=N_("import units exported before later boundary changes (an adoption) although the "
                      "file would undo them"))
def import_command(layer: str, path: Path, mode: str, crs: str | None, mapping: tuple[str, ...],
                   district: str | None, values: tuple[str, ...], unmapped: str, source_layer: str | None,
                   force: bool) -> None:
    eng = ready()
    named = layer if speaks_english() else LAYERS[layer].label  # 社区 … for a Chinese reader
    with click.progressbar(length=1, label=_("importing {layer}", layer=named)) as bar:

        def tick(done: int, total: int) -> None:
            bar.length = total  # known once the file has been read and checked
            bar.update(done - bar.pos)

        report = import_layer(eng, layer, path, mode=mode, crs=crs, mapping=parse_mapping(mapping),
                              progress=tick, district=district, values=parse_values(values),
                              unmapped=unmapped, source_layer=source_layer, force=force,
                              max_unzipped_bytes=current_app.config["MAX_UNZIPPED_BYTES"])
    click.echo(report.summary())
    if layer == "communities":  # boundaries as they are: reported, not refused
        found = stored_topology(eng).summary()
        click.echo("  " + _("topology: {overlaps} overlaps ({overlap_m2} m²), {gaps} gaps inside streets "
                             "({gap_m2} m²), {outside} parts outside their street ({outside_m2} m²) — "
                             "`topology communities` lists them, `clean communities` resolves the small ones",
                             overlaps=found["overlaps"], overlap_m2=f"{found['overlap_m2']:,.0f}",
                             gaps=found["gaps"],
                             gap_m2=f"{found['gap_m2']:,.0f}", outside=found["outside_street"],
                             outside_m2=f"{found['outside_street_m2']:,.0f}"))


@command("export", help=N_(
    "Export LAYER as a shapefile zip, GeoPackage, GeoJSON or CSV."),
         refused=N_("export failed: {reason}"), also=(ExportError, ValueError))
@click.argument("layer", type=LAYER)
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True)
@click.option("--encoding", type=click.Choice(list(ENCODINGS)), default="utf-8", show_default=True,
              help=N_("text encoding of shapefile and CSV"))
@click.option("--crs", help=N_("EPSG:4326 (default), EPSG:4490 or a projected EPSG code"))
@click.option("--street", help=N_("only this street (9-digit code)"))
@click.option("--community", help=N_("only this community (12-digit code)"))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
def export_command(layer: str, fmt: str, encoding: str, crs: str | None, street: str | None,
                   community: str | None, output: Path) -> None:
    eng = ready()
    report = export_recorded(eng, "cli", layer, fmt, output, encoding=encoding, crs=crs, street=street,
                             community=community)
    click.echo(report.summary())


COMMANDS = (import_command, export_command)
