"""Import a layer from a shapefile zip, GeoPackage, GeoJSON or CSV (lon/lat or WKT).

An import reads and checks the whole file first — archive safety, coordinate system, field
mapping, types, codes, geometry — and refuses it with every problem named (row numbers count
features from 1) before anything is written. The write is one transaction: a refused or failed
import leaves the database exactly as it was.

Data as cities hold it: streets and communities may come with names and no codes (``--district``
names the district; a community's ``street`` field holds its street's *name*, matched with
:mod:`geodata.naming`; missing codes become provisional codes), and categories written by other
departments are translated by a value mapping (``values``), with the values no mapping covers
listed with their counts and refused or, on request, left out (``unmapped="skip"``).

>>> report = import_layer(engine, "units", "units.zip", mode="append", crs="EPSG:4490")
>>> import_layer(engine, "communities", "sq.shp", district="420503",
...              mapping={"SQMC": "name", "SSJD": "street"})
"""

from __future__ import annotations

import codecs
import csv
import functools
import json
import mmap
import os
import re
import sqlite3
import stat
import struct
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from io import StringIO
from pathlib import Path, PurePosixPath

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from pyproj import Transformer
from sqlalchemy import Connection, Engine, delete, insert, or_, select

from geodata import crs as crs_mod
from geodata import dialect, naming, topology
from geodata.catalog import (
    LOCATION_PRECISIONS,
    LayerSpec,
    as_codes,
    as_text,
    column_length,
    get_layer,
    is_code,
    is_code_field,
)
from geodata.db import BATCH, pause_for_fault_tests
from geodata.errors import Refused
from geodata.exporter import REVISION_COLUMN, REVISION_KEY, REVISION_MEMBER, REVISION_SIDECAR
from geodata.i18n import _
from geodata.models import AuditLog, Community, CommunityHistory, Unit, UnitAdjacency
from geodata.revisions import changes_since, lock_revision, raise_revision
from geodata.standards import DEFAULT_SETTINGS, FACILITY_KINDS, INCIDENT_CATEGORIES, get_setting
from geodata.store import (
    compare_with_stored,
    existing_codes,
    keep_community_history,
    layer_extent,
    read_layer,
    values_among,
    write_changes,
    write_layer,
)
from geodata.text_tables import read_text_table

#: An archive may not expand past this (zip bombs); callers may lower it.
MAX_UNZIPPED_BYTES = 4 * 1024**3
#: GDAL holds a GeoJSON file whole in memory at about 25 times its size: past this (MB,
#: ``GRIDPLAN_MAX_GEOJSON_MB``) the file is refused and a GeoPackage or shapefile asked for.
MAX_GEOJSON_MB = 100
#: A shapefile's table (.dbf) may declare at most this many MB (records × record length,
#: ``GRIDPLAN_MAX_DBF_MB``): its text is checked and GDAL reads it whole, at several times its size
#: in memory. Checked in the archive's own header before anything is unpacked.
MAX_DBF_MB = 512
#: A CSV file (or a shapefile's index, .shx) may be at most this many MB (``GRIDPLAN_MAX_CSV_MB``):
#: it is read whole as text.
MAX_CSV_MB = 200
#: Seconds the inspection of a GeoPackage's own tables (before GDAL opens it) may take.
GPKG_INSPECT_S = 5.0
#: Layers listed from a GeoPackage's table of contents at most.
MAX_GPKG_LAYERS = 200
#: A feature may have at most this many vertices (a boundary drawn that finely is an error, and
#: checking it would hold the import for minutes).
MAX_VERTICES = 250_000
#: A repaired polygon may change its area by less than this share.
MAX_REPAIR_AREA_CHANGE = 0.01
MODES = ("append", "replace", "update")
#: What an import does with rows whose value has no mapping: refuse the file, or leave them out.
UNMAPPED = ("refuse", "skip")
#: Fields a file may carry beyond the layer's own, resolved into codes before the checks:
#: a community's ``street`` is its street's name.
NAME_FIELDS = {"communities": {"street": ("street", "street_name", "jdmc", "街道", "所属街道", "街道名称")}}
#: The values a mapped field may take, where gridplan has a fixed list.
#: Layers whose codes are gridplan's own numbers, not official codes: a file without them may be
#: numbered on import (``number=True``) with this prefix.
NUMBER_PREFIX = {"roads": "R", "facilities": "F", "buildings": "B", "incidents": "I"}
KNOWN_VALUES = {("facilities", "kind"): tuple(FACILITY_KINDS),
                ("incidents", "category"): tuple(INCIDENT_CATEGORIES)}
VECTOR_SUFFIXES = (".shp", ".gpkg", ".geojson", ".json", ".csv")

_GEOM_FAMILIES = {
    "polygon": {"Polygon", "MultiPolygon"},
    "point": {"Point"},
    "line": {"LineString", "MultiLineString"},
}
#: Geometry type names by shapely's type id; id -1 (missing) indexes the last, empty name.
_TYPE_NAMES = np.array(["Point", "LineString", "LinearRing", "Polygon", "MultiPoint", "MultiLineString",
                        "MultiPolygon", "GeometryCollection", ""], dtype=object)
_LON_NAMES = ("lon", "lng", "longitude", "x", "经度")
_LAT_NAMES = ("lat", "latitude", "y", "纬度")
_WKT_NAMES = ("wkt", "geometry", "geom", "the_geom")


class ImportRefused(Refused):
    """The file cannot be imported; ``problems`` lists every reason found."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        shown = self.problems[:20]
        more = len(self.problems) - len(shown)
        super().__init__("; ".join(shown) + (f"; … and {more} more" if more > 0 else ""))


@dataclass
class ImportReport:
    """What an import did."""

    layer: str
    mode: str
    source: str
    rows: int = 0
    written: int = 0
    deleted: int = 0
    repaired: list[str] = field(default_factory=list)
    ignored_fields: list[str] = field(default_factory=list)
    adjacency_pairs: int | None = None
    revision: int | None = None  # the boundary revision the import raised (units, communities)
    provisional: list[str] = field(default_factory=list)  # codes given provisionally
    matched_by_stem: dict[str, str] = field(default_factory=dict)  # names matched without suffix
    placed_by_area: int = 0  # communities placed in the street holding most of their area
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)  # field → unmapped value → rows
    approximate: int = 0  # points whose location is only approximate
    estimated_population: int = 0  # features whose population the file left empty: households × pph
    people_per_household: float | None = None

    def summary(self) -> str:
        lines = [f"{self.layer}: {self.written} features written ({self.mode}) from {self.source}"]
        if self.deleted:
            lines.append(f"  {self.deleted} features replaced")
        if self.adjacency_pairs is not None:
            lines.append(f"  {self.adjacency_pairs} neighbouring unit pairs stored")
        if self.repaired:
            lines.append(f"  {len(self.repaired)} invalid geometries repaired: "
                         + "; ".join(self.repaired[:10]))
        if self.ignored_fields:
            lines.append("  fields not in the layer, ignored: " + ", ".join(self.ignored_fields))
        if self.provisional:
            lines.append(f"  {len(self.provisional)} provisional codes given (临时代码, replaced by "
                         "`codes apply`): " + ", ".join(self.provisional[:10])
                         + (" …" if len(self.provisional) > 10 else ""))
        if self.matched_by_stem:
            lines.append("  names matched without their suffix: " + ", ".join(
                f"{k} → {v}" for k, v in list(self.matched_by_stem.items())[:10]))
        if self.placed_by_area:
            lines.append(f"  {self.placed_by_area} features placed in the street holding most of their area")
        for name, counts in self.skipped.items():
            lines.append(f"  rows left out, {name} has no mapping: " + ", ".join(
                f"{v} ({n})" for v, n in counts.items()))
        if self.estimated_population:
            lines.append("  " + _("population estimated for {n} features as households × {pph} (setting "
                                  "people_per_household): the file gives none for them",
                                  n=self.estimated_population, pph=self.people_per_household))
        if self.approximate:
            lines.append(f"  {self.approximate} approximate locations (counted in their community, "
                         "placed in no cell)")
        return "\n".join(lines)


# --- reading ------------------------------------------------------------------------------


def _safe_extract(archive: Path, target: Path, max_bytes: int) -> None:
    """Extract ``archive`` into ``target``, refusing unsafe paths and runaway sizes."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ImportRefused(_("{name} is not a readable zip archive ({exc})",
                              name=archive.name, exc=exc)) from None
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        for m in members:
            path = PurePosixPath(m.filename.replace("\\", "/"))
            if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
                raise ImportRefused(_("zip entry {filename} points outside the archive",
                                      filename=repr(m.filename)))
            if m.create_system == 3 and stat.S_ISLNK(m.external_attr >> 16):
                raise ImportRefused(_("zip entry {filename} is a link, not a file: zip the files themselves",
                                      filename=repr(m.filename)))
        declared = sum(m.file_size for m in members)
        if declared > max_bytes:
            raise ImportRefused(_("{name} expands to {declared} bytes, over the limit of {max_bytes}",
                                  name=archive.name, declared=format(declared, ','),
                                  max_bytes=format(max_bytes, ',')))
        members = [m for m in members if not (m.filename.startswith("__MACOSX/")
                                              or PurePosixPath(m.filename).name.startswith("._"))]
        for m in members:  # each part against its own limit, before a byte is unpacked
            _check_member(zf, m, archive)
        written = 0
        for m in members:
            dest = target / m.filename.replace("\\", "/")
            limit = _part_limit(m.filename)
            mine = 0
            try:
                # a file and a folder of the same name ("a", then "a/x.shp") cannot both be made
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(m) as src, open(dest, "wb") as out:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        mine += len(chunk)
                        if written > max_bytes:  # sizes in the header can lie
                            raise ImportRefused(_("{name} expands past the limit of {max_bytes} bytes",
                                                  name=archive.name, max_bytes=format(max_bytes, ',')))
                        if limit and mine > limit[0]:
                            raise _too_big(m.filename, mine, limit, archive=archive.name)
                        out.write(chunk)
            except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
                raise ImportRefused(_("{name} is damaged: {filename} cannot be read ({exc})",
                                      name=archive.name, filename=m.filename, exc=exc)) from None


class TooLarge(ImportRefused):
    """A file past one of the reading limits: no choice of the user's makes it readable."""


def _limit(setting: str, default: int) -> int:
    """A limit in MB from the environment (``setting``), or its default."""
    try:
        return max(1, int(os.environ.get(setting) or default))
    except ValueError:
        return default


def _part_limit(filename: str) -> tuple[int, int, str] | None:
    """The limit a file of this kind is read under: (bytes, MB, the setting that raises it)."""
    suffix = PurePosixPath(filename.replace("\\", "/")).suffix.lower()
    setting, default = {".dbf": ("GRIDPLAN_MAX_DBF_MB", MAX_DBF_MB),
                        ".shx": ("GRIDPLAN_MAX_CSV_MB", MAX_CSV_MB),
                        ".csv": ("GRIDPLAN_MAX_CSV_MB", MAX_CSV_MB),
                        ".geojson": ("GRIDPLAN_MAX_GEOJSON_MB", MAX_GEOJSON_MB),
                        ".json": ("GRIDPLAN_MAX_GEOJSON_MB", MAX_GEOJSON_MB)}.get(suffix, (None, 0))
    if setting is None:
        return None
    mb = _limit(setting, default)
    return mb * 1024**2, mb, setting


def _too_big(part: str, size: int, limit: tuple[int, int, str], *, archive: str | None = None,
             declared: str = "") -> TooLarge:
    where = f"{archive}: " if archive else ""
    return TooLarge(_("{where}{part} is {size} MB{declared}, over the limit of {limit} MB for such a file "
                      "({setting}): split the layer into smaller files",
                      where=where, part=PurePosixPath(part.replace("\\", "/")).name,
                      size=f"{size / 1024**2:,.0f}", declared=declared, limit=limit[1], setting=limit[2]))


def _dbf_declared(head: bytes) -> tuple[int, int, int] | None:
    """A .dbf header's record count, header length and record length (None: too short)."""
    if len(head) < 12:
        return None
    count, header, width = struct.unpack_from("<IHH", head, 4)
    return count, header, width


def _check_dbf_declared(part: str, head: bytes, limit: tuple[int, int, str], actual: int, *,
                        archive: str | None = None) -> None:
    """Refuse a table whose header declares more than the limit (records × record length): a
    small, mostly empty or sparse file can claim gigabytes that GDAL would then read. Past the
    ``actual`` size it holds, the header is damaged (or the archive's directory lies)."""
    found = _dbf_declared(head)
    if found is None:
        return
    count, header, width = found
    size = header + count * width
    if size > limit[0]:
        declared = _(" (its header declares {count} records of {width} bytes)", count=format(count, ","),
                     width=width)
        if size > actual:
            declared += _("; damaged: the file holds only {actual} bytes", actual=format(actual, ","))
        raise _too_big(part, size, limit, archive=archive, declared=declared)


