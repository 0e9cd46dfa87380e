"""Export a layer (or a street's or community's part of it) for other departments' systems.

Formats:

- ``shp``: a zip of ``.shp .shx .dbf .prj .cpg`` plus ``<layer>_fields.csv``, the alias table
  mapping the ASCII field names (at most 10 bytes, so ArcGIS and QGIS read them) to the full
  names and their Chinese labels. UTF-8 by default, GBK (code page 936) on request; text cut at
  254 bytes on a character boundary, never inside one. ``.prj`` in WGS 84 or CGCS2000.
- ``gpkg``: GeoPackage in WGS 84, CGCS2000 or any projected CRS asked for.
- ``geojson``: RFC 7946, always WGS 84, full double precision.
- ``csv``: attributes plus WKT (and lon/lat for points) at full double precision (shared
  vertices stay shared, so an import rebuilds the same neighbours), UTF-8 with a byte-order mark
  so that Excel opens it, or GBK.

A layer export carries the boundary revision it was made at (:func:`geodata.revisions.current_revision`),
so that an import of it after later boundary changes is noticed (``geodata.importer.stale_units``):
a ``<layer>_revision.txt`` beside the shapefile in its zip, the GeoPackage layer's metadata item
``GRIDPLAN_REVISION``, a ``"gridplan"`` member of the GeoJSON FeatureCollection, and a last
column ``gridplan_revision`` in a CSV (a spreadsheet keeps columns, not comments).
"""

from __future__ import annotations

import csv
import io
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from pyproj import CRS
from sqlalchemy import Engine

from geodata.catalog import Field, get_layer
from geodata.crs import CGCS2000, WGS84, parse_crs
from geodata.i18n import _
from geodata.revisions import current_revision
from geodata.spreadsheet import frame_cells
from geodata.store import read_layer

FORMATS = ("shp", "gpkg", "geojson", "csv")
ENCODINGS = {"utf-8": ("UTF-8", "UTF-8"), "gbk": ("CP936", "936")}  # GDAL name, .cpg text
DBF_TEXT_BYTES = 254


class ExportError(ValueError):
    """The export cannot be made as asked (wrong format, CRS, encoding …)."""


@dataclass
class ExportReport:
    """What an export wrote."""

    path: Path
    features: int
    truncated: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """What the export wrote, in lines for a person (the command line's summary)."""
        text = _("{n} features written to {path}", n=self.features, path=self.path)
        if self.truncated:
            text += "\n  " + _("{n} values cut at {limit} bytes: {values}", n=len(self.truncated),
                                limit=DBF_TEXT_BYTES, values="; ".join(self.truncated[:10]))
        return text


def _normalise_encoding(encoding: str) -> str:
    key = encoding.lower().replace("_", "-")
    key = {"utf8": "utf-8", "cp936": "gbk", "936": "gbk", "gb2312": "gbk"}.get(key, key)
    if key not in ENCODINGS:
        raise ExportError(_("unknown encoding {encoding}: use utf-8 or gbk", encoding=repr(encoding)))
    return key


def _target_crs(fmt: str, crs) -> CRS:
    if crs in (None, ""):
        return CRS.from_epsg(WGS84)
    parsed = parse_crs(crs)
    if isinstance(parsed, str):
        raise ExportError(_("GCJ-02 is not an export CRS: data leave gridplan in WGS 84 or CGCS2000"))
    if fmt == "geojson" and parsed.to_epsg() != WGS84:
        raise ExportError(_("GeoJSON is always WGS 84 (RFC 7946): leave out --crs"))
    if fmt == "shp" and parsed.to_epsg() not in (WGS84, CGCS2000) and not parsed.is_projected:
        raise ExportError(_("a shapefile is exported in WGS 84 (EPSG:4326), CGCS2000 (EPSG:4490) or a "
                            "projected CRS"))
    return parsed


def _reproject(gdf: gpd.GeoDataFrame, target: CRS) -> gpd.GeoDataFrame:
    if target.to_epsg() == CGCS2000:  # same coordinates within a metre: relabel, do not shift
        return gdf.set_crs(target, allow_override=True)
    return gdf.to_crs(target)


def _cut_utf(value: str, limit: int, encoding: str) -> str:
    data = value.encode(encoding)
    if len(data) <= limit:
        return value
    return data[:limit].decode(encoding, errors="ignore")  # drop a split last character


def _text_columns(frame: pd.DataFrame, fields: list[Field]) -> pd.DataFrame:
    """Dates and times as ISO text (shapefiles have no time type; GDAL would warn)."""
    out = frame.copy()
    for f in fields:
        if f.name not in out.columns:
            continue
        if f.dtype == "datetime":
            values = pd.to_datetime(out[f.name])
            out[f.name] = values.dt.strftime("%Y-%m-%d %H:%M:%S").where(values.notna(), None)
        elif f.dtype == "date":
            values = pd.to_datetime(out[f.name])
            out[f.name] = values.dt.strftime("%Y-%m-%d").where(values.notna(), None)
    return out


