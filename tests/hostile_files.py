"""A seeded corpus of malformed and hostile layer files, for every import path (``flask import``
and the layers page's upload): each case is one of the small demo's real layers, exported with
gridplan's own exporter and then damaged in exactly one way, with the word its refusal must name.

>>> cases = corpus(seed=12)
>>> cases[0].name, cases[0].layer, cases[0].expect
('units/shp-zip/shp-truncated', 'units', 'cannot be read')

The families: broken shapefile parts (truncated, corrupt, record counts that disagree, missing
parts, text in no known encoding without a .cpg), hostile zips (bombs past the configured limit,
``../`` and absolute paths, links, damaged archives), coordinates (NaN, infinite, absurd),
geometries (self-intersecting, empty, of the wrong type, a million vertices), codes (repeated,
malformed, not under their parent), values (not numbers, not dates, negative), CSV (broken quoting,
no coordinates, unreadable WKT), GeoJSON (a hundred thousand levels deep, truncated, not JSON) and
GeoPackage (truncated, not a database).
"""

from __future__ import annotations

import io
import random
import stat
import struct
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from geodata.catalog import get_layer
from geodata.exporter import write_frame

#: The limit of unpacked bytes the corpus's zip bombs exceed; the tests and the bench configure
#: the app with it (``GRIDPLAN_MAX_UNZIPPED_MB``).
BOMB_LIMIT_MB = 16
#: Vertices of the "million-vertex polygon".
MILLION = 1_000_000
#: Nesting depth of the deep GeoJSON.
DEEP = 100_000
#: Features of each undamaged file.
FEATURES = 6
LAYERS = ("units", "communities", "streets", "grid_cells", "facilities", "incidents", "roads")
FORMATS = ("shp-zip", "shp-set", "geojson", "csv", "gpkg")
_EXT = {"shp-zip": "zip", "geojson": "geojson", "csv": "csv", "gpkg": "gpkg"}


@dataclass(frozen=True)
class Case:
    """One hostile file (or set of files: a shapefile's parts), the layer it is imported into and
    the word (English, any case) the refusal must contain (``a|b``: either)."""

    name: str
    layer: str
    files: dict[str, bytes] = field(repr=False)
    main: str  # the file the command line is given (the .shp of a set)
    expect: str
    family: str
    big: bool = False  # run in a memory-limited process

    def named(self, message: str) -> bool:
        """Whether ``message`` names this case's problem."""
        return any(word.lower() in message.lower() for word in self.expect.split("|"))

    def write(self, folder: Path) -> Path:
        """The files written into ``folder``; returns the path to import."""
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in self.files.items():
            (folder / name).write_bytes(data)
        return folder / self.main

    def upload(self) -> tuple[str, bytes]:
        """What a browser uploads: the file itself, or a shapefile's parts zipped together."""
        if len(self.files) == 1:
            return self.main, self.files[self.main]
        return Path(self.main).stem + ".zip", zip_bytes(self.files)