def _check_member(zf: zipfile.ZipFile, m: zipfile.ZipInfo, archive: Path) -> None:
    """One zip entry against the limit of its kind: its declared size and, for a .dbf, the size its
    own header declares, read from the archive before anything is unpacked."""
    limit = _part_limit(m.filename)
    if limit is None:
        return
    if m.file_size > limit[0]:
        raise _too_big(m.filename, m.file_size, limit, archive=archive.name)
    if m.filename.lower().endswith(".dbf"):
        try:
            with zf.open(m) as src:
                head = src.read(32)
        except (zipfile.BadZipFile, EOFError, OSError, zlib.error, NotImplementedError, RuntimeError) as exc:
            raise ImportRefused(_("{name} is damaged: {filename} cannot be read ({exc})",
                                  name=archive.name, filename=m.filename, exc=exc)) from None
        _check_dbf_declared(m.filename, head, limit, m.file_size, archive=archive.name)


def _check_file_size(path: Path) -> None:
    """A file (not in a zip) against the limit of its kind, before it is read; a .dbf also against
    the size its header declares (a sparse file takes no room on disk but its full size in memory)."""
    limit = _part_limit(path.name)
    if limit is None:
        return
    size = path.stat().st_size
    if size > limit[0]:
        raise _too_big(path.name, size, limit)
    if path.suffix.lower() == ".dbf":
        with path.open("rb") as f:
            _check_dbf_declared(path.name, f.read(32), limit, size)


def _find_dataset(folder: Path, archive: Path) -> Path:
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in VECTOR_SUFFIXES
                   and "__MACOSX" not in p.parts)
    if not found:
        raise ImportRefused(_("{name} holds no shapefile, GeoPackage, GeoJSON or CSV", name=archive.name))
    shapefiles = [p for p in found if p.suffix.lower() == ".shp"]
    candidates = shapefiles or found
    if len(candidates) > 1:
        names = ", ".join(p.name for p in candidates)
        raise ImportRefused(_("{name} holds several datasets ({names}): import one at a time",
                              name=archive.name, names=names))
    return candidates[0]


def _sibling(path: Path, suffix: str) -> Path | None:
    for p in path.parent.iterdir():
        if p.stem == path.stem and p.suffix.lower() == suffix:
            return p
    return None


def _read_shapefile(path: Path, declared) -> gpd.GeoDataFrame:
    missing = [s for s in (".shx", ".dbf") if _sibling(path, s) is None]
    if missing:
        raise ImportRefused(_("shapefile {name} is incomplete: missing {p2}",
                              name=path.name, p2=', '.join(missing)))
    if _sibling(path, ".prj") is None and declared is None:
        raise ImportRefused(_("shapefile {name} has no .prj: its coordinate system is unknown; declare it "
                              "with --crs (e.g. EPSG:4490)", name=path.name))
    for part in (_sibling(path, ".shx"), _sibling(path, ".dbf")):
        _check_file_size(part)
    records = _check_shapefile_parts(path, _sibling(path, ".shx"), _sibling(path, ".dbf"))
    # the encoding is always given to GDAL: the .cpg's once the text agrees with it, else UTF-8 or
    # GBK as the text reads (without a .cpg GDAL would assume Latin-1, and it believes any .cpg)
    encoding = _shapefile_encoding(_sibling(path, ".dbf"), _sibling(path, ".cpg"))
    gdf = pyogrio.read_dataframe(path, encoding=encoding)
    if len(gdf) != records:
        raise ImportRefused(_("shapefile {name} is damaged: its index lists {records} records but {read} "
                              "could be read", name=path.name, records=records, read=len(gdf)))
    return gdf


def _check_shapefile_parts(shp: Path, shx: Path, dbf: Path) -> int:
    """The number of records, once the .shp, .shx and .dbf agree with each other and with their
    own headers (a truncated or corrupt part, or parts of different files, is refused: GDAL
    would read it as empty geometries or fewer rows without a word)."""
    def damaged(part: Path, why: str) -> ImportRefused:
        return ImportRefused(_("shapefile {name} is damaged: {part} {why}", name=shp.name, part=part.name,
                               why=why))

    shp_size, shx_bytes = shp.stat().st_size, shx.read_bytes()
    with shp.open("rb") as f:
        shp_head = f.read(100)
    for part, head, size in ((shp, shp_head, shp_size), (shx, shx_bytes[:100], len(shx_bytes))):
        if len(head) < 100 or struct.unpack_from(">i", head, 0)[0] != 9994:
            raise damaged(part, _("is truncated or not a shapefile part (its header is wrong)"))
        if struct.unpack_from(">i", head, 24)[0] * 2 != size:
            raise damaged(part, _("is {size} bytes but its header says {declared}: truncated or corrupt",
                                  size=format(size, ","),
                                  declared=format(struct.unpack_from(">i", head, 24)[0] * 2, ",")))
    if (len(shx_bytes) - 100) % 8:
        raise damaged(shx, _("does not hold whole index records"))
    records = (len(shx_bytes) - 100) // 8
    index = np.frombuffer(shx_bytes, dtype=">i4", offset=100).reshape(-1, 2).astype(np.int64) * 2
    if records and ((index[:, 0] < 100) | (index[:, 0] + 8 + index[:, 1] > shp_size)).any():
        raise damaged(shp, _("is shorter than its index says: truncated, or not the .shx's own"))
    if records:
        with shp.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as body:
            kind = struct.unpack_from("<i", body, 32)[0]
            data = np.frombuffer(body, dtype=np.uint8)
            at = index[:, 0][:, None] + np.arange(12)
            heads = data[at]  # each record's number, length and shape type
            del data
        lengths = heads[:, 4:8].copy().view(">i4").ravel().astype(np.int64) * 2
        kinds = heads[:, 8:12].copy().view("<i4").ravel()
        if (lengths != index[:, 1]).any():
            raise damaged(shp, _("has records whose length is not the one its index gives"))
        if ((kinds != kind) & (kinds != 0)).any():
            raise damaged(shp, _("holds records of shape type {found}, but its header says {kind}",
                                 found=int(kinds[(kinds != kind) & (kinds != 0)][0]), kind=kind))
    with dbf.open("rb") as f:
        head = f.read(32)
    dbf_size = dbf.stat().st_size
    if len(head) < 32:
        raise damaged(dbf, _("is too short to be a table"))
    count, header, width = struct.unpack_from("<IHH", head, 4)
    if header < 33 or width < 1 or header + count * width > dbf_size:
        raise damaged(dbf, _("is {size} bytes but its header says {declared}: truncated or corrupt",
                             size=format(dbf_size, ","), declared=format(header + count * width, ",")))
    if count != records:
        raise ImportRefused(_("shapefile {name}: the record counts disagree: {shx} records in {shx_name}, "
                              "{dbf} in {dbf_name} (parts of different files?)", name=shp.name, shx=records,
                              shx_name=shx.name, dbf=count, dbf_name=dbf.name))
    return records


#: .cpg texts (upper case) → the codec they name; ``None``: the system's code page, unknown here.
_CPG_NAMES = {"UTF-8": "utf-8", "UTF8": "utf-8", "65001": "utf-8", "UTF_8": "utf-8",
              "GBK": "gbk", "936": "gbk", "CP936": "gbk", "CP 936": "gbk", "ANSI 936": "gbk", "GB2312": "gbk",
              "MS936": "gbk", "GB18030": "gb18030", "54936": "gb18030", "88591": "latin-1",
              "ANSI": None, "OEM": None, "SYSTEM": None, "": None}
#: Python's codec → the name GDAL is given.
_GDAL_ENCODING = {"utf-8": "UTF-8", "gbk": "CP936", "gb18030": "GB18030", "latin-1": "ISO-8859-1"}


def _cpg_codec(cpg: Path) -> str | None:
    """The codec a .cpg names (``utf-8``, ``gbk`` …), or None when it names none Python knows
    (``ANSI``, ``OEM``: the writer's own Windows code page)."""
    text = cpg.read_bytes()[:64].decode("ascii", errors="replace").strip().upper()
    if text in _CPG_NAMES:
        return _CPG_NAMES[text]
    if text.isdigit():  # a Windows code page number: 1252 → cp1252
        text = f"CP{text}"
    try:
        name = codecs.lookup(text).name
    except LookupError:
        return None
    return {"utf_8": "utf-8", "iso8859-1": "latin-1"}.get(name, name)


