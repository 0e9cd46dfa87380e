"""Reading a layer's file safely: a shapefile zip, GeoPackage, GeoJSON or CSV (lon/lat or WKT).

What an import reads first, before any mapping or check (:mod:`geodata.importer`): an archive
is unpacked only when every member is safe (no path outside the folder, no zip bomb, sizes within
the limits, a shapefile table's declared size checked in its header), a shapefile's text encoding
is found from its ``.cpg`` or its text, a GeoPackage's own tables are inspected before GDAL opens
it, and the boundary revision a gridplan export was made at is read back
(:func:`file_revision`). Anything unsafe or unreadable is refused with :class:`ImportRefused`
naming the problem.

>>> gdf = read_source("units.zip", declared_crs=None, workdir=Path(tmp))
"""

from __future__ import annotations

import codecs
import csv
import json
import mmap
import os
import re
import sqlite3
import stat
import struct
import time
import zipfile
import zlib
from io import StringIO
from pathlib import Path, PurePosixPath

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely

from geodata import crs as crs_mod
from geodata.errors import Refused
from geodata.exporter import REVISION_COLUMN, REVISION_KEY, REVISION_MEMBER, REVISION_SIDECAR
from geodata.i18n import _
from geodata.text_tables import decode_text

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
VECTOR_SUFFIXES = (".shp", ".gpkg", ".geojson", ".json", ".csv")

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
    text = decode_text(raw)
    if text is None:
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



__all__ = ["MAX_UNZIPPED_BYTES", "VECTOR_SUFFIXES", "ImportRefused", "LayerChoice", "TooLarge",
           "file_revision", "gpkg_layers", "read_source"]