#: Where an export holds the boundary revision it was made at (the importer reads them back).
REVISION_SIDECAR = "_revision.txt"
REVISION_KEY = "GRIDPLAN_REVISION"
REVISION_MEMBER = "gridplan"
REVISION_COLUMN = "gridplan_revision"


def _write_shapefile(gdf: gpd.GeoDataFrame, fields: list[Field], layer: str, out: Path,
                     encoding: str, report: ExportReport, revision: int | None = None) -> None:
    gdal_encoding, cpg = ENCODINGS[encoding]
    py_encoding = "utf-8" if encoding == "utf-8" else "gbk"
    frame = _text_columns(gdf, fields)
    for f in fields:
        if f.dtype not in ("str", "datetime", "date") or f.name not in frame.columns:
            continue
        values = frame[f.name].to_numpy(dtype=object)
        text = np.array([isinstance(v, str) for v in values], dtype=bool)
        if not text.any():
            continue
        # a character takes at most 3 bytes in UTF-8 and 2 in GBK: only long values need a look
        candidates = np.flatnonzero(text & (frame[f.name].str.len().fillna(0).to_numpy()
                                            > DBF_TEXT_BYTES // 3))
        if encoding != "utf-8":
            candidates = np.flatnonzero(text)  # every value must be checked for GBK
        for i in candidates:
            value = values[i]
            try:
                cut = _cut_utf(value, DBF_TEXT_BYTES, py_encoding)
            except UnicodeEncodeError:
                raise ExportError(_("row {p1}: {name} {p3} has characters GBK cannot hold: export in UTF-8",
                                    p1=i + 1, name=f.name, p3=repr(value[:40]))) from None
            if cut != value:
                report.truncated.append(f"row {i + 1} {f.name}")
                values[i] = cut
        frame[f.name] = values
    frame = frame.rename(columns={f.name: f.short for f in fields})
    with tempfile.TemporaryDirectory(prefix="gridplan-export-") as tmp:
        shp = Path(tmp) / f"{layer}.shp"
        kwargs = {"encoding": gdal_encoding}
        if any(frame.geometry.geom_type.isin(["Polygon", "MultiPolygon"])):
            kwargs["geometry_type"] = "MultiPolygon" if frame.geometry.geom_type.eq(
                "MultiPolygon").any() else "Polygon"
        pyogrio.write_dataframe(frame, shp, driver="ESRI Shapefile", **kwargs)
        (Path(tmp) / f"{layer}.cpg").write_text(cpg, encoding="ascii")
        aliases = io.StringIO()
        writer = csv.writer(aliases)
        writer.writerow(["field", "name", "label"])
        for f in fields:
            writer.writerow([f.short, f.name, f.label])
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=2) as zf:
            for suffix in (".shp", ".shx", ".dbf", ".prj", ".cpg"):
                zf.write(Path(tmp) / f"{layer}{suffix}", f"{layer}{suffix}")
            zf.writestr(f"{layer}_fields.csv", aliases.getvalue().encode("utf-8-sig"))
            if revision is not None:  # a sidecar: ArcGIS and QGIS leave files they do not know alone
                zf.writestr(f"{layer}{REVISION_SIDECAR}",
                            f"# gridplan: the boundary revision this file was exported at\n"
                            f"revision={revision}\nlayer={layer}\n")


def _write_geojson(gdf: gpd.GeoDataFrame, fields: list[Field], out: Path, revision: int | None = None,
                   layer: str = "") -> None:
    """RFC 7946 GeoJSON, written with shapely's vectorised encoder (twice GDAL's speed here):
    WGS 84, exterior rings counterclockwise, coordinates at full double precision — rounded (to
    7 decimals, as it was), a part of a layer imported back no longer shares its vertices with
    the units around it, and their neighbours are lost."""
    geoms = shapely.orient_polygons(np.asarray(gdf.geometry.values, dtype=object))
    frame = pd.DataFrame(_text_columns(gdf, fields).drop(columns=gdf.geometry.name))
    properties = frame.to_json(orient="records", lines=True, force_ascii=False).splitlines() if len(
        frame) else []
    with open(out, "w", encoding="utf-8") as f:
        f.write('{"type":"FeatureCollection",')
        if revision is not None:  # a foreign member (RFC 7946 §6.1), before the features
            f.write(f'"{REVISION_MEMBER}":{{"layer":"{layer}","revision":{int(revision)}}},')
        f.write('"features":[\n')
        f.write(",\n".join(f'{{"type":"Feature","properties":{p},"geometry":{g or "null"}}}'
                            for p, g in zip(properties, shapely.to_geojson(geoms), strict=True)))
        f.write("\n]}\n")


def _write_csv(gdf: gpd.GeoDataFrame, fields: list[Field], out: Path, encoding: str,
               revision: int | None = None) -> None:
    frame = pd.DataFrame(_text_columns(gdf, fields).drop(columns=gdf.geometry.name))
    geoms = np.asarray(gdf.geometry.values, dtype=object)
    if len(geoms) and (shapely.get_type_id(geoms) == shapely.GeometryType.POINT).all():
        frame["lon"] = shapely.get_x(geoms)
        frame["lat"] = shapely.get_y(geoms)
    else:
        # every digit a double needs (rounding moves a vertex off its neighbour's edge, and the
        # two units no longer share it: the import would find them no neighbours)
        frame["wkt"] = shapely.to_wkt(geoms, rounding_precision=-1, trim=True)
    if revision is not None:
        frame[REVISION_COLUMN] = int(revision)
    # a text a spreadsheet would run as a formula gets a leading ' (geodata/spreadsheet.py)
    frame_cells(frame).to_csv(out, index=False, encoding="utf-8-sig" if encoding == "utf-8" else "gbk")


def write_frame(gdf: gpd.GeoDataFrame, fields: list[Field], name: str, fmt: str, out: str | Path,
                *, encoding: str = "utf-8", crs=None, revision: int | None = None) -> ExportReport:
    """Write a GeoDataFrame in EPSG:4326 whose columns are ``fields`` to ``out``.

    Shared by layer and plan exports, so both follow the same rules. ``revision``: the boundary
    revision the data were read at, written into the file (see the module's notes).
    """
    if fmt not in FORMATS:
        raise ExportError(_("unknown format {fmt}: use {p2}", fmt=repr(fmt), p2=', '.join(FORMATS)))
    encoding = _normalise_encoding(encoding)
    target = _target_crs(fmt, crs)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    gdf = _reproject(gdf[[f.name for f in fields if f.name in gdf.columns] + [gdf.geometry.name]],
                     target)
    for f in fields:  # whole numbers stay whole even with empty values (not Real in a .dbf)
        if f.dtype == "int" and f.name in gdf.columns:
            gdf[f.name] = pd.array(gdf[f.name], dtype="Int64")
    report = ExportReport(out, len(gdf))
    partial = out.with_name(f".{out.stem}.partial{out.suffix}")  # never a half-written ``out``
    try:
        if fmt == "shp":
            _write_shapefile(gdf, fields, name, partial, encoding, report, revision)
        elif fmt == "gpkg":
            # GeoPackage 1.2: the version every reader (ArcGIS, QGIS, older GDAL) opens without a warning
            pyogrio.write_dataframe(gdf, partial, layer=name, driver="GPKG",
                                    dataset_options={"VERSION": "1.2"},
                                    layer_metadata={REVISION_KEY: str(revision)} if revision is not None
                                    else None)
        elif fmt == "geojson":
            _write_geojson(gdf, fields, partial, revision, name)
        else:
            _write_csv(gdf, fields, partial, encoding, revision)
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    return report


def export_layer(engine: Engine, layer: str, fmt: str, out: str | Path, *, encoding: str = "utf-8",
                 crs=None, street: str | None = None, community: str | None = None) -> ExportReport:
    """Export ``layer`` (optionally one street's or community's part) as ``fmt`` to ``out``."""
    spec = get_layer(layer)
    if fmt not in FORMATS:
        raise ExportError(_("unknown format {fmt}: use {p2}", fmt=repr(fmt), p2=', '.join(FORMATS)))
    _normalise_encoding(encoding)
    _target_crs(fmt, crs)
    # the revision first: a change between the two reads makes the file look older, never newer
    revision = current_revision(engine)
    gdf = read_layer(engine, layer, street=street, community=community)
    gdf, names = with_names(engine, gdf)
    return write_frame(gdf, list(spec.fields) + names, layer, fmt, out, encoding=encoding, crs=crs,
                       revision=revision)


#: the names an export carries beside the codes (an import ignores them: the codes decide)
NAME_FIELDS = {"community_code": Field("community_name", "str", "comm_name", "社区名称"),
               "street_code": Field("street_name", "str", "strt_name", "街道名称")}


def with_names(engine: Engine, gdf: gpd.GeoDataFrame) -> tuple[gpd.GeoDataFrame, list[Field]]:
    """``gdf`` with the name of its community and street beside their codes, and those fields
    (a person reading the file sees 精武社区, not only 420103003005)."""
    from sqlalchemy import select

    from geodata.models import Community, Street

    fields = []
    gdf = gdf.copy()
    for column, name_field in NAME_FIELDS.items():
        if column not in gdf.columns or name_field.name in gdf.columns:
            continue
        table = Community if column == "community_code" else Street
        with engine.connect() as conn:
            names = dict(conn.execute(select(table.code, table.name)).all())
        gdf[name_field.name] = [names.get(c) if isinstance(c, str) else None for c in gdf[column]]
        fields.append(name_field)
    return gdf, fields