def _dbf_text(dbf: Path, codecs_: tuple[str, ...]) -> tuple[set[str], bool]:
    """Which of ``codecs_`` read the records of ``dbf`` without an error, and whether they hold any
    byte past ASCII. Read in slices of whole records (a character never spans two), so a table is
    never held whole in memory; the binary header is left out."""
    with dbf.open("rb") as f:
        head = f.read(32)
        found = _dbf_declared(head)
        header, width = (found[1], max(found[2], 1)) if found else (len(head), 1)
        f.seek(header)
        fits = set(codecs_)
        wide = False
        step = max(1, (4 << 20) // width) * width
        while fits and (chunk := f.read(step)):
            if not wide and max(chunk) >= 0x80:
                wide = True
            for codec in list(fits):
                try:
                    chunk.decode(codec)
                except UnicodeDecodeError:
                    fits.discard(codec)
    return fits, wide


def _shapefile_encoding(dbf: Path, cpg: Path | None) -> str:
    """The encoding GDAL is to read ``dbf``'s text in (its GDAL name).

    With a .cpg, the text must read in the encoding it names: a .cpg that disagrees is refused
    naming both (GBK over UTF-8 text would read as mojibake, UTF-8 over GBK text would not read).
    Without one, or with one naming no encoding (``ANSI``), the text is UTF-8 or GBK (ArcGIS's
    guess for Chinese Windows), refused when it is neither."""
    declared = _cpg_codec(cpg) if cpg is not None else None
    candidates = ("utf-8", "gbk") + ((declared,) if declared and declared not in ("utf-8", "gbk") else ())
    fits, wide = _dbf_text(dbf, candidates)
    if declared is None:
        for codec in ("utf-8", "gbk"):
            if codec in fits:
                return _GDAL_ENCODING[codec]
        raise ImportRefused(_("the text of {name} is neither UTF-8 nor GBK and no .cpg names its encoding: "
                              "add a .cpg holding the encoding (e.g. UTF-8, GBK, 936)", name=dbf.name))
    said = cpg.read_bytes()[:64].decode("ascii", errors="replace").strip()
    if declared != "utf-8" and wide and "utf-8" in fits:
        # text that reads as UTF-8 is UTF-8: GBK text is almost never valid UTF-8 by chance
        raise ImportRefused(_("the encoding does not match: {cpg} says {said}, but the text of {name} is "
                              "UTF-8; write UTF-8 in {cpg} (or delete it) and import again",
                              cpg=cpg.name, said=said, name=dbf.name))
    if declared in fits:
        return _GDAL_ENCODING.get(declared, declared.upper())
    other = next((c for c in ("utf-8", "gbk") if c in fits), None)
    if other:
        raise ImportRefused(_("the encoding does not match: {cpg} says {said}, but the text of {name} is "
                              "not {said}; it reads as {other}: write {other} in {cpg} (or delete it) and "
                              "import again", cpg=cpg.name, said=said, name=dbf.name, other=other.upper()))
    raise ImportRefused(_("the encoding does not match: {cpg} says {said}, but the text of {name} is not "
                          "{said}, nor UTF-8 or GBK: write the encoding it is in in {cpg}",
                          cpg=cpg.name, said=said, name=dbf.name))


def _read_csv(path: Path) -> gpd.GeoDataFrame:
    _check_file_size(path)
    raw = path.read_bytes()
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = raw.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise ImportRefused(_("{name} is neither UTF-8 nor GBK text", name=path.name))
    reader = csv.reader(StringIO(text), strict=True)
    try:
        for _row in reader:
            pass
    except csv.Error as exc:  # pandas would guess, and read a broken file as other rows
        raise ImportRefused(_("{name} is not a readable CSV file: broken quoting at line {line} ({exc})",
                              name=path.name, line=reader.line_num, exc=exc)) from None
    try:
        frame = pd.read_csv(StringIO(text), dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ImportRefused(_("{name} is not a readable CSV file ({exc})", name=path.name,
                              exc=str(exc).strip())) from None
    lower = {c.lower(): c for c in frame.columns}
    lon = next((lower[n] for n in _LON_NAMES if n in lower), None)
    lat = next((lower[n] for n in _LAT_NAMES if n in lower), None)
    wkt = next((lower[n] for n in _WKT_NAMES if n in lower), None)
    if lon and lat:
        x = pd.to_numeric(frame[lon], errors="coerce")
        y = pd.to_numeric(frame[lat], errors="coerce")
        empty = (frame[lon].isna() | frame[lat].isna()).to_numpy()
        bad = (x.isna() | y.isna()).to_numpy()
        if bad.any():
            raise ImportRefused([f"row {i + 1}: " + (f"no {lon}/{lat}" if empty[i] else
                                                     f"{lon}/{lat} is not a number")
                                 for i in np.flatnonzero(bad)])
        geoms = shapely.points(x.to_numpy(), y.to_numpy())
        frame = frame.drop(columns=[lon, lat])
    elif wkt:
        try:
            geoms = shapely.from_wkt(frame[wkt].fillna("").to_numpy(), on_invalid="raise")
        except shapely.errors.GEOSException as exc:
            raise ImportRefused(_("column {wkt}: unreadable WKT ({exc})", wkt=wkt, exc=exc)) from None
        frame = frame.drop(columns=[wkt])
    else:
        raise ImportRefused(_("{name} has no lon/lat columns (lon, lng, longitude / lat, latitude) and no "
                              "WKT column", name=path.name))
    return gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries(geoms, index=frame.index), crs=None)


def _check_geojson_size(source: Path) -> None:
    limit = int(os.environ.get("GRIDPLAN_MAX_GEOJSON_MB") or MAX_GEOJSON_MB)
    size = source.stat().st_size
    if size > limit * 1024**2:
        raise ImportRefused(_("{name} is {size} MB of GeoJSON, over the limit of {limit} MB (reading it "
                              "would take about 25 times that in memory): send it as a GeoPackage or a "
                              "shapefile zip", name=source.name, size=f"{size / 1024**2:,.0f}", limit=limit))


class LayerChoice(ImportRefused):
    """A file of several layers and none chosen, or a chosen one it does not hold; ``layers``
    lists the file's layers (the layers page offers them as a list)."""

    def __init__(self, problems: list[str] | str, layers: list[str]) -> None:
        super().__init__(problems)
        self.layers = layers


_GENERATED = re.compile(r"\bGENERATED\s+ALWAYS\b|\bAS\s*\(", re.IGNORECASE)


def gpkg_layers(path: Path) -> list[str]:
    """The layers of a GeoPackage: the feature and attribute tables its table of contents
    (``gpkg_contents``) lists, in its order.

    Read with SQLite itself, read-only and under a time limit, before GDAL opens the file: a layer
    that is a view (rows computed by a query when read: a recursive one never ends), a virtual
    table or a table with computed columns is refused naming it, as is a GeoPackage whose own
    tables are views — GDAL would run those queries without a limit."""
    deadline = time.monotonic() + GPKG_INSPECT_S

    def cannot(exc) -> ImportRefused:
        return ImportRefused(_("{name} cannot be read: {exc}", name=path.name, exc=exc))

    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro&immutable=1", uri=True)
    except sqlite3.Error as exc:
        raise cannot(exc) from None
    try:
        conn.set_progress_handler(lambda: time.monotonic() > deadline, 1000)
        conn.execute("PRAGMA trusted_schema = OFF")
        schema: dict[str, tuple[str, str]] = {}
        for kind, name, sql in conn.execute(
                "SELECT type, name, sql FROM sqlite_master WHERE type IN ('table', 'view')"):
            schema[str(name).lower()] = (kind, sql or "")
        for name, (kind, _sql) in schema.items():
            if name.startswith("gpkg_") and kind != "table":
                raise ImportRefused(_("{name} is not a GeoPackage gridplan reads: its table {table} is a "
                                      "{kind}, not a table", name=path.name, table=name, kind=kind))
        if "gpkg_contents" not in schema:
            raise cannot(_("it has no table of contents (gpkg_contents): not a GeoPackage"))
        rows = conn.execute("SELECT table_name FROM gpkg_contents"
                            " WHERE data_type IN ('features', 'attributes') LIMIT ?",
                            (MAX_GPKG_LAYERS + 1,)).fetchall()
        if len(rows) > MAX_GPKG_LAYERS:
            raise ImportRefused(_("{name} lists more than {n} layers: export the one to import into a "
                                  "GeoPackage of its own", name=path.name, n=MAX_GPKG_LAYERS))
        layers = []
        for (table,) in rows:
            kind, sql = schema.get(str(table).lower(), (None, ""))
            if kind is None:
                raise ImportRefused(_("{name} is damaged: its layer {layer} has no table",
                                      name=path.name, layer=repr(table)))
            if kind != "table":
                raise ImportRefused(_("{name}: layer {layer} is a view (its rows are computed by a query "
                                      "when read), not a table; gridplan imports tables only: save the layer "
                                      "as a table (in QGIS: Export › Save Features As…)",
                                      name=path.name, layer=repr(table)))
            if sql.lstrip().upper().startswith("CREATE VIRTUAL") or _GENERATED.search(sql):
                raise ImportRefused(_("{name}: layer {layer} is not a plain table (a virtual table, or "
                                      "columns computed when read): save the layer as a plain table",
                                      name=path.name, layer=repr(table)))
            layers.append(str(table))
    except sqlite3.OperationalError as exc:
        if time.monotonic() > deadline:
            raise ImportRefused(_("{name}: its tables could not be inspected within {seconds} s (a "
                                  "GeoPackage of many tables or views?): export the layer to import into a "
                                  "GeoPackage of its own", name=path.name, seconds=GPKG_INSPECT_S)) from None
        raise cannot(exc) from None
    except sqlite3.Error as exc:
        raise cannot(exc) from None
    finally:
        conn.close()
    return layers


def _choose_layer(path: Path, layers: list[str], chosen: str | None) -> str:
    """The layer of a GeoPackage to read: the one chosen, or its only one; never silently the first."""
    listed = ", ".join(layers[:50]) + (" …" if len(layers) > 50 else "")
    if chosen:
        if chosen in layers:
            return chosen
        raise LayerChoice(_("{name} has no layer {layer}; its layers: {layers}",
                            name=path.name, layer=repr(chosen), layers=listed), layers)
    if not layers:
        raise ImportRefused(_("{name} holds no layers", name=path.name))
    if len(layers) > 1:
        raise LayerChoice(_("{name} holds {n} layers: {layers}; choose the one to import (--layer NAME; on "
                            "the layers page: Layer in the file)", name=path.name, n=len(layers),
                            layers=listed), layers)
    return layers[0]


def _stamp_number(value) -> int | None:
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if number >= 0 else None


def _geojson_stamp(path: Path) -> int | None:
    """The revision in a GeoJSON's ``"gridplan"`` member, which gridplan writes before its features."""
    with path.open("rb") as f:
        head = f.read(64 * 1024).decode("utf-8", errors="replace")
    features = head.find('"features"')
    before = head[:features] if features >= 0 else head
    found = re.search(r'"' + REVISION_MEMBER + r'"\s*:\s*(\{[^{}]*\})', before)
    if not found:
        return None
    try:
        member = json.loads(found.group(1))
    except ValueError:
        return None
    return _stamp_number(member.get("revision")) if isinstance(member, dict) else None


def _sidecar_stamp(shp: Path) -> int | None:
    """The revision in a shapefile's ``<name>_revision.txt`` (``revision=42`` lines), or in the only
    such file beside it (the shapefile renamed)."""
    sidecar = shp.with_name(shp.stem + REVISION_SIDECAR)
    if not sidecar.exists():
        beside = [p for p in shp.parent.iterdir() if p.name.lower().endswith(REVISION_SIDECAR)]
        if len(beside) != 1:
            return None
        sidecar = beside[0]
    if sidecar.stat().st_size > 64 * 1024:
        return None
    for line in sidecar.read_text(encoding="utf-8", errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip().lower() == "revision":
            return _stamp_number(value)
    return None


def _take_column_stamp(gdf: gpd.GeoDataFrame) -> int | None:
    """The revision in a ``gridplan_revision`` column (CSV), dropped from the frame: the oldest
    of its rows' (a file pasted together from two exports is as old as its older part)."""
    column = next((c for c in gdf.columns if str(c).lower() in (REVISION_COLUMN, REVISION_COLUMN[:10])), None)
    if column is None:
        return None
    numbers = [n for n in map(_stamp_number, gdf[column].dropna()) if n is not None]
    gdf.drop(columns=[column], inplace=True)
    return min(numbers) if numbers else None


def file_revision(gdf: gpd.GeoDataFrame) -> int | None:
    """The boundary revision the file ``gdf`` was read from says it was exported at (None: a file
    without one, such as another department's)."""
    return gdf.attrs.get("gridplan_revision")


def read_source(path: str | Path, *, declared_crs=None, workdir: Path,
                max_unzipped_bytes: int = MAX_UNZIPPED_BYTES, source_layer: str | None = None
                ) -> gpd.GeoDataFrame:
    """Read a vector file (or a zip holding one) into a GeoDataFrame in its own CRS.

    CSV without a declared CRS is taken as WGS 84 longitude/latitude. A GeoPackage of several
    layers is read only with ``source_layer`` naming one (:class:`LayerChoice` lists them).
    The boundary revision a gridplan export was made at is in ``attrs["gridplan_revision"]``
    (:func:`file_revision`).
    """
    path = Path(path)
    if not path.exists():
        raise ImportRefused(_("{path} does not exist", path=path))
    if path.suffix.lower() == ".zip" or zipfile.is_zipfile(path) and path.suffix.lower() not in (
            ".gpkg", ".xlsx"):
        if not zipfile.is_zipfile(path):
            raise ImportRefused(_("{name} is not a readable zip archive", name=path.name))
        _safe_extract(path, workdir, max_unzipped_bytes)
        source = _find_dataset(workdir, path)
    else:
        source = path
    suffix = source.suffix.lower()
    if source_layer and suffix != ".gpkg" and source_layer != source.stem:
        raise LayerChoice(_("{name} holds one layer, {stem}: the layer {layer} is not in it",
                            name=source.name, stem=source.stem, layer=repr(source_layer)), [source.stem])
    revision = None
    try:
        if suffix == ".shp":
            gdf = _read_shapefile(source, declared_crs)
            revision = _sidecar_stamp(source)
        elif suffix == ".csv":
            gdf = _read_csv(source)
            if gdf.crs is None and declared_crs is None:
                gdf = gdf.set_crs(crs_mod.WGS84)
        elif suffix == ".gpkg":
            chosen = _choose_layer(source, gpkg_layers(source), source_layer)
            # LIST_ALL_TABLES=NO: GDAL sees only the layers checked above, not tables or views the
            # table of contents leaves out
            gdf = pyogrio.read_dataframe(source, layer=chosen, LIST_ALL_TABLES="NO")
            stamp = (pyogrio.read_info(source, layer=chosen, LIST_ALL_TABLES="NO").get("layer_metadata")
                     or {}).get(REVISION_KEY)
            revision = _stamp_number(stamp) if stamp is not None else None
        elif suffix in (".geojson", ".json"):
            _check_geojson_size(source)
            gdf = pyogrio.read_dataframe(source)
            revision = _geojson_stamp(source)
        else:
            raise ImportRefused(_("{name}: unknown format {suffix}; use a shapefile zip, .gpkg, .geojson or "
                                  ".csv", name=path.name, suffix=repr(suffix)))
    except ImportRefused:
        raise
    except UnicodeDecodeError as exc:  # text GDAL hands over in an encoding it is not
        raise ImportRefused(_("{name} cannot be read: its text is not in the encoding it declares ({exc})",
                              name=source.name, exc=exc)) from None
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError,
            shapely.errors.GEOSException) as exc:
        raise ImportRefused(_("{name} cannot be read: {exc}", name=source.name, exc=exc)) from None
    column = _take_column_stamp(gdf)
    gdf.attrs["gridplan_revision"] = revision if revision is not None else column
    return gdf


# --- checking ------------------------------------------------------------------------------


def _mapped_columns(spec: LayerSpec, gdf: gpd.GeoDataFrame, mapping: dict[str, str]) -> tuple[dict, list]:
    """Source column → layer field, and the source columns left over."""
    problems = []
    extra = NAME_FIELDS.get(spec.name, {})
    for src, dst in mapping.items():
        if src not in gdf.columns:
            problems.append(f"field {src!r} named in --map is not in the file "
                            f"(fields: {', '.join(map(str, gdf.columns.drop('geometry')))})")
        if dst not in spec.field_names and dst not in extra:
            problems.append(f"layer {spec.name} has no field {dst!r} "
                            f"(fields: {', '.join(spec.field_names)})")
    if problems:
        raise ImportRefused(problems)
    rename = dict(mapping)
    by_alias = {}
    # exact name, any case, the short name of our own shapefiles, or the name cut at 10 bytes
    # as GDAL and ArcGIS cut it when they write a shapefile
    for f in spec.fields:
        for alias in (f.name, f.name.lower(), f.short.lower(), f.name[:10].lower()):
            by_alias.setdefault(alias, f.name)
    for name, aliases in extra.items():
        for alias in aliases:
            by_alias.setdefault(alias, name)
    taken = set(rename.values())
    for col in gdf.columns:
        if col == gdf.geometry.name or col in rename:
            continue
        target = by_alias.get(str(col)) or by_alias.get(str(col).lower())
        if target and target not in taken:
            rename[col] = target
            taken.add(target)
    ignored = [str(c) for c in gdf.columns if c != gdf.geometry.name and c not in rename]
    return rename, ignored


def _shown(value) -> str:
    """A file's value as the refusal quotes it: ``12.5``, not ``np.float64(12.5)``."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _coerce(spec: LayerSpec, frame: pd.DataFrame, problems: list[str], maxima: dict[str, tuple] | None = None,
            reported: set[tuple[int, str]] | None = None) -> pd.DataFrame:
    """The file's columns as the layer's types. ``maxima`` gives a numeric field's largest value and
    where that limit comes from (:func:`value_maxima`); numbers are never negative (every number a
    layer holds is a count, an area or a year). ``reported`` collects (row, field) of the values
    refused here, so that later checks do not call them empty as well."""
    out = pd.DataFrame(index=frame.index)
    rows = np.arange(1, len(frame) + 1)
    maxima = value_maxima(ValueLimits()) if maxima is None else maxima
    reported = set() if reported is None else reported
    for f in spec.fields:
        if f.name not in frame.columns:
            continue
        col = frame[f.name]
        if f.dtype == "str":
            out[f.name] = as_codes(col) if is_code_field(spec, f.name) else as_text(col)
            continue
        present = col.notna() & ~(col.astype(str).str.strip() == "")
        if f.dtype == "bool":
            text = col.where(present).map(lambda v: None if v is None or v is pd.NA or v != v
                                          else str(v).strip().lower())
            values = text.map(_BOOLEAN.get)
            for r in rows[(present & values.isna()).to_numpy()][:20]:
                problems.append(f"row {r}: {f.name} = {_shown(col.iloc[r - 1])} is not yes or no")
            out[f.name] = values.fillna(False).astype(bool)
            continue
        if f.dtype in ("int", "float"):
            values = pd.to_numeric(col.where(present), errors="coerce")
            bad = present & values.isna()
            if f.dtype == "int":
                bad |= values.notna() & (values % 1 != 0)
            bad |= present & np.isinf(values.fillna(0))  # "inf", "1e999": no quantity is infinite
            for r in rows[bad.to_numpy()][:20]:
                problems.append(f"row {r}: {f.name} = {_shown(col.iloc[r - 1])} is not "
                                f"{'a whole number' if f.dtype == 'int' else 'a number'}")
            reported.update((int(r), f.name) for r in rows[bad.to_numpy()])
            bad |= _out_of_range(f.name, values.where(~bad), col, rows, maxima, problems, reported)
            out[f.name] = values.where(~bad).astype("Int64") if f.dtype == "int" else values.where(~bad)
        else:
            values = pd.to_datetime(col.where(present), errors="coerce", format="mixed")
            if getattr(values.dt, "tz", None) is not None:
                values = values.dt.tz_convert("Asia/Shanghai").dt.tz_localize(None)
            for r in rows[(present & values.isna()).to_numpy()][:20]:
                problems.append(f"row {r}: {f.name} = {_shown(col.iloc[r - 1])} is not a date")
            out[f.name] = values.dt.date if f.dtype == "date" else values
            out[f.name] = out[f.name].astype(object).where(values.notna(), None)
        if f.dtype == "int":
            out[f.name] = out[f.name].astype(object).where(out[f.name].notna(), None)
    return out


_BOOLEAN = {"1": True, "true": True, "yes": True, "y": True, "t": True, "是": True, "1.0": True,
            "0": False, "false": False, "no": False, "n": False, "f": False, "否": False, "0.0": False}


def parse_values(specs: list[str] | tuple[str, ...]) -> dict[str, dict[str, str]]:
    """Value mappings as the command line gives them: ``FIELD:SRC=DST,SRC=DST`` inline, or
    ``FIELD=TABLE.csv`` (two columns: the source's value, gridplan's value; an empty gridplan
    value leaves those rows out on purpose). Raises :class:`ImportRefused` on a malformed one."""
    out: dict[str, dict[str, str]] = {}
    for spec in specs:
        colon, equals = spec.find(":"), spec.find("=")
        if colon > 0 and (equals < 0 or colon < equals):
            name, pairs = spec[:colon].strip(), spec[colon + 1:]
            table = out.setdefault(name, {})
            for pair in pairs.split(","):
                src, sep, dst = pair.partition("=")
                if not sep or not src.strip():
                    raise ImportRefused(_("--values {spec}: {pair} is not SOURCE=KIND",
                                          spec=repr(spec), pair=repr(pair)))
                table[src.strip()] = dst.strip()
        elif equals > 0:
            name, path = spec[:equals].strip(), Path(spec[equals + 1:].strip())
            out.setdefault(name, {}).update(_read_value_table(path))
        else:
            raise ImportRefused(_("--values {spec}: use FIELD:SOURCE=KIND,… or FIELD=TABLE.csv",
                                  spec=repr(spec)))
    return out


def _read_value_table(path: Path) -> dict[str, str]:
    frame = read_text_table(path, ImportRefused, missing="value table", label="value table ", header=False)
    if frame.shape[1] < 2:
        raise ImportRefused(_("value table {name} needs two columns: the source's value and gridplan's value",
                              name=path.name))
    pairs = [(str(a).strip(), str(b).strip()) for a, b in frame.iloc[:, :2].itertuples(index=False)]
    if pairs and pairs[0][0].lower() in ("value", "source", "from", "原值", "类别", "category"):
        pairs = pairs[1:]  # a header row
    return {a: b for a, b in pairs if a}


def _apply_values(spec: LayerSpec, frame: pd.DataFrame, values: dict[str, dict[str, str]],
                  rename: dict[str, str], unmapped: str, problems: list[str],
                  skipped: dict[str, dict[str, int]]) -> np.ndarray:
    """Translate the mapped fields' values in place; returns the rows to keep."""
    keep = np.ones(len(frame), dtype=bool)
    for name, table in values.items():
        target = rename.get(name, name)
        if target not in frame.columns:
            problems.append(f"--values names field {name!r}, which is neither in the file nor "
                            f"a field of {spec.name} ({', '.join(spec.field_names)})")
            continue
        col = frame[target].astype(object)
        known = KNOWN_VALUES.get((spec.name, target)) or (
            LOCATION_PRECISIONS if target == "location_precision" else None)
        wrong = sorted({v for v in table.values() if v and known and v not in known})
        if wrong:
            problems.append(f"--values {name}: {', '.join(wrong)} is not a {target} gridplan knows "
                            f"({', '.join(known)})")
        present = col.notna().to_numpy()
        text = col.map(lambda v: None if v is None else str(v).strip())
        mapped = text.map(table)
        missing = present & ~text.isin(list(table)).to_numpy()
        left_out = present & text.isin([k for k, v in table.items() if not v]).to_numpy()
        if missing.any():
            counts = text[missing].value_counts()
            listed = {str(k): int(n) for k, n in counts.items()}
            if unmapped == "skip":
                skipped[target] = listed
                keep &= ~missing
            else:
                problems.append(f"{len(listed)} values of {name} have no mapping ({int(missing.sum())} rows; "
                                "map them with --values, or leave those rows out with --unmapped skip): "
                                + ", ".join(f"{k} ({n})" for k, n in listed.items()))
        if left_out.any():
            counts = text[left_out].value_counts()
            skipped.setdefault(target, {}).update({str(k): int(n) for k, n in counts.items()})
            keep &= ~left_out
        frame[target] = mapped.where(~missing, col).astype(object)
    return keep


def _derive_district(frame: pd.DataFrame, spec: LayerSpec) -> None:
    """Fill ``district_code`` from the codes that nest under it, where the file has none."""
    if "district_code" not in spec.field_names:
        return
    if "district_code" not in frame.columns:
        frame["district_code"] = None
    for source in ("street_code", "community_code", "grid_code", "code"):
        if source not in frame.columns or (source == "code" and not spec.code_digits):
            continue
        missing = frame["district_code"].isna() & frame[source].notna()
        frame.loc[missing, "district_code"] = frame.loc[missing, source].str[:6]


def _out_of_range(name: str, values: pd.Series, col: pd.Series, rows: np.ndarray, maxima: dict[str, tuple],
                  problems: list[str], reported: set[tuple[int, str]]) -> pd.Series:
    """The rows whose number is negative or over its field's limit, each named: a count of
    9e18 households wraps the sums of a plan, and PostgreSQL's integer columns stop at 2³¹ − 1."""
    limit, why = maxima.get(name, maxima[None])
    negative = values.notna() & (values < 0)
    over = values.notna() & (values > limit)
    for r in rows[negative.to_numpy()][:20]:
        problems.append(_("row {row}: {field} = {value} is negative", row=r, field=name,
                          value=_shown(col.iloc[r - 1])))
    for r in rows[over.to_numpy()][:20]:
        problems.append(_("row {row}: {field} = {value} is over the limit of {limit} ({why})", row=r,
                          field=name, value=_shown(col.iloc[r - 1]), limit=f"{limit:,}", why=why))
    reported.update((int(r), name) for r in rows[(negative | over).to_numpy()])
    return negative | over


def _check_text(spec: LayerSpec, frame: pd.DataFrame, problems: list[str]) -> None:
    """Text longer than its column (PostgreSQL refuses it, SQLite would keep it) or holding a NUL
    character (PostgreSQL cannot store one), by row."""
    rows = np.arange(1, len(frame) + 1)
    for f in spec.fields:
        if f.dtype != "str" or f.name not in frame.columns:
            continue
        text = [v if isinstance(v, str) else "" for v in frame[f.name].to_numpy(dtype=object)]
        length = column_length(spec, f.name)
        if length:
            sizes = np.array([len(v) for v in text], dtype=np.int64)
            for r in rows[sizes > length][:20]:
                problems.append(_("row {row}: {field} is {n} characters long, over the limit of {limit}",
                                  row=r, field=f.name, n=f"{sizes[r - 1]:,}", limit=length))
        nul = np.array(["\x00" in v for v in text], dtype=bool)
        for r in rows[nul][:20]:
            problems.append(_("row {row}: {field} holds a NUL character (\\0), which no text may hold",
                              row=r, field=f.name))


def _check_values(spec: LayerSpec, frame: pd.DataFrame, problems: list[str],
                  reported: set[tuple[int, str]] | None = None) -> None:
    rows = np.arange(1, len(frame) + 1)
    reported = reported or set()
    for f in spec.fields:
        if f.name not in frame.columns:
            if f.required:
                problems.append(f"missing required field {f.name!r} ({f.label})")
            continue
        col = frame[f.name]
        if f.required or (f.name == "district_code"):
            named = {p.split(" = ", 1)[0] for p in problems if " = " in p}  # "row 3: households"
            for r in rows[col.isna().to_numpy()][:20]:
                if f"row {r}: {f.name}" in named or (int(r), f.name) in reported:
                    continue  # its value was reported already as not a number or not a date
                problems.append(f"row {r}: no district_code, and no other code to take it from"
                                if f.name == "district_code" else f"row {r}: {f.name} is empty")
        digits = spec.code_digits if f.name == "code" else f.digits
        if digits:
            ok = col.map(lambda v, d=digits: v is None or is_code(v, d))
            for r in rows[~ok.to_numpy()][:20]:
                problems.append(f"row {r}: {f.name} {col.iloc[r - 1]!r} is not a "
                                f"{digits}-digit code")
    # codes nest: a code starts with its parent's code
    for child, parent in (("code", spec.parent_field), ("community_code", "street_code")):
        if parent and child in frame.columns and parent in frame.columns:
            below, above = frame[child], frame[parent]
            bad = below.notna() & above.notna() & ~np.array(
                [c.startswith(p) for c, p in zip(below.fillna(""), above.fillna(""), strict=True)])
            for r in rows[bad.to_numpy()][:20]:
                problems.append(f"row {r}: {child} {below.iloc[r - 1]} does not lie under "
                                f"{parent} {above.iloc[r - 1]}")
    _check_text(spec, frame, problems)
    if "code" in frame.columns:
        dup = frame["code"].notna() & frame["code"].duplicated(keep=False)
        if dup.any():
            codes = sorted(set(frame.loc[dup, "code"]))
            problems.append(f"codes repeated in the file: {', '.join(codes[:20])}")


def _check_geometry(spec: LayerSpec, gdf: gpd.GeoDataFrame, problems: list[str],
                    repaired: list[str]) -> np.ndarray:
    geoms = np.asarray(gdf.geometry.values, dtype=object)
    rows = np.arange(1, len(geoms) + 1)
    missing = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    for r in rows[missing][:20]:
        problems.append(f"row {r}: no geometry")
    vertices = shapely.get_num_coordinates(np.where(missing, None, geoms))
    huge = vertices > MAX_VERTICES
    for r in rows[huge][:20]:
        problems.append(f"row {r}: {vertices[r - 1]:,} vertices, over the limit of {MAX_VERTICES:,} per "
                        "feature: simplify it")
    missing = missing | huge  # not checked further
    geoms = shapely.force_2d(np.where(missing, None, geoms))
    names = _TYPE_NAMES[shapely.get_type_id(geoms)]
    allowed = _GEOM_FAMILIES.get(spec.geometry)
    if allowed is not None:
        single_multipoint = (names == "MultiPoint") & (shapely.get_num_geometries(geoms) == 1)
        if spec.geometry == "point" and single_multipoint.any():
            geoms[single_multipoint] = shapely.get_geometry(geoms[single_multipoint], 0)
            names[single_multipoint] = "Point"
        wrong = ~missing & ~np.isin(names, list(allowed))
        for r in rows[wrong][:20]:
            problems.append(f"row {r}: geometry is {names[r - 1]}, layer {spec.name} takes "
                            f"{' or '.join(sorted(allowed))}")
    coords_ok = np.ones(len(geoms), dtype=bool)
    present = ~missing
    if present.any():  # NaN or infinite coordinates: GEOS leaves them out of the bounds, and repairs
        xy, which = shapely.get_coordinates(geoms[present], return_index=True)
        broken = np.unique(which[~np.isfinite(xy).all(axis=1)])
        coords_ok[np.flatnonzero(present)[broken]] = False
        for r in rows[~coords_ok][:20]:
            problems.append(f"row {r}: a coordinate is not a number (NaN or infinite)")
        present = present & coords_ok
    if present.any():
        bounds = shapely.bounds(geoms[present])
        inside = ((bounds[:, 0] >= -180) & (bounds[:, 2] <= 180) & (bounds[:, 1] >= -90)
                  & (bounds[:, 3] <= 90) & np.isfinite(bounds).all(axis=1))
        coords_ok[np.flatnonzero(present)[~inside]] = False
        for r in rows[present][~inside][:20]:
            problems.append(f"row {r}: coordinates are not longitude/latitude after "
                            "reprojection — is the declared CRS right?")
    invalid = present & coords_ok & ~shapely.is_valid(geoms)
    for i in np.flatnonzero(invalid):
        before = geoms[i]
        reason = shapely.is_valid_reason(before)
        fixed = shapely.make_valid(before, method="structure", keep_collapsed=False)
        if spec.geometry == "polygon":
            parts = [p for p in shapely.get_parts(fixed) if p.geom_type in ("Polygon", "MultiPolygon")]
            fixed = shapely.union_all(parts) if parts else None
        family = _GEOM_FAMILIES.get(spec.geometry)
        same_type = fixed is not None and not fixed.is_empty and (
            family is None or fixed.geom_type in family)
        area_before = abs(shapely.area(before))
        change = (abs(fixed.area - area_before) / area_before if same_type and area_before > 0
                  else (0.0 if same_type and spec.geometry != "polygon" else np.inf))
        if same_type and change < MAX_REPAIR_AREA_CHANGE:
            geoms[i] = fixed
            repaired.append(f"row {i + 1} ({reason}; area changed {change:.2%})")
        else:
            problems.append(f"row {i + 1}: invalid geometry ({reason}) that cannot be repaired "
                            "without changing its shape")
    return geoms


# --- values and places a file may not lie about --------------------------------------------

#: PostgreSQL's integer columns hold at most this (SQLite's 2⁶³ − 1): a larger count cannot be
#: stored, and sums of counts near it wrap.
INT_COLUMN_MAX = 2**31 - 1
#: The largest floor area of one facility taken (m²; the largest buildings on earth have 1.7 km²).
MAX_FLOOR_AREA_M2 = 10_000_000
#: The latest year a unit may have been built in (planned ones included).
MAX_BUILT_YEAR = 2100
#: A feature farther than this from every stored district (or, without districts, from the stored
#: streets or communities) was read in the wrong coordinate system, or belongs to another city.
MAX_DISTANCE_KM = 50.0
#: A community or unit farther than this from the stored street its ``street_code`` names (a grid
#: cell from its community) has the wrong code, or was moved by a wrong coordinate system.
PARENT_DISTANCE_KM = 10.0
#: The parent each layer's features must lie near, by the field naming it.
NEAR_PARENT = {"communities": ("street_code", "streets"), "units": ("street_code", "streets"),
               "grid_cells": ("community_code", "communities")}
#: Features this close to 0°, 0° (degrees; "Null Island", in the Gulf of Guinea) are coordinates
#: read in the wrong system: degrees read as metres put a whole city within a metre of it.
NULL_ISLAND_DEG = 1.0
#: Codes and rows a refusal lists before "… and N more".
SHOWN = 10
#: The layer each code field names. Once that layer holds any feature, a code it does not hold is
#: refused; a database without streets still takes units alone (a study of census blocks).
PARENT_LAYERS = {"district_code": "districts", "street_code": "streets", "community_code": "communities",
                 "grid_code": "grid_cells", "unit_code": "units"}


def _gk(epsg: int, name: str, central: int, false_easting: int) -> tuple[int, str, str]:
    return (epsg, f"CGCS2000 / {name}", f"+proj=tmerc +lat_0=0 +lon_0={central} +k=1 +x_0={false_easting} "
            "+y_0=0 +ellps=GRS80 +units=m +no_defs")


#: Projected systems a Chinese file's coordinates are often in, tried in this order when a file
#: lands in the wrong place, to name the likely one (EPSG code, name, PROJ definition: built from
#: their parameters, which is a thousand times faster than looking each up): CGCS2000 Gauss–Krüger
#: 3° (CM 75°E–135°E, then with the zone number before the easting), 6° (the same two ways), Web
#: Mercator, UTM.
_CRS_GUESSES: tuple[tuple[int, str, str], ...] = (
    *(_gk(4534 + i, f"3-degree Gauss-Kruger CM {75 + 3 * i}E", 75 + 3 * i, 500_000) for i in range(21)),
    *(_gk(4513 + i, f"3-degree Gauss-Kruger zone {25 + i}", 75 + 3 * i, (25 + i) * 1_000_000 + 500_000)
      for i in range(21)),
    *(_gk(4502 + i, f"Gauss-Kruger CM {75 + 6 * i}E", 75 + 6 * i, 500_000) for i in range(11)),
    *(_gk(4491 + i, f"Gauss-Kruger zone {13 + i}", 75 + 6 * i, (13 + i) * 1_000_000 + 500_000)
      for i in range(11)),
    (3857, "WGS 84 / Pseudo-Mercator", "+proj=merc +a=6378137 +b=6378137 +lat_ts=0 +lon_0=0 +x_0=0 +y_0=0 "
     "+k=1 +units=m +nadgrids=@null +no_defs"),
    *((32643 + i, f"WGS 84 / UTM zone {43 + i}N", f"+proj=utm +zone={43 + i} +datum=WGS84 +units=m +no_defs")
      for i in range(11)),
)


def _setting_default(key: str):
    return next(row["value"] for row in DEFAULT_SETTINGS if row["key"] == key)


Box = tuple[float, float, float, float]


def _region(value, default: Box | None = None) -> Box:
    """The setting ``import_region`` as (lon_min, lat_min, lon_max, lat_max); ``default`` when it
    is malformed (the settings page keeps its shape, but a row may have been written by hand)."""
    keys = ("lon_min", "lat_min", "lon_max", "lat_max")
    if isinstance(value, dict) and all(isinstance(value.get(k), int | float) for k in keys):
        box = tuple(float(value[k]) for k in keys)
        if all(np.isfinite(box)) and box[0] < box[2] and box[1] < box[3]:
            return box
    if default is None:
        raise ValueError(f"import_region {value!r} is not a box of lon_min, lat_min, lon_max, lat_max")
    return default


def _count_limit(value, default: int) -> int:
    if isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value) and value >= 0:
        return int(min(value, INT_COLUMN_MAX))  # a setting set past the column could not be stored either
    return default