def zip_bytes(members: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def unzip_bytes(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {m.filename: zf.read(m) for m in zf.infolist()}


# --- the undamaged files ------------------------------------------------------------------------


def fresh(demo, layer: str, n: int = FEATURES) -> gpd.GeoDataFrame:
    """``n`` features of the demo's ``layer`` under codes not stored yet (an append would take them)."""
    gdf = demo.layers[layer].iloc[:n].copy().reset_index(drop=True)
    digits = get_layer(layer).code_digits
    if digits:
        gdf["code"] = [c[:-3] + f"9{i:02d}" for i, c in enumerate(gdf["code"])]
    else:
        gdf["code"] = gdf["code"] + "N"
    if layer in ("units", "buildings") and "population" in gdf.columns:
        gdf["population"] = gdf["population"].astype("Int64")
    return gdf


def write(gdf: gpd.GeoDataFrame, layer: str, fmt: str) -> dict[str, bytes]:
    """``gdf`` as gridplan's exporter writes it: {file name: bytes} (a set's parts for ``shp-set``)."""
    spec = get_layer(layer)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"{layer}.{_EXT.get(fmt, 'zip')}"
        write_frame(gdf, list(spec.fields), layer, "shp" if fmt.startswith("shp") else fmt, out)
        data = out.read_bytes()
    if fmt == "shp-set":
        return {k: v for k, v in unzip_bytes(data).items() if not k.endswith("_fields.csv")}
    return {out.name: data}


def _case(name: str, layer: str, files: dict[str, bytes], expect: str, family: str, *,
          main: str | None = None, big: bool = False) -> Case:
    if main is None:
        main = next((k for k in files if k.endswith(".shp")), next(iter(files)))
    return Case(name, layer, files, main, expect, family, big)


def _parts(files: dict[str, bytes], fmt: str) -> dict[str, bytes]:
    """A shapefile's parts, from a zip or a set."""
    return unzip_bytes(next(iter(files.values()))) if fmt == "shp-zip" else dict(files)


def _pack(parts: dict[str, bytes], fmt: str, layer: str) -> dict[str, bytes]:
    return {f"{layer}.zip": zip_bytes(parts)} if fmt == "shp-zip" else parts


def _part(parts: dict[str, bytes], suffix: str) -> str:
    return next(k for k in parts if k.lower().endswith(suffix))


# --- damage to a shapefile's parts ---------------------------------------------------------------


def _truncate(suffix: str, keep: float) -> Callable[[dict[str, bytes], random.Random], None]:
    def damage(parts, rng):
        name = _part(parts, suffix)
        data = parts[name]
        parts[name] = data[: max(1, int(len(data) * keep))]
    return damage


def _corrupt_header(suffix: str) -> Callable[[dict[str, bytes], random.Random], None]:
    def damage(parts, rng):
        name = _part(parts, suffix)
        data = bytearray(parts[name])
        data[: 32] = bytes(rng.randrange(256) for _ in range(32))
        parts[name] = bytes(data)
    return damage


def _drop(suffix: str) -> Callable[[dict[str, bytes], random.Random], None]:
    def damage(parts, rng):
        del parts[_part(parts, suffix)]
    return damage


def _dbf_more_records(parts, rng):
    """The .dbf claims more records than the .shp holds."""
    name = _part(parts, ".dbf")
    data = bytearray(parts[name])
    count = struct.unpack_from("<I", data, 4)[0]
    struct.pack_into("<I", data, 4, count + 3)
    parts[name] = bytes(data)


def _shx_fewer(parts, rng):
    """The .shx indexes fewer records than the .shp and .dbf hold."""
    name = _part(parts, ".shx")
    data = parts[name]
    cut = data[: len(data) - 16]  # two index records gone
    header = bytearray(cut[:100])
    struct.pack_into(">i", header, 24, len(cut) // 2)
    parts[name] = bytes(header) + cut[100:]


def _dbf_latin(parts, rng):
    """Text that is neither UTF-8 nor GBK, and no .cpg saying what it is."""
    parts.pop(_part(parts, ".cpg"), None)
    name = _part(parts, ".dbf")
    data = bytearray(parts[name])
    header = struct.unpack_from("<H", data, 8)[0]
    record = struct.unpack_from("<H", data, 10)[0]
    # the first text byte of each record's first field (the code) becomes 0xFF, which no UTF-8
    # and no GBK text holds
    for i in range(struct.unpack_from("<I", data, 4)[0]):
        data[header + i * record + 1] = 0xFF
        data[header + i * record + 2] = 0xFF
    parts[name] = bytes(data)


def _shp_wrong_type(parts, rng):
    """The .shp's header names a geometry type its records are not."""
    name = _part(parts, ".shp")
    data = bytearray(parts[name])
    kind = struct.unpack_from("<i", data, 32)[0]
    struct.pack_into("<i", data, 32, 1 if kind != 1 else 5)
    parts[name] = bytes(data)


def _shp_record_lengths(parts, rng):
    """Each record of the .shp says it is longer than the file."""
    name = _part(parts, ".shp")
    data = bytearray(parts[name])
    pos = 100
    while pos + 8 <= len(data):
        length = struct.unpack_from(">i", data, pos + 4)[0]
        struct.pack_into(">i", data, pos + 4, 0x7FFFFFF0)
        pos += 8 + length * 2
    parts[name] = bytes(data)


SHAPEFILE_DAMAGE: dict[str, tuple[Callable, str]] = {
    "shp-truncated": (_truncate(".shp", 0.5), "truncated"),
    "shx-truncated": (_truncate(".shx", 0.6), "truncated"),
    "shx-cut-record": (_truncate(".shx", 0.97), "truncated|whole index records"),
    "dbf-truncated": (_truncate(".dbf", 0.5), "truncated"),
    "shp-header-garbage": (_corrupt_header(".shp"), "header"),
    "dbf-header-garbage": (_corrupt_header(".dbf"), "damaged"),
    "dbf-more-records": (_dbf_more_records, "damaged"),
    "shx-fewer-records": (_shx_fewer, "record counts disagree"),
    "shp-wrong-type": (_shp_wrong_type, "shape type"),
    "shp-record-lengths": (_shp_record_lengths, "length"),
    "missing-shx": (_drop(".shx"), "missing .shx"),
    "missing-dbf": (_drop(".dbf"), "missing .dbf"),
    "missing-prj": (_drop(".prj"), ".prj"),
    "text-no-encoding": (_dbf_latin, "neither UTF-8 nor GBK"),
}


# --- damage to the features ----------------------------------------------------------------------


def _row(gdf: gpd.GeoDataFrame, k: int):
    """The index of row ``k`` of ``gdf`` (counted round: a layer may have fewer rows)."""
    return gdf.index[k % len(gdf)]


def _bowtie(gdf: gpd.GeoDataFrame, rng) -> gpd.GeoDataFrame:
    x0, y0, x1, y1 = gdf.geometry.loc[_row(gdf, 2)].bounds
    gdf.loc[_row(gdf, 2), "geometry"] = shapely.Polygon([(x0, y0), (x1, y1), (x1, y0), (x0, y1), (x0, y0)])
    return gdf


def _empty(gdf, rng):
    gdf.loc[_row(gdf, 3), "geometry"] = shapely.Polygon() if get_layer_geometry(gdf) == "polygon" else \
        shapely.Point() if get_layer_geometry(gdf) == "point" else shapely.LineString()
    return gdf


def _null(gdf, rng):
    gdf.loc[_row(gdf, 1), "geometry"] = None
    return gdf


def get_layer_geometry(gdf) -> str:
    kind = gdf.geometry.iloc[0].geom_type
    return {"Polygon": "polygon", "MultiPolygon": "polygon", "Point": "point"}.get(kind, "line")


def _shift(factor: float | None = None, value: float | None = None):
    def damage(gdf, rng):
        i = _row(gdf, 4)
        g = gdf.geometry.loc[i]
        if value is not None:
            gdf.loc[i, "geometry"] = shapely.transform(g, lambda xy: np.where(
                np.arange(len(xy))[:, None] == 0, np.array([[value, xy[0, 1]]]), xy))
        else:
            gdf.loc[i, "geometry"] = shapely.transform(g, lambda xy: xy * factor)
        return gdf
    return damage


def _wrong_type(gdf, rng):
    kind = get_layer_geometry(gdf)
    centre = gdf.geometry.iloc[0].centroid
    gdf.loc[0, "geometry"] = centre.buffer(0.001) if kind == "point" else centre
    return gdf


def _wrong_type_line(gdf, rng):
    c = gdf.geometry.loc[_row(gdf, 1)].centroid
    line = shapely.LineString([(c.x, c.y), (c.x + 0.001, c.y + 0.001)])
    gdf.loc[_row(gdf, 1), "geometry"] = line if get_layer_geometry(gdf) != "line" else line.buffer(0.0005)
    return gdf


def _value(column: str, value) -> Callable:
    def damage(gdf, rng):
        gdf[column] = gdf[column].astype(object)
        gdf.loc[_row(gdf, 2), column] = value
        return gdf
    return damage


def _duplicate(gdf, rng):
    gdf.loc[_row(gdf, -1), "code"] = gdf.loc[0, "code"]
    return gdf


def _drop_column(column: str) -> Callable:
    def damage(gdf, rng):
        return gdf.drop(columns=[column])
    return damage


def _million(gdf, rng):
    """A valid polygon (a star-free circle) of a million vertices, in place of the first."""
    c = gdf.geometry.iloc[0].centroid
    t = np.linspace(0, 2 * np.pi, MILLION, endpoint=False)
    ring = np.column_stack([c.x + 0.002 * np.cos(t), c.y + 0.002 * np.sin(t)])
    gdf.loc[0, "geometry"] = shapely.Polygon(ring)
    return gdf


#: (name, damage, expected word, the layers it applies to (None: all), the formats it applies to)
FEATURE_DAMAGE: list[tuple[str, Callable, str, tuple[str, ...] | None, tuple[str, ...]]] = [
    ("self-intersecting", _bowtie, "invalid geometry",
     ("units", "communities", "streets", "grid_cells"), ("shp-zip", "geojson", "csv", "gpkg")),
    ("empty-geometry", _empty, "no geometry", None, ("shp-zip", "geojson", "csv", "gpkg")),
    ("null-geometry", _null, "no geometry", None, ("shp-zip", "geojson", "gpkg")),
    ("absurd-coordinates", _shift(factor=1e6), "longitude/latitude", None,
     ("shp-zip", "geojson", "csv", "gpkg")),
    ("nan-coordinate", _shift(value=float("nan")), "coordinate|lon/lat", None,
     ("shp-zip", "gpkg", "csv")),
    ("infinite-coordinate", _shift(value=float("inf")), "coordinate|lon/lat", None,
     ("shp-zip", "gpkg", "csv")),
    ("wrong-geometry-type", _wrong_type, "layer", None, ("shp-set", "geojson", "csv", "gpkg")),
    ("wrong-geometry-line", _wrong_type_line, "layer", None, ("geojson", "gpkg")),
    ("duplicate-codes", _duplicate, "repeated", None, ("shp-zip", "geojson", "csv", "gpkg")),
    ("empty-code", _value("code", ""), "code",  # streets, communities: a provisional code, by name
     ("units", "grid_cells", "facilities", "incidents", "roads"), ("shp-zip", "geojson", "csv")),
    ("missing-code-field", _drop_column("code"), "missing required field",  # streets, communities: by name
     ("units", "grid_cells", "facilities", "incidents", "roads"), ("geojson", "gpkg")),
]
#: Damage to the codes and values of particular layers.
LAYER_DAMAGE: dict[str, list[tuple[str, Callable, str]]] = {
    "units": [("households-not-a-number", _value("households", "many"), "whole number"),
              ("households-fraction", _value("households", "12.5"), "whole number"),
              ("households-negative", _value("households", "-40"), "negative"),
              ("missing-households", _drop_column("households"), "households"),
              ("street-code-malformed", _value("street_code", "42010A001"), "9-digit")],
    "communities": [("code-malformed", _value("code", "4201030019x1"), "12-digit"),
                    ("code-too-short", _value("code", "4201030"), "12-digit"),
                    ("code-not-under-street", _value("code", "999999999901"), "does not lie under"),
                    ("valid-from-not-a-date", _value("valid_from", "the spring"), "date")],
    "streets": [("code-malformed", _value("code", "42O103001"), "9-digit"),
                ("district-malformed", _value("district_code", "42-103"), "6-digit")],
    "grid_cells": [("code-malformed", _value("code", "4201030010019ab"), "15-digit"),
                   ("code-not-under-community", _value("code", "999999999999901"), "does not lie under"),
                   ("missing-community", _drop_column("community_code"), "community_code")],
    "facilities": [("floor-area-not-a-number", _value("floor_area_m2", "big"), "number"),
                   ("missing-kind", _drop_column("kind"), "kind")],
    "incidents": [("reported-not-a-date", _value("reported_at", "yesterday noon"), "date"),
                  ("missing-status", _drop_column("status"), "status"),
                  ("grid-code-malformed", _value("grid_code", "4201"), "15-digit")],
    "roads": [("missing-class", _drop_column("road_class"), "road_class")],
}


# --- whole-file damage --------------------------------------------------------------------------


def _bomb(layer: str, files: dict[str, bytes]) -> dict[str, bytes]:
    """A small zip whose one extra member expands past the limit."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, data in unzip_bytes(files[f"{layer}.zip"]).items():
            zf.writestr(name, data)
        with zf.open("padding.bin", "w", force_zip64=True) as out:
            block = bytes(1 << 20)
            for _ in range(BOMB_LIMIT_MB + 4):
                out.write(block)
    return {f"{layer}.zip": buffer.getvalue()}


def _zip_entries(layer: str, files: dict[str, bytes], rename: Callable[[str], str]) -> dict[str, bytes]:
    parts = unzip_bytes(files[f"{layer}.zip"])
    return {f"{layer}.zip": zip_bytes({rename(k): v for k, v in parts.items()})}


def _zip_link(layer: str, files: dict[str, bytes], target: str) -> dict[str, bytes]:
    """The .shp is a symbolic link (to ``target``) in the archive."""
    parts = unzip_bytes(files[f"{layer}.zip"])
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in parts.items():
            if name.endswith(".shp"):
                info = zipfile.ZipInfo(name)
                info.create_system = 3
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                zf.writestr(info, target)
            else:
                zf.writestr(name, data)
    return {f"{layer}.zip": buffer.getvalue()}


def _zip_truncated(layer: str, files: dict[str, bytes]) -> dict[str, bytes]:
    data = files[f"{layer}.zip"]
    return {f"{layer}.zip": data[: len(data) // 2]}


def _zip_crc(layer: str, files: dict[str, bytes]) -> dict[str, bytes]:
    """A byte of the compressed .shp flipped: the archive's checksum no longer matches."""
    data = bytearray(files[f"{layer}.zip"])
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        info = next(m for m in zf.infolist() if m.filename.endswith(".shp"))
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + info.compress_size // 2] ^= 0x55
    return {f"{layer}.zip": bytes(data)}


ZIP_DAMAGE: list[tuple[str, Callable, str]] = [
    ("zip-bomb", _bomb, "limit"),
    ("zip-parent-path", lambda y, f: _zip_entries(y, f, lambda n: "../" + n), "outside the archive"),
    ("zip-deep-parent-path", lambda y, f: _zip_entries(y, f, lambda n: "data/../../../tmp/" + n),
     "outside the archive"),
    ("zip-absolute-path", lambda y, f: _zip_entries(y, f, lambda n: "/tmp/" + n), "outside the archive"),
    ("zip-windows-path", lambda y, f: _zip_entries(y, f, lambda n: "C:\\temp\\" + n), "outside the archive"),
    ("zip-backslash-parent", lambda y, f: _zip_entries(y, f, lambda n: "..\\" + n), "outside the archive"),
    ("zip-link-passwd", lambda y, f: _zip_link(y, f, "/etc/passwd"), "link"),
    ("zip-link-relative", lambda y, f: _zip_link(y, f, "../../secret.shp"), "link"),
    ("zip-truncated", _zip_truncated, "zip"),
    ("zip-checksum", _zip_crc, "damaged"),
    ("zip-no-dataset", lambda y, f: {f"{y}.zip": zip_bytes({"readme.txt": b"nothing here"})},
     "holds no shapefile"),
    ("zip-empty", lambda y, f: {f"{y}.zip": zip_bytes({})}, "holds no shapefile"),
    ("zip-two-datasets", lambda y, f: {f"{y}.zip": zip_bytes({
        **unzip_bytes(f[f"{y}.zip"]), **{"b/" + k: v for k, v in unzip_bytes(f[f"{y}.zip"]).items()}})},
     "several datasets"),
    ("zip-not-a-zip", lambda y, f: {f"{y}.zip": b"PK\x03\x04 this is not really an archive"}, "zip"),
]


def _text_files(layer: str) -> list[tuple[str, dict[str, bytes], str]]:
    """Broken text formats: (defect, files, expected word)."""
    deep = ('{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"code":'
            + "[" * DEEP + "]" * DEEP + '},"geometry":null}]}')
    deep_geometry = ('{"type":"FeatureCollection","features":[{"type":"Feature","properties":{},'
                     '"geometry":{"type":"Polygon","coordinates":' + "[" * DEEP + "]" * DEEP + "}}]}")
    return [
        ("geojson-nested-100000", {f"{layer}.geojson": deep.encode()}, "cannot be read"),
        ("geojson-nested-geometry", {f"{layer}.geojson": deep_geometry.encode()}, "cannot be read"),
        ("geojson-nested-root", {f"{layer}.geojson": ("[" * DEEP + "]" * DEEP).encode()}, "cannot be read"),
        ("geojson-not-json", {f"{layer}.geojson": b"<html>not json</html>"}, "cannot be read"),
        ("geojson-empty-collection", {f"{layer}.geojson": b'{"type":"FeatureCollection","features":[]}'},
         "no features"),
        ("csv-empty", {f"{layer}.csv": b""}, "csv"),
        ("csv-header-only", {f"{layer}.csv": b"code,lon,lat\n"}, "no features"),
        ("csv-no-coordinates", {f"{layer}.csv": b"code,name\nA1,x\n"}, "lon/lat"),
        ("csv-binary", {f"{layer}.csv": bytes(range(256)) * 8}, "utf-8"),
        ("unknown-format", {f"{layer}.txt": b"code,lon,lat\nA,1,2\n"}, "unknown format"),
        ("gpkg-not-a-database", {f"{layer}.gpkg": b"SQLite format 3\x00" + bytes(4080)}, "cannot be read"),
        ("geojson-wrong-type-name", {f"{layer}.geojson": b'{"type":"FeatureCollection","features":[{"type":'
                                     b'"Feature","properties":{"code":"x"},"geometry":{"type":"Circle",'
                                     b'"coordinates":[114.3,30.6]}}]}'}, "geometry"),
    ]


def _csv_damage(layer: str, files: dict[str, bytes], kind: str) -> dict[str, bytes]:
    text = next(iter(files.values())).decode("utf-8-sig")
    lines = text.splitlines()
    if kind == "quote":  # a quote opened and never closed
        lines[3] = lines[3].replace(",", ',"', 1)
    elif kind == "columns":  # a row with more fields than the header
        lines[2] = lines[2] + ',"extra","more","and more"'
    elif kind == "lon-text":
        header = lines[0].split(",")
        col = header.index("lon") if "lon" in header else header.index("wkt")
        if "lon" in header:
            row = lines[2].split(",")
            row[col] = "东经114度"
            lines[2] = ",".join(row)
        else:  # the WKT is the last, quoted column
            lines[2] = lines[2].rsplit(',"', 1)[0] + ',"POLYGON ((114 30, 115"'
    elif kind == "latin1":
        return {f"{layer}.csv": ("\n".join(lines) + "\n").encode("utf-8") + b"\xff\xfe\x80\x81broken\n"}
    return {f"{layer}.csv": ("\n".join(lines) + "\n").encode("utf-8")}


CSV_DAMAGE = [("csv-broken-quoting", "quote", "quoting"), ("csv-extra-columns", "columns", "csv"),
              ("csv-coordinate-text", "lon-text", "row 2|wkt"), ("csv-not-utf8-or-gbk", "latin1", "utf-8")]


# --- the corpus ---------------------------------------------------------------------------------


def corpus(seed: int = 12, demo=None, *, big: bool = True, layers: tuple[str, ...] = LAYERS) -> list[Case]:
    """Every case, in a fixed order for a seed (``demo``: ``layers.sample_data.demo.generate(units=200,
    seed=seed)`` when not given). ``big=False`` leaves out the million-vertex polygons;
    ``layers``: only the cases of these layers."""
    if demo is None:
        from layers.sample_data.demo import generate

        demo = generate(units=200, seed=seed)
    rng = random.Random(seed)
    cases: list[Case] = []
    for layer in layers:
        base = fresh(demo, layer)
        good = {fmt: write(base, layer, fmt) for fmt in FORMATS}
        for defect, (damage, expect) in SHAPEFILE_DAMAGE.items():
            for fmt in ("shp-zip", "shp-set"):
                parts = _parts(good[fmt], fmt)
                damage(parts, rng)
                cases.append(_case(f"{layer}/{fmt}/{defect}", layer, _pack(parts, fmt, layer), expect,
                                   "shapefile"))
        for defect, damage, expect, layers, formats in FEATURE_DAMAGE:
            if layers is not None and layer not in layers:
                continue
            for fmt in formats:
                try:
                    files = write(damage(base.copy(), rng), layer, fmt)
                except Exception:  # noqa: BLE001 - a writer that cannot hold the defect: no case
                    continue
                cases.append(_case(f"{layer}/{fmt}/{defect}", layer, files, expect, "features"))
        for defect, damage, expect in LAYER_DAMAGE.get(layer, []):
            fmt = FORMATS[rng.randrange(len(FORMATS))]
            damaged = damage(base.copy(), rng)
            try:
                files = write(damaged, layer, fmt)
            except (ValueError, TypeError, pd.errors.ParserError):
                # the exporter keeps whole numbers and dates what they are: text goes in a plain GeoJSON
                fmt = "geojson"
                files = {f"{layer}.geojson": damaged.to_json(na="null", default=str).encode()}
            cases.append(_case(f"{layer}/{fmt}/{defect}", layer, files, expect, "values"))
        for defect, damage, expect in ZIP_DAMAGE:
            cases.append(_case(f"{layer}/zip/{defect}", layer, damage(layer, good["shp-zip"]), expect, "zip"))
        for defect, files, expect in _text_files(layer):
            cases.append(_case(f"{layer}/text/{defect}", layer, files, expect, "text"))
        for defect, kind, expect in CSV_DAMAGE:
            cases.append(_case(f"{layer}/csv/{defect}", layer, _csv_damage(layer, good["csv"], kind), expect,
                               "csv"))
        for defect, keep in (("gpkg-truncated", 0.5), ("gpkg-first-page", 0.05)):
            data = good["gpkg"][f"{layer}.gpkg"]
            cut = {f"{layer}.gpkg": data[: int(len(data) * keep)]}
            cases.append(_case(f"{layer}/gpkg/{defect}", layer, cut, "cannot be read", "gpkg"))
        if big and layer in ("units", "communities"):
            cases.extend(million(base, layer))
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "case names repeat"
    return cases


def million(base: gpd.GeoDataFrame, layer: str) -> list[Case]:
    """The million-vertex polygon among ``base``'s features, as GeoJSON and as a shapefile zip."""
    return [_case(f"{layer}/{fmt}/million-vertices", layer, write(_million(base.copy(), None), layer, fmt),
                  "vertices", "big", big=True) for fmt in ("geojson", "shp-zip")]


def undamaged(seed: int = 12, demo=None) -> list[Case]:
    """The files the corpus damages, undamaged (each must be accepted: the control)."""
    if demo is None:
        from layers.sample_data.demo import generate

        demo = generate(units=200, seed=seed)
    out = []
    for layer in LAYERS:
        base = fresh(demo, layer)
        for fmt in FORMATS:
            out.append(_case(f"{layer}/{fmt}/undamaged", layer, write(base, layer, fmt), "", "control"))
    return out


@dataclass
class Outcome:
    """How a separate ``flask import`` process ended."""

    exit_code: int | None  # None: killed at the time limit
    output: str
    seconds: float
    max_rss_mb: float


def import_in_process(case: Case, folder: Path, url: str, *, memory_mb: int, timeout_s: float,
                      flask: Path | None = None) -> Outcome:
    """``flask --app webmap import LAYER PATH`` for ``case`` as a separate process whose address
    space is limited to ``memory_mb`` (RLIMIT_AS) and whose time to ``timeout_s``; its peak RSS
    from ``wait4``."""
    import os
    import resource
    import subprocess
    import sys
    import time

    path = case.write(folder)
    flask = flask or Path(sys.executable).parent / "flask"
    env = {**os.environ, "DATABASE_URL": url, "GRIDPLAN_LOCALE": "en",
           "GRIDPLAN_MAX_UNZIPPED_MB": str(BOMB_LIMIT_MB), "PYTHONWARNINGS": "ignore"}
    limit = memory_mb * 1024 * 1024

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    out_path = folder / ".output"
    start = time.monotonic()
    with open(out_path, "wb") as out:
        proc = subprocess.Popen([str(flask), "--app", "webmap", "import", case.layer, str(path)], env=env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                preexec_fn=limited, cwd=Path(__file__).resolve().parent.parent)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - start > timeout_s:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = -9
                return Outcome(None, out_path.read_text(errors="replace"), time.monotonic() - start,
                               usage.ru_maxrss / 1024)
            time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Outcome(proc.returncode, out_path.read_text(errors="replace"), time.monotonic() - start,
                   usage.ru_maxrss / 1024)


__all__ = ["BOMB_LIMIT_MB", "Case", "Outcome", "corpus", "fresh", "import_in_process", "million", "undamaged"]