@dataclass(frozen=True)
class ValueLimits:
    """A city's bounds on imported values: households and population of one unit or building
    (settings ``unit_households_max``, ``unit_population_max``), people per household for a
    file without population (``people_per_household``), and the region features may lie in
    (``import_region``: lon_min, lat_min, lon_max, lat_max)."""

    households_max: int = _setting_default("unit_households_max")
    population_max: int = _setting_default("unit_population_max")
    people_per_household: float = _setting_default("people_per_household")
    region: tuple[float, float, float, float] = _region(_setting_default("import_region"))


def read_limits(engine: Engine | Connection) -> ValueLimits:
    """The city's :class:`ValueLimits` as its settings hold them (defaults for a missing or
    malformed row)."""
    with engine.connect() if isinstance(engine, Engine) else nullcontext(engine) as conn:
        value = {k: get_setting(conn, k) for k in ("unit_households_max", "unit_population_max",
                                                   "people_per_household", "import_region")}
    base = ValueLimits()
    pph = value["people_per_household"]
    return ValueLimits(
        households_max=_count_limit(value["unit_households_max"], base.households_max),
        population_max=_count_limit(value["unit_population_max"], base.population_max),
        people_per_household=float(pph) if isinstance(pph, int | float) and 0 < pph < 100 else
        base.people_per_household,
        region=_region(value["import_region"], base.region))


def value_maxima(limits: ValueLimits) -> dict[str | None, tuple[int, str]]:
    """Numeric field → (its largest value, where that limit comes from); ``None``: any other."""
    return {"households": (limits.households_max, _("setting {key}", key="unit_households_max")),
            "population": (limits.population_max, _("setting {key}", key="unit_population_max")),
            "floor_area_m2": (MAX_FLOOR_AREA_M2, _("the largest floor area gridplan takes")),
            "built_year": (MAX_BUILT_YEAR, _("the latest year gridplan takes")),
            None: (INT_COLUMN_MAX, _("the largest number the database holds"))}


def _listed(items: list, total: int | None = None) -> str:
    """At most :data:`SHOWN` items, then how many more."""
    total = len(items) if total is None else total
    text = ", ".join(str(v) for v in items[:SHOWN])
    return text + (_(" … and {n} more", n=total - SHOWN) if total > SHOWN else "")


def _check_parents(engine: Engine, spec: LayerSpec, frame: pd.DataFrame, problems: list[str]) -> None:
    """Codes naming a street, community, cell … that is not stored, once its layer holds any
    (communities retired since are left to :func:`retired_communities`, which says so)."""
    for name, parent in PARENT_LAYERS.items():
        if name not in frame.columns or name not in spec.field_names or parent == spec.name:
            continue
        digits = spec.field(name).digits
        codes = {c for c in frame[name].dropna() if isinstance(c, str) and (not digits or is_code(c, digits))}
        if not codes:
            continue
        table = get_layer(parent).table
        with engine.connect() as conn:
            if conn.execute(select(table.c.code).limit(1)).first() is None:
                continue  # nothing stored yet: this file comes first
            missing = codes - values_among(conn, table.c.code, codes)
            if parent == "communities" and missing:
                missing -= retired_communities(conn, missing)
        if missing:
            problems.append(_("{field}: {n} codes name no stored {layer}: {codes}", field=name,
                              n=len(missing), layer=parent, codes=_listed(sorted(missing))))


@dataclass
class Source:
    """A file's coordinates as it holds them and the system it says they are in, to name the
    likely mistake when they land in the wrong place."""

    crs: object  # a pyproj CRS, GCJ02, or None
    geoms: np.ndarray


def _reference(engine: Engine, layer: str) -> list[tuple[str, tuple[float, float, float, float]]]:
    """What a file must lie near: each stored district's extent; without districts the stored
    streets' or communities' extent; nothing for a first import (or a districts file)."""
    if layer == "districts":
        return []
    table = get_layer("districts").table
    with engine.connect() as conn:
        rows = conn.execute(select(table.c.code, table.c.name,
                                   *dialect.bounds_columns(conn, table.c.geom))).all()
    boxes = [(_("district {code} {name}", code=r[0], name=r[1]), tuple(float(v) for v in r[2:]))
             for r in rows if r[2] is not None]
    if boxes:
        return boxes
    for other in ("streets", "communities"):
        extent = layer_extent(engine, other)
        if extent is not None:
            return [(_("the stored {layer}", layer=other), extent)]
    return []


def _km_to_box(lon: np.ndarray, lat: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """Kilometres from each point to a lon/lat box (0 inside it); good to a few per cent."""
    minx, miny, maxx, maxy = box
    dx = np.maximum(np.maximum(minx - lon, lon - maxx), 0.0)
    dy = np.maximum(np.maximum(miny - lat, lat - maxy), 0.0)
    return np.hypot(dx * 111.32 * np.cos(np.radians(np.clip(lat, -89.0, 89.0))), dy * 110.57)


@functools.cache
def _transformer(definition: str) -> Transformer:
    return Transformer.from_crs(definition, "+proj=longlat +ellps=GRS80 +no_defs", always_xy=True)


def _crs_guess(source: Source, bad: np.ndarray, fits: Callable[[float, float], bool]) -> tuple[bool, str]:
    """"they look like EPSG:… (name)" when the bad features' coordinates, read in one of the usual
    systems, land where they should (and True); always what the file says its system is."""
    said = source.crs.to_string() if hasattr(source.crs, "to_string") else str(source.crs)
    named = getattr(source.crs, "name", None)
    said = f"{said} ({named})" if named and named != said else said
    raw = source.geoms[bad]
    raw = raw[~(shapely.is_missing(raw) | shapely.is_empty(raw))]
    if len(raw):
        b = shapely.bounds(raw)
        x, y = float(np.nanmedian((b[:, 0] + b[:, 2]) / 2)), float(np.nanmedian((b[:, 1] + b[:, 3]) / 2))
        own = source.crs.to_epsg() if hasattr(source.crs, "to_epsg") else None
        degrees = abs(x) <= 180 and abs(y) <= 90
        if degrees and own not in (4326, 4490) and np.isfinite(x) and fits(x, y):
            what = _("longitude/latitude degrees (EPSG:4490 or EPSG:4326)")
            return True, _("they look like {what}, but the file says {said}", what=what, said=said)
        for epsg, name, definition in () if degrees or not np.isfinite([x, y]).all() else _CRS_GUESSES:
            if epsg == own:
                continue
            lon, lat = _transformer(definition).transform(x, y)
            if np.isfinite(lon) and np.isfinite(lat) and fits(lon, lat):
                return True, _("they look like {what}, but the file says {said}",
                               what=f"EPSG:{epsg} ({name})", said=said)
    return False, _("the file says {said}", said=said)


def _check_place(engine: Engine, spec: LayerSpec, geoms: np.ndarray, source: Source, limits: ValueLimits,
                 problems: list[str]) -> None:
    """Features that cannot be where the file puts them, with the likely coordinate-system
    mistake named: at Null Island, outside the import region, or farther than
    :data:`MAX_DISTANCE_KM` from every stored district (or the stored streets)."""
    n = len(geoms)
    if n == 0:
        return
    usable = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    b = np.full((n, 4), np.nan)
    b[usable] = shapely.bounds(geoms[usable])
    finite = usable & np.isfinite(b).all(axis=1)
    lonlat = finite & (b[:, 0] >= -180) & (b[:, 2] <= 180) & (b[:, 1] >= -90) & (b[:, 3] <= 90)
    not_lonlat = finite & ~lonlat  # refused by the geometry check; here only to name the system
    lon, lat = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    null = lonlat & (np.abs(lon) <= NULL_ISLAND_DEG) & (np.abs(lat) <= NULL_ISLAND_DEG)
    lon_min, lat_min, lon_max, lat_max = limits.region
    outside = lonlat & ~null & ~((lon >= lon_min) & (lon <= lon_max) & (lat >= lat_min) & (lat <= lat_max))
    placed = lonlat & ~null & ~outside
    boxes = _reference(engine, spec.name) if (placed | null | outside | not_lonlat).any() else []
    km = np.zeros(n)
    nearest = np.zeros(n, dtype=int)
    if boxes:
        x, y = np.nan_to_num(lon), np.nan_to_num(lat)
        distances = np.stack([_km_to_box(x, y, box) for _label, box in boxes])
        km, nearest = distances.min(axis=0), distances.argmin(axis=0)
    far = placed & (km > MAX_DISTANCE_KM)
    if not (null | outside | far | not_lonlat).any():
        return

    def fits(x: float, y: float) -> bool:
        inside = lon_min <= x <= lon_max and lat_min <= y <= lat_max and not (
            abs(x) <= NULL_ISLAND_DEG and abs(y) <= NULL_ISLAND_DEG)
        return inside and (not boxes or min(float(_km_to_box(np.array([x]), np.array([y]), box)[0])
                                            for _label, box in boxes) <= MAX_DISTANCE_KM)

    rows = np.arange(1, n + 1)

    def which(mask: np.ndarray) -> tuple[str, str]:
        count = int(mask.sum())
        if count == n:
            return _("all {n} features", n=f"{n:,}"), ""
        return (_("{n} features", n=f"{count:,}"),
                " " + _("(rows {rows})", rows=_listed(list(rows[mask]), count)))

    if null.any():
        what, at = which(null)
        problems.append(_("{what} lie at Null Island (0°, 0°){at}: the coordinates were read in the wrong "
                          "coordinate system — is the .prj right? ({guess})", what=what, at=at,
                          guess=_crs_guess(source, null, fits)[1]))
    if outside.any():
        what, at = which(outside)
        problems.append(_("{what} lie outside the import region (longitude {lon_min}–{lon_max}, latitude "
                          "{lat_min}–{lat_max}, setting import_region), around {lon}, {lat}{at}: is the .prj "
                          "right? ({guess})", what=what, at=at, lon_min=f"{lon_min:g}",
                          lon_max=f"{lon_max:g}", lat_min=f"{lat_min:g}", lat_max=f"{lat_max:g}",
                          lon=f"{np.median(lon[outside]):.4f}", lat=f"{np.median(lat[outside]):.4f}",
                          guess=_crs_guess(source, outside, fits)[1]))
    if far.any():
        what, at = which(far)
        place = boxes[int(np.bincount(nearest[far]).argmax())][0]
        problems.append(_("{what} lie {km} km from {place}{at}: is the .prj right? ({guess})", what=what,
                          at=at, km=f"{np.median(km[far]):,.0f}", place=place,
                          guess=_crs_guess(source, far, fits)[1]))
    if not_lonlat.any():
        found, guess = _crs_guess(source, not_lonlat, fits)
        if found:
            what, _at = which(not_lonlat)
            problems.append(_("the coordinates of {what} are not longitude/latitude: {guess}", what=what,
                              guess=guess))


def _check_near_parent(engine: Engine, spec: LayerSpec, frame: pd.DataFrame, geoms: np.ndarray,
                       problems: list[str]) -> None:
    """Features farther than :data:`PARENT_DISTANCE_KM` from the stored street (or community) their
    code names, by row: a community filed under a street across the city."""
    name, parent = NEAR_PARENT.get(spec.name, (None, None))
    if name is None or name not in frame.columns or len(geoms) == 0:
        return
    codes = frame[name].to_numpy(dtype=object)
    wanted = sorted({c for c in codes if isinstance(c, str)})
    table = get_layer(parent).table
    boxes: dict[str, tuple] = {}
    with engine.connect() as conn:
        bounds = dialect.bounds_columns(conn, table.c.geom)
        for start in range(0, len(wanted), BATCH):
            chunk = wanted[start:start + BATCH]
            for code, *box in conn.execute(select(table.c.code, *bounds).where(table.c.code.in_(chunk))):
                if box[0] is not None:
                    boxes[code] = tuple(float(v) for v in box)
    known = np.array([c in boxes for c in codes], dtype=bool)
    known &= ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    if not known.any():
        return
    b = shapely.bounds(geoms[known])
    lon, lat = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    own = np.array([boxes[c] for c in codes[known]], dtype=float).T  # each row's parent's box
    km = _km_to_box(lon, lat, tuple(own))
    far = km > PARENT_DISTANCE_KM
    rows = np.arange(1, len(geoms) + 1)[known][far]
    for r, c, d in list(zip(rows, codes[known][far], km[far], strict=True))[:20]:
        problems.append(_("row {row}: lies {km} km from {layer} {code}, which its {field} names",
                          row=r, km=f"{d:,.0f}", layer=parent, code=c, field=name))


def _fill_defaults(spec: LayerSpec, frame: pd.DataFrame) -> None:
    """Empty values of a field the database requires and gives a default (a unit's land use) take
    that default, as they would if the file had no such column."""
    for f in spec.fields:
        column = spec.table.c[f.name]
        default = getattr(column.default, "arg", None)
        if f.name in frame.columns and not column.nullable and isinstance(default, str | int | float) \
                and not isinstance(default, bool) and f.name != "population":
            frame[f.name] = frame[f.name].astype(object).where(frame[f.name].notna(), default)


def _estimate_population(frame: pd.DataFrame, limits: ValueLimits, report: ImportReport) -> None:
    """Population where the file gives none: households × the city's people per household (as the
    unit builder estimates it), counted in the report."""
    if "population" not in frame.columns:
        frame["population"] = None
    empty = frame["population"].isna().to_numpy()
    if not empty.any():
        return
    households = pd.to_numeric(frame["households"], errors="coerce").fillna(0).to_numpy(dtype=float)
    estimate = np.minimum(np.round(households * limits.people_per_household), INT_COLUMN_MAX).astype(np.int64)
    values = frame["population"].to_numpy(dtype=object).copy()
    values[empty] = [int(v) for v in estimate[empty]]
    frame["population"] = values
    report.estimated_population = int(empty.sum())
    report.people_per_household = limits.people_per_household


# --- writing -------------------------------------------------------------------------------


def store_adjacency(conn: Connection, units: gpd.GeoDataFrame, full: bool) -> int:
    """Store the rook neighbours of ``units`` (the imported ones) among all stored units."""
    table = UnitAdjacency.__table__
    codes = list(units["code"])
    if full:
        conn.execute(delete(table))
        pool = read_layer(conn, "units")
    else:
        for start in range(0, len(codes), BATCH):
            chunk = codes[start:start + BATCH]
            conn.execute(delete(table).where(or_(table.c.unit_a.in_(chunk), table.c.unit_b.in_(chunk))))
        minx, miny, maxx, maxy = units.total_bounds
        pad = 0.001
        pool = read_layer(conn, "units", bbox=(minx - pad, miny - pad, maxx + pad, maxy + pad))
    pairs = topology.rook_pairs(pool)
    a = pool["code"].to_numpy()[pairs["i"]]
    b = pool["code"].to_numpy()[pairs["j"]]
    if not full:
        imported = (pd.Series(a).isin(codes) | pd.Series(b).isin(codes)).to_numpy()  # hashed, not O(n·m)
        a, b, shared = a[imported], b[imported], pairs["shared_m"][imported]
    else:
        shared = pairs["shared_m"]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    district = pool.set_index("code")["district_code"].reindex(lo).to_numpy()
    records = [{"unit_a": x, "unit_b": y, "shared_m": float(s), "district_code": d}
               for x, y, s, d in zip(lo, hi, shared, district, strict=True)]
    for start in range(0, len(records), BATCH):
        conn.execute(insert(table), records[start:start + BATCH])
    return len(records)


Resolver = Callable[[pd.DataFrame, np.ndarray, list[str], "ImportReport"], None]
Against = Callable[[pd.DataFrame, np.ndarray, "Source", list[str]], None]


def prepare(spec: LayerSpec, gdf: gpd.GeoDataFrame, *, declared_crs=None,
            mapping: dict[str, str] | None = None, values: dict[str, dict[str, str]] | None = None,
            unmapped: str = "refuse", district: str | None = None, number: bool = False,
            resolve: Resolver | None = None, limits: ValueLimits | None = None,
            against: Against | None = None) -> tuple[gpd.GeoDataFrame, ImportReport]:
    """Check and convert a read file into the layer's fields in EPSG:4326.

    ``values`` translates the values of fields (``{"kind": {"幼儿园": "kindergarten"}}``);
    ``unmapped`` says what to do with values no mapping covers (``refuse`` or ``skip``).
    ``district`` fills an empty ``district_code``. ``number`` numbers the features of a file
    without codes, in layers whose codes are not official (:data:`NUMBER_PREFIX`).
    ``resolve(frame, geometries, problems, report)`` may fill codes from names before the checks
    (the only step that reads the database).
    ``limits`` bounds the values (:class:`ValueLimits`, the defaults when not given);
    ``against(frame, geometries, source, problems)`` checks the result against what is stored
    (parents, place) with the other checks, before anything is refused.
    Raises :class:`ImportRefused` naming every problem found.
    """
    limits = limits or ValueLimits()
    report = ImportReport(spec.name, "", "")
    if unmapped not in UNMAPPED:
        raise ImportRefused(_("unknown --unmapped {unmapped}: use {p2}",
                              unmapped=repr(unmapped), p2=' or '.join(UNMAPPED)))
    rename, report.ignored_fields = _mapped_columns(spec, gdf, mapping or {})
    source = Source(declared_crs if declared_crs is not None else gdf.crs,
                    np.asarray(gdf.geometry.values, dtype=object))
    try:
        gdf = crs_mod.to_wgs84(gdf, declared_crs)
    except ValueError as exc:
        raise ImportRefused(str(exc)) from None
    frame = pd.DataFrame(gdf.drop(columns=gdf.geometry.name)).rename(columns=rename)
    extra = [c for c in NAME_FIELDS.get(spec.name, {}) if c in frame.columns]
    frame = frame[[c for c in frame.columns if c in spec.field_names or c in extra]]
    problems: list[str] = []
    names = {c: as_text(frame[c]) for c in extra}
    if number and spec.name in NUMBER_PREFIX and "code" not in frame.columns:
        frame["code"] = [f"{NUMBER_PREFIX[spec.name]}{i + 1:07d}" for i in range(len(frame))]
    reported: set[tuple[int, str]] = set()
    frame = _coerce(spec, frame, problems, value_maxima(limits), reported)
    for c, col in names.items():
        frame[c] = col
    if values:
        keep = _apply_values(spec, frame, values, rename, unmapped, problems, report.skipped)
        if not keep.all():
            frame = frame[keep]
            gdf = gdf[keep]
            source.geoms = source.geoms[keep]
            if frame.empty and not problems:
                problems.append("every row was left out: no value of the file has a mapping")
    if "location_precision" in frame.columns:
        bad = frame["location_precision"].notna() & ~frame["location_precision"].isin(LOCATION_PRECISIONS)
        for r in np.flatnonzero(bad.to_numpy())[:20] + 1:
            problems.append(f"row {r}: location_precision {frame['location_precision'].iloc[r - 1]!r} is not "
                            f"{' or '.join(LOCATION_PRECISIONS)} (map it with --values)")
        report.approximate = int((frame["location_precision"] == "approximate").sum())
    if resolve is not None:  # names into codes, so that what the checks say is about the codes
        resolve(frame, np.asarray(gdf.geometry.values, dtype=object), problems, report)
    frame = frame.drop(columns=[c for c in extra if c in frame.columns])
    _derive_district(frame, spec)
    if district and "district_code" in frame.columns:
        frame["district_code"] = frame["district_code"].fillna(district)
    _check_values(spec, frame, problems, reported)
    geoms = _check_geometry(spec, gdf, problems, report.repaired)
    if against is not None:
        against(frame, geoms, source, problems)
    if problems:
        raise ImportRefused(problems)
    if "households" in frame.columns and "population" in spec.field_names:
        _estimate_population(frame, limits, report)
    _fill_defaults(spec, frame)
    if "provisional" in spec.field_names and "provisional" in frame.columns:
        frame["provisional"] = frame["provisional"].fillna(False).astype(bool)
    out = gpd.GeoDataFrame(frame.reset_index(drop=True),
                           geometry=gpd.GeoSeries(geoms, crs=crs_mod.WGS84), crs=crs_mod.WGS84)
    report.rows = len(out)
    return out, report


# --- names without codes ----------------------------------------------------------------


def check_district(engine: Engine | Connection, district: str | None) -> None:
    """Refuse a ``--district`` that is not a 6-digit code, or not one of the stored districts
    (when any are stored)."""
    if district is None:
        return
    if not is_code(str(district), 6):
        raise ImportRefused(_("--district {district} is not a 6-digit district code (e.g. 420503)",
                              district=repr(district)))
    stored = read_layer(engine, "districts")
    if len(stored) and district not in set(stored["code"]):
        listed = ", ".join(f"{c} {n}" for c, n in zip(stored["code"], stored["name"], strict=True))
        raise ImportRefused(_("unknown district {district}: the stored districts are {listed}",
                              district=district, listed=listed))


def _ensure(frame: pd.DataFrame, *columns: str) -> None:
    for c in columns:
        if c not in frame.columns:
            frame[c] = pd.Series([None] * len(frame), index=frame.index, dtype=object)


def _resolve_streets(engine: Engine, district: str | None, frame: pd.DataFrame, geoms: np.ndarray,
                     problems: list[str], report: ImportReport) -> None:
    """Streets given by name: the stored code of the same name in the same district, or the next
    free provisional code under the district."""
    _ensure(frame, "code", "district_code", "provisional")
    missing = frame["code"].isna().to_numpy()
    if not missing.any() or "name" not in frame.columns:
        return
    parent = frame["district_code"].fillna(district) if district else frame["district_code"]
    rows = np.arange(1, len(frame) + 1)
    orphan = missing & parent.isna().to_numpy()
    if orphan.any():
        problems.append(f"{int(orphan.sum())} streets have no code and no district to give them a "
                        "provisional code under: name the district with --district (e.g. --district 420503)")
        return
    stored = read_layer(engine, "streets")
    taken = set(stored["code"]) | set(frame["code"].dropna())
    known = {(d, naming.normalise(n)): (c, bool(p)) for c, n, d, p in zip(
        stored["code"], stored["name"], stored["district_code"], stored["provisional"], strict=True)}
    codes = frame["code"].to_numpy(dtype=object).copy()
    flags = frame["provisional"].to_numpy(dtype=object).copy()
    for i in np.flatnonzero(missing):
        name = naming.normalise(frame["name"].iloc[i])
        if name is None:
            continue  # the required-field check names it
        hit = known.get((parent.iloc[i], name))
        if hit and hit[0] not in codes:
            codes[i], flags[i] = hit
            continue
        try:
            (code,) = naming.next_codes(parent.iloc[i], taken, 1)
        except ValueError as exc:
            problems.append(f"row {rows[i]}: {exc}")
            continue
        taken.add(code)
        codes[i], flags[i] = code, True
        report.provisional.append(code)
    frame["code"], frame["provisional"] = codes, flags
    frame["district_code"] = frame["district_code"].fillna(parent)


def street_by_area(geoms: np.ndarray, streets: gpd.GeoDataFrame) -> np.ndarray:
    """The code of the street holding most of each polygon's area (None: in no street)."""
    out = np.full(len(geoms), None, dtype=object)
    if len(geoms) == 0 or streets.empty:
        return out
    metric = crs_mod.metric_crs_for(streets)
    street_m = np.asarray(streets.to_crs(metric).geometry.values, dtype=object)
    mine = np.asarray(gpd.GeoSeries(geoms, crs=crs_mod.WGS84).to_crs(metric).values, dtype=object)
    i, j = shapely.STRtree(street_m).query(mine, predicate="intersects")
    if len(i) == 0:
        return out
    area = shapely.area(shapely.intersection(mine[i], street_m[j]))
    order = np.lexsort((-area, i))
    first = np.ones(len(order), dtype=bool)
    first[1:] = i[order][1:] != i[order][:-1]
    best = order[first & (area[order] > 0)]
    out[i[best]] = streets["code"].to_numpy(dtype=object)[j[best]]
    return out


def _resolve_communities(engine: Engine, district: str | None, frame: pd.DataFrame, geoms: np.ndarray,
                         problems: list[str], report: ImportReport) -> None:
    """Communities given by name: their street by code, by name (matched with and without its
    suffix) or by area; then the stored code of the same name in that street, or a provisional
    code under it."""
    _ensure(frame, "code", "street_code", "provisional")
    known_problems = len(problems)
    rows = np.arange(1, len(frame) + 1)
    valid_code = frame["code"].map(lambda v: v is not None and is_code(v, 12))
    from_code = frame["street_code"].isna() & valid_code
    frame.loc[from_code, "street_code"] = frame.loc[from_code, "code"].str[:9]  # codes nest
    need = frame["street_code"].isna().to_numpy()
    if need.any():
        streets = read_layer(engine, "streets", prefix={"code": district} if district else None)
        if streets.empty:
            problems.append("the communities name no street code and no streets are stored"
                            + (f" in district {district}" if district else "")
                            + ": import the streets first")
            return
        names = frame["street"] if "street" in frame.columns else pd.Series(None, index=frame.index)
        by_name = need & names.notna().to_numpy()
        if by_name.any():
            found = naming.match_names(names[by_name], streets[["code", "name"]], naming.STREET_SUFFIXES)
            label = dict(zip(streets["code"], streets["name"], strict=True))
            for name, codes in found.ambiguous.items():
                problems.append(f"street name {name!r} is ambiguous: it matches "
                                + ", ".join(f"{c} {label[c]}" for c in codes))
            for name in found.unmatched:
                problems.append(f"street name {name!r} matches no stored street (streets: "
                                + ", ".join(sorted(set(streets["name"])))[:300] + ")")
            frame.loc[by_name, "street_code"] = found.codes
            report.matched_by_stem.update(found.by_stem)
        by_area = need & ~by_name
        if by_area.any():
            placed = street_by_area(geoms[by_area], streets)
            for r in rows[by_area][pd.isna(placed)][:20]:
                problems.append(f"row {r}: names no street and lies in no stored street")
            frame.loc[by_area, "street_code"] = placed
            report.placed_by_area = int(pd.notna(placed).sum())
    missing = (frame["code"].isna() & frame["street_code"].notna()).to_numpy()
    if len(problems) > known_problems or not missing.any() or "name" not in frame.columns:
        return
    parents = sorted(set(frame.loc[missing, "street_code"]))
    stored = read_layer(engine, "communities", isin={"street_code": parents})
    history = CommunityHistory.__table__
    with engine.connect() as conn:
        retired = set(conn.execute(select(history.c.code).where(
            or_(*[history.c.code.startswith(p, autoescape=True) for p in parents]))).scalars())
    taken = set(stored["code"]) | retired | set(frame["code"].dropna())
    known = {(s, naming.normalise(n)): (c, bool(p)) for c, n, s, p in zip(
        stored["code"], stored["name"], stored["street_code"], stored["provisional"], strict=True)}
    codes = frame["code"].to_numpy(dtype=object).copy()
    flags = frame["provisional"].to_numpy(dtype=object).copy()
    for i in np.flatnonzero(missing):
        street, name = frame["street_code"].iloc[i], naming.normalise(frame["name"].iloc[i])
        if name is None:
            continue
        hit = known.get((street, name))
        if hit and hit[0] not in codes:
            codes[i], flags[i] = hit
            continue
        try:
            (code,) = naming.next_codes(street, taken, 1)
        except ValueError as exc:
            problems.append(f"row {rows[i]}: {exc}")
            continue
        taken.add(code)
        codes[i], flags[i] = code, True
        report.provisional.append(code)
    frame["code"], frame["provisional"] = codes, flags


def community_at(engine: Engine | Connection, points: np.ndarray) -> np.ndarray:
    """The code of the stored community each point lies in (None: in none)."""
    out = np.full(len(points), None, dtype=object)
    present = ~(shapely.is_missing(points) | shapely.is_empty(points)) if len(points) else np.zeros(0, bool)
    if not present.any():
        return out
    minx, miny, maxx, maxy = shapely.total_bounds(points[present])
    communities = read_layer(engine, "communities", bbox=(minx, miny, maxx, maxy))
    if communities.empty:
        return out
    i, j = shapely.STRtree(np.asarray(communities.geometry.values)).query(points, predicate="within")
    _, first = np.unique(i, return_index=True)
    out[i[first]] = communities["code"].to_numpy(dtype=object)[j[first]]
    return out


def _resolve_points(engine: Engine, district: str | None, frame: pd.DataFrame, geoms: np.ndarray,
                    problems: list[str], report: ImportReport) -> None:
    """Facilities and incidents: the community of those without one, by location; approximate
    incidents are placed in no cell."""
    if "community_code" not in get_layer(report.layer).field_names:
        return
    _ensure(frame, "community_code")
    approximate = (frame["location_precision"] == "approximate").to_numpy() \
        if "location_precision" in frame.columns else np.zeros(len(frame), dtype=bool)
    if "grid_code" in frame.columns:
        frame.loc[approximate, "grid_code"] = None
        from_cell = frame["community_code"].isna() & frame["grid_code"].notna()
        frame.loc[from_cell, "community_code"] = frame.loc[from_cell, "grid_code"].str[:12]
    need = frame["community_code"].isna().to_numpy()
    if need.any():
        frame.loc[need, "community_code"] = community_at(engine, geoms[need])


def _resolver(engine: Engine, layer: str, district: str | None) -> Resolver | None:
    step = {"streets": _resolve_streets, "communities": _resolve_communities,
            "facilities": _resolve_points, "incidents": _resolve_points}.get(layer)
    if step is None:
        return None
    return lambda frame, geoms, problems, report: step(engine, district, frame, geoms, problems, report)


def check_source(
    engine: Engine,
    layer: str,
    raw: gpd.GeoDataFrame,
    *,
    declared_crs=None,
    mapping: dict[str, str] | None = None,
    district: str | None = None,
    values: dict[str, dict[str, str]] | None = None,
    unmapped: str = "refuse",
    number: bool = False,
) -> tuple[gpd.GeoDataFrame, ImportReport]:
    """Every check of an import on a file already read, nothing written: names resolved into
    codes (streets and communities by name get their stored code, or a provisional one under
    ``district`` or their street), then :func:`prepare`. The command line's import and the layers
    page's preview both run this, so they accept and refuse the same files with the same messages.
    Raises :class:`ImportRefused` naming every problem found."""
    check_district(engine, district)
    spec, limits = get_layer(layer), read_limits(engine)

    def against(frame: pd.DataFrame, geoms: np.ndarray, source: Source, problems: list[str]) -> None:
        _check_parents(engine, spec, frame, problems)
        known = len(problems)
        _check_place(engine, spec, geoms, source, limits, problems)
        if len(problems) == known:  # a file in the wrong place is named once, not row by row
            _check_near_parent(engine, spec, frame, geoms, problems)

    return prepare(spec, raw, declared_crs=declared_crs, mapping=mapping, values=values,
                   unmapped=unmapped, district=district, number=number,
                   resolve=_resolver(engine, layer, district), limits=limits, against=against)


def retired_communities(conn: Connection, codes: set[str]) -> set[str]:
    """Of ``codes``, the communities that are no longer current but were once (in the community
    history): a file naming them was made before an adoption or import retired them, and writing
    it would put units into communities that no longer exist."""
    once = values_among(conn, CommunityHistory.__table__.c.code, codes)
    return once - existing_codes(conn, "communities", once) if once else set()


class StaleFile(ImportRefused):
    """A file exported before later boundary changes, which importing would undo; ``communities``
    lists the communities it would change."""

    def __init__(self, problems: list[str] | str, communities: list[str]) -> None:
        super().__init__(problems)
        self.communities = communities


def stale_units(conn: Connection, units: gpd.GeoDataFrame, revision: int | None) -> StaleFile | None:
    """Whether the units of a file exported at boundary ``revision`` would undo later changes:
    units whose community in the file is not their stored one, in streets a change after
    ``revision`` touched (an adoption, an import, a code table). The refusal to raise, or None.

    A file without a revision (another department's) is never stale: its differences are edits."""
    if revision is None or units.empty or "community_code" not in units.columns:
        return None
    changes = changes_since(conn, revision)
    if not changes:
        return None
    every = any(c["streets"] is None for c in changes)
    streets = {s for c in changes for s in (c["streets"] or [])}
    wanted = {code: (None if pd.isna(cc) else cc) for code, cc in zip(units["code"], units["community_code"],
                                                                      strict=True)}
    table = Unit.__table__
    codes = list(wanted)
    moved: list[tuple[str, str | None, str | None]] = []
    for start in range(0, len(codes), BATCH):
        stored = conn.execute(select(table.c.code, table.c.community_code, table.c.street_code)
                              .where(table.c.code.in_(codes[start:start + BATCH])))
        for code, now, street in stored:
            if wanted[code] != now and (every or street in streets):
                moved.append((code, wanted[code], now))
    if not moved:
        return None
    touched = sorted({c for _code, new, old in moved for c in (new, old) if c})
    names = dict(conn.execute(select(CommunityHistory.__table__.c.code, CommunityHistory.__table__.c.name)
                              .where(CommunityHistory.__table__.c.code.in_(touched[:BATCH]))).all())
    names.update(conn.execute(select(Community.__table__.c.code, Community.__table__.c.name)
                              .where(Community.__table__.c.code.in_(touched[:BATCH]))).all())
    listed = ", ".join(f"{c} {names[c]}" if names.get(c) else c for c in touched[:10])
    if len(touched) > 10:
        listed += " " + _("… and {n} more", n=len(touched) - 10)
    actions = ", ".join(sorted({c["action"] for c in changes}))
    return StaleFile(_("the file was exported at boundary revision {revision}; the boundaries changed "
                       "since (now revision {now}: {actions}), and importing it would move {n} units back "
                       "into other communities, changing {count} communities: {communities}. Export the "
                       "units again and edit that export, or import anyway with --force (on the layers "
                       "page: Import anyway)",
                       revision=revision, now=changes[-1]["revision"], actions=actions, n=len(moved),
                       count=len(touched), communities=listed), touched)


def import_layer(
    engine: Engine,
    layer: str,
    path: str | Path,
    *,
    mode: str = "append",
    crs: str | int | None = None,
    mapping: dict[str, str] | None = None,
    actor: str = "cli",
    max_unzipped_bytes: int = MAX_UNZIPPED_BYTES,
    progress: Callable[[int, int], None] | None = None,
    district: str | None = None,
    values: dict[str, dict[str, str]] | None = None,
    unmapped: str = "refuse",
    number: bool = False,
    source_layer: str | None = None,
    force: bool = False,
) -> ImportReport:
    """Import ``path`` into ``layer``; one transaction, all or nothing.

    ``mode``: ``append`` refuses codes already stored or repeated; ``replace`` swaps the whole
    layer; ``update`` updates the features matched by code and refuses unknown codes.
    ``crs`` declares the source CRS (``EPSG:4490``, ``GCJ02`` …) over the file's own.
    ``mapping`` renames source fields to layer fields (``{"HH": "households"}``; a community's
    ``street`` field holds its street's name).
    ``district`` is the district streets and communities without codes lie in: they get
    provisional codes under it. ``values`` maps the source's values of a field to gridplan's
    (``{"kind": {"幼儿园": "kindergarten"}}``); rows whose value has no mapping are refused, or
    left out with ``unmapped="skip"``. ``number`` numbers a file without codes (roads, facilities …).
    ``progress(written, total)`` is called after every batch of inserts.
    ``source_layer`` is the layer of a GeoPackage of several to read. A units file exported by
    gridplan before later boundary changes that it would undo is refused (:func:`stale_units`)
    unless ``force``.
    """
    get_layer(layer)  # an unknown layer is refused before the file is read
    if mode not in MODES:
        raise ImportRefused(_("unknown mode {mode}: use {p2}", mode=repr(mode), p2=', '.join(MODES)))
    try:
        declared = crs_mod.parse_crs(crs)
    except ValueError as exc:
        raise ImportRefused(str(exc)) from None
    check_district(engine, district)
    with tempfile.TemporaryDirectory(prefix="gridplan-import-") as tmp:
        raw = read_source(path, declared_crs=declared, workdir=Path(tmp),
                          max_unzipped_bytes=max_unzipped_bytes, source_layer=source_layer)
    exported_at = file_revision(raw)
    if raw.empty:
        raise ImportRefused(_("{name} holds no features", name=Path(path).name))
    gdf, report = check_source(engine, layer, raw, declared_crs=declared, mapping=mapping, values=values,
                               unmapped=unmapped, district=district, number=number)
    report.mode, report.source = mode, Path(path).name
    codes = gdf["code"].tolist()
    with engine.begin() as conn:
        # the boundary revision's lock first, before any read: imports queue behind an adoption
        # (and it behind them) instead of deadlocking on units' rows, and on SpatiaLite the
        # transaction holds the write lock before it reads what it checks
        lock_revision(conn)
        if layer == "units" and "community_code" in gdf.columns:
            retired = retired_communities(conn, set(gdf["community_code"].dropna()))
            if retired:
                raise ImportRefused(_("{n} units name communities that were retired since (an adoption or "
                                      "an import replaced them): {p2}; export the units again and edit that",
                                      n=int(gdf["community_code"].isin(retired).sum()),
                                      p2=', '.join(sorted(retired)[:20])))
        if layer == "units" and mode in ("update", "replace") and not force:
            stale = stale_units(conn, gdf, exported_at)
            if stale:
                raise stale
        if mode == "append":
            clash = existing_codes(conn, layer, codes)
            if clash:
                raise ImportRefused(_("{n_clash} codes already stored in {layer} (use --mode update or "
                                      "replace): {p3}",
                                      n_clash=len(clash), layer=layer, p3=', '.join(sorted(clash)[:20])))
        elif mode == "update":
            known = existing_codes(conn, layer, codes)
            unknown = [c for c in codes if c not in known]
            if unknown:
                raise ImportRefused(_("{n_unknown} codes are not stored in {layer}, so there is nothing to "
                                      "update: {p3}",
                                      n_unknown=len(unknown), layer=layer, p3=', '.join(unknown[:20])))
        done = [0]

        def tick(k: int) -> None:
            done[0] += k
            if progress:
                progress(done[0], len(gdf))

        if mode in ("replace", "update"):
            # only what differs from what is stored is written: a file exported and imported
            # back unchanged writes nothing, raises no boundary revision and stales no plan
            _write_differences(conn, layer, gdf, mode, actor, report, tick)
        else:
            report.written = write_layer(conn, layer, gdf, mode=mode, progress=tick)
            if layer == "units":
                report.adjacency_pairs = store_adjacency(conn, gdf, full=False)
            if layer in ("units", "communities"):  # what processes hold in memory about them is stale now
                report.revision = raise_revision(
                    conn, f"import:{layer}", actor=actor, streets=set(gdf["street_code"].dropna()),
                    communities=set(codes) if layer == "communities" else set(
                        gdf["community_code"].dropna()) if "community_code" in gdf.columns else None)
        conn.execute(insert(AuditLog.__table__).values(
            at=datetime.now(), actor=actor, action=f"import:{mode}", layer=layer,
            detail={"source": report.source, "written": report.written,
                    "repaired": len(report.repaired), "exported_at": exported_at, "forced": force}))
        pause_for_fault_tests("import")
    return report


def _write_differences(conn: Connection, layer: str, gdf: gpd.GeoDataFrame, mode: str, actor: str,
                       report: ImportReport, tick: Callable[[int], None]) -> None:
    """The write of an ``update`` or ``replace``: only the rows that differ from the stored ones
    (and, replacing, the removal of those the file leaves out); the boundary revision is raised
    only when units or communities changed, naming the streets and communities that did (before
    and after: a community moved to another street changes both)."""
    changes = compare_with_stored(conn, layer, gdf, mode)
    report.deleted = len(changes.removed) + int((changes.changed & changes.stored).sum()) \
        if mode == "replace" else 0
    if not changes.any:
        tick(len(gdf))
        return
    rows = gdf[changes.changed]
    old_codes = [c for c in changes.before if c in set(rows["code"])] + changes.removed
    if layer == "communities":
        keep_community_history(conn, codes=old_codes)
    report.written = write_changes(conn, layer, gdf, changes, mode=mode, progress=tick)
    if layer == "units":
        report.adjacency_pairs = store_adjacency(conn, rows, full=False) if mode == "update" or not \
            changes.removed else store_adjacency(conn, gdf, full=True)
    if layer not in ("units", "communities"):
        return
    streets = set(rows["street_code"].dropna()) | {b["street_code"] for b in changes.before.values()
                                                   if b.get("street_code")}
    if layer == "communities":
        communities = set(rows["code"]) | set(changes.removed)
    else:
        new = set(rows["community_code"].dropna()) if "community_code" in rows.columns else set()
        communities = new | {b["community_code"] for b in changes.before.values() if b.get("community_code")}
    report.revision = raise_revision(conn, f"import:{layer}", actor=actor, streets=streets,
                                     communities=communities)


__all__ = ["ImportRefused", "ImportReport", "LayerChoice", "StaleFile", "TooLarge", "check_district",
           "check_source", "community_at", "file_revision", "gpkg_layers", "import_layer", "parse_values",
           "prepare", "read_source", "stale_units", "store_adjacency", "street_by_area"]
