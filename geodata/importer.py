"""Import a layer from a shapefile zip, GeoPackage, GeoJSON or CSV (lon/lat or WKT).

An import reads and checks the whole file first — archive safety, coordinate system, field
mapping, types, codes, geometry — and refuses it with every problem named (row numbers count
features from 1) before anything is written. The write is one transaction: a refused or failed
import leaves the database exactly as it was.

>>> report = import_layer(engine, "units", "units.zip", mode="append", crs="EPSG:4490")
"""

from __future__ import annotations

import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from io import StringIO
from pathlib import Path, PurePosixPath

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from sqlalchemy import Connection, Engine, delete, func, insert, or_, select

from geodata import crs as crs_mod
from geodata import topology
from geodata.catalog import LayerSpec, as_text, get_layer, is_code
from geodata.db import BATCH
from geodata.errors import Refused
from geodata.models import AuditLog, UnitAdjacency
from geodata.revisions import raise_revision
from geodata.store import existing_codes, keep_community_history, read_layer, write_layer

#: An archive may not expand past this (zip bombs); callers may lower it.
MAX_UNZIPPED_BYTES = 4 * 1024**3
#: A repaired polygon may change its area by less than this share.
MAX_REPAIR_AREA_CHANGE = 0.01
MODES = ("append", "replace", "update")
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
        return "\n".join(lines)


# --- reading ------------------------------------------------------------------------------


def _safe_extract(archive: Path, target: Path, max_bytes: int) -> None:
    """Extract ``archive`` into ``target``, refusing unsafe paths and runaway sizes."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ImportRefused(f"{archive.name} is not a readable zip archive ({exc})") from None
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        for m in members:
            path = PurePosixPath(m.filename.replace("\\", "/"))
            if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
                raise ImportRefused(f"zip entry {m.filename!r} points outside the archive")
        declared = sum(m.file_size for m in members)
        if declared > max_bytes:
            raise ImportRefused(f"{archive.name} expands to {declared:,} bytes, over the limit "
                                f"of {max_bytes:,}")
        written = 0
        for m in members:
            if m.filename.startswith("__MACOSX/") or PurePosixPath(m.filename).name.startswith("._"):
                continue  # macOS resource forks, not data
            dest = target / m.filename.replace("\\", "/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(m) as src, open(dest, "wb") as out:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > max_bytes:  # sizes in the header can lie
                            raise ImportRefused(f"{archive.name} expands past the limit of "
                                                f"{max_bytes:,} bytes")
                        out.write(chunk)
            except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
                raise ImportRefused(f"{archive.name} is damaged: {m.filename} cannot be read "
                                    f"({exc})") from None


def _find_dataset(folder: Path, archive: Path) -> Path:
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in VECTOR_SUFFIXES
                   and "__MACOSX" not in p.parts)
    if not found:
        raise ImportRefused(f"{archive.name} holds no shapefile, GeoPackage, GeoJSON or CSV")
    shapefiles = [p for p in found if p.suffix.lower() == ".shp"]
    candidates = shapefiles or found
    if len(candidates) > 1:
        names = ", ".join(p.name for p in candidates)
        raise ImportRefused(f"{archive.name} holds several datasets ({names}): import one at a time")
    return candidates[0]


def _sibling(path: Path, suffix: str) -> Path | None:
    for p in path.parent.iterdir():
        if p.stem == path.stem and p.suffix.lower() == suffix:
            return p
    return None


def _read_shapefile(path: Path, declared) -> gpd.GeoDataFrame:
    missing = [s for s in (".shx", ".dbf") if _sibling(path, s) is None]
    if missing:
        raise ImportRefused(f"shapefile {path.name} is incomplete: missing {', '.join(missing)}")
    if _sibling(path, ".prj") is None and declared is None:
        raise ImportRefused(f"shapefile {path.name} has no .prj: its coordinate system is unknown; "
                            "declare it with --crs (e.g. EPSG:4490)")
    cpg = _sibling(path, ".cpg")
    encoding = None
    if cpg is None:
        # Without a .cpg, GDAL assumes Latin-1; Chinese files are UTF-8 or GBK (ArcGIS's guess).
        encoding = "UTF-8" if _dbf_is_utf8(_sibling(path, ".dbf")) else "GBK"
    return pyogrio.read_dataframe(path, encoding=encoding)


def _dbf_is_utf8(dbf: Path) -> bool:
    try:
        dbf.read_bytes().decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _read_csv(path: Path) -> gpd.GeoDataFrame:
    raw = path.read_bytes()
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = raw.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise ImportRefused(f"{path.name} is neither UTF-8 nor GBK text")
    try:
        frame = pd.read_csv(StringIO(text), dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ImportRefused(f"{path.name} is not a readable CSV file ({exc})") from None
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
            raise ImportRefused(f"column {wkt}: unreadable WKT ({exc})") from None
        frame = frame.drop(columns=[wkt])
    else:
        raise ImportRefused(f"{path.name} has no lon/lat columns (lon, lng, longitude / lat, "
                            "latitude) and no WKT column")
    return gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries(geoms, index=frame.index), crs=None)


def read_source(path: str | Path, *, declared_crs=None, workdir: Path,
                max_unzipped_bytes: int = MAX_UNZIPPED_BYTES) -> gpd.GeoDataFrame:
    """Read a vector file (or a zip holding one) into a GeoDataFrame in its own CRS.

    CSV without a declared CRS is taken as WGS 84 longitude/latitude.
    """
    path = Path(path)
    if not path.exists():
        raise ImportRefused(f"{path} does not exist")
    if path.suffix.lower() == ".zip" or zipfile.is_zipfile(path) and path.suffix.lower() not in (
            ".gpkg", ".xlsx"):
        if not zipfile.is_zipfile(path):
            raise ImportRefused(f"{path.name} is not a readable zip archive")
        _safe_extract(path, workdir, max_unzipped_bytes)
        source = _find_dataset(workdir, path)
    else:
        source = path
    suffix = source.suffix.lower()
    try:
        if suffix == ".shp":
            gdf = _read_shapefile(source, declared_crs)
        elif suffix == ".csv":
            gdf = _read_csv(source)
            if gdf.crs is None and declared_crs is None:
                gdf = gdf.set_crs(crs_mod.WGS84)
        elif suffix in (".gpkg", ".geojson", ".json"):
            gdf = pyogrio.read_dataframe(source)
        else:
            raise ImportRefused(f"{path.name}: unknown format {suffix!r}; use a shapefile zip, "
                                ".gpkg, .geojson or .csv")
    except ImportRefused:
        raise
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError,
            shapely.errors.GEOSException) as exc:
        raise ImportRefused(f"{source.name} cannot be read: {exc}") from None
    return gdf


# --- checking ------------------------------------------------------------------------------


def _mapped_columns(spec: LayerSpec, gdf: gpd.GeoDataFrame, mapping: dict[str, str]) -> tuple[dict, list]:
    """Source column → layer field, and the source columns left over."""
    problems = []
    for src, dst in mapping.items():
        if src not in gdf.columns:
            problems.append(f"field {src!r} named in --map is not in the file "
                            f"(fields: {', '.join(map(str, gdf.columns.drop('geometry')))})")
        if dst not in spec.field_names:
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


def _coerce(spec: LayerSpec, frame: pd.DataFrame, problems: list[str]) -> pd.DataFrame:
    out = pd.DataFrame(index=frame.index)
    rows = np.arange(1, len(frame) + 1)
    for f in spec.fields:
        if f.name not in frame.columns:
            continue
        col = frame[f.name]
        if f.dtype == "str":
            out[f.name] = as_text(col)
            continue
        present = col.notna() & ~(col.astype(str).str.strip() == "")
        if f.dtype in ("int", "float"):
            values = pd.to_numeric(col.where(present), errors="coerce")
            bad = present & values.isna()
            if f.dtype == "int":
                bad |= values.notna() & (values % 1 != 0)
            for r in rows[bad.to_numpy()][:20]:
                problems.append(f"row {r}: {f.name} = {col.iloc[r - 1]!r} is not "
                                f"{'a whole number' if f.dtype == 'int' else 'a number'}")
            out[f.name] = values.astype("Int64") if f.dtype == "int" else values
        else:
            values = pd.to_datetime(col.where(present), errors="coerce", format="mixed")
            if getattr(values.dt, "tz", None) is not None:
                values = values.dt.tz_convert("Asia/Shanghai").dt.tz_localize(None)
            for r in rows[(present & values.isna()).to_numpy()][:20]:
                problems.append(f"row {r}: {f.name} = {col.iloc[r - 1]!r} is not a date")
            out[f.name] = values.dt.date if f.dtype == "date" else values
            out[f.name] = out[f.name].astype(object).where(values.notna(), None)
        if f.dtype == "int":
            out[f.name] = out[f.name].astype(object).where(out[f.name].notna(), None)
    return out


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


def _check_values(spec: LayerSpec, frame: pd.DataFrame, problems: list[str]) -> None:
    rows = np.arange(1, len(frame) + 1)
    for f in spec.fields:
        if f.name not in frame.columns:
            if f.required:
                problems.append(f"missing required field {f.name!r} ({f.label})")
            continue
        col = frame[f.name]
        if f.required or (f.name == "district_code"):
            for r in rows[col.isna().to_numpy()][:20]:
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
    if "households" in frame.columns:
        negative = frame["households"].map(lambda v: v is not None and v < 0)
        for r in rows[negative.to_numpy()][:20]:
            problems.append(f"row {r}: households is negative")
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
    if present.any():
        bounds = shapely.bounds(geoms[present])
        inside = ((bounds[:, 0] >= -180) & (bounds[:, 2] <= 180) & (bounds[:, 1] >= -90)
                  & (bounds[:, 3] <= 90) & np.isfinite(bounds).all(axis=1))
        coords_ok[present] = inside
        for r in rows[~coords_ok][:20]:
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


# --- writing -------------------------------------------------------------------------------


def _store_adjacency(conn: Connection, units: gpd.GeoDataFrame, full: bool) -> int:
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
        imported = np.isin(a, codes) | np.isin(b, codes)
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


def prepare(spec: LayerSpec, gdf: gpd.GeoDataFrame, *, declared_crs=None,
            mapping: dict[str, str] | None = None) -> tuple[gpd.GeoDataFrame, ImportReport]:
    """Check and convert a read file into the layer's fields in EPSG:4326 (no database access).

    Raises :class:`ImportRefused` naming every problem found.
    """
    report = ImportReport(spec.name, "", "")
    rename, report.ignored_fields = _mapped_columns(spec, gdf, mapping or {})
    try:
        gdf = crs_mod.to_wgs84(gdf, declared_crs)
    except ValueError as exc:
        raise ImportRefused(str(exc)) from None
    frame = pd.DataFrame(gdf.drop(columns=gdf.geometry.name)).rename(columns=rename)
    frame = frame[[c for c in frame.columns if c in spec.field_names]]
    problems: list[str] = []
    frame = _coerce(spec, frame, problems)
    _derive_district(frame, spec)
    _check_values(spec, frame, problems)
    geoms = _check_geometry(spec, gdf, problems, report.repaired)
    if problems:
        raise ImportRefused(problems)
    if "households" in frame.columns and "population" in spec.field_names:
        if "population" not in frame.columns:
            frame["population"] = None
    out = gpd.GeoDataFrame(frame.reset_index(drop=True),
                           geometry=gpd.GeoSeries(geoms, crs=crs_mod.WGS84), crs=crs_mod.WGS84)
    report.rows = len(out)
    return out, report


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
) -> ImportReport:
    """Import ``path`` into ``layer``; one transaction, all or nothing.

    ``mode``: ``append`` refuses codes already stored or repeated; ``replace`` swaps the whole
    layer; ``update`` updates the features matched by code and refuses unknown codes.
    ``crs`` declares the source CRS (``EPSG:4490``, ``GCJ02`` …) over the file's own.
    ``mapping`` renames source fields to layer fields (``{"HH": "households"}``).
    ``progress(written, total)`` is called after every batch of inserts.
    """
    spec = get_layer(layer)
    if mode not in MODES:
        raise ImportRefused(f"unknown mode {mode!r}: use {', '.join(MODES)}")
    try:
        declared = crs_mod.parse_crs(crs)
    except ValueError as exc:
        raise ImportRefused(str(exc)) from None
    with tempfile.TemporaryDirectory(prefix="gridplan-import-") as tmp:
        raw = read_source(path, declared_crs=declared, workdir=Path(tmp),
                          max_unzipped_bytes=max_unzipped_bytes)
    if raw.empty:
        raise ImportRefused(f"{Path(path).name} holds no features")
    gdf, report = prepare(spec, raw, declared_crs=declared, mapping=mapping)
    report.mode, report.source = mode, Path(path).name
    codes = gdf["code"].tolist()
    with engine.begin() as conn:
        if mode == "append":
            clash = existing_codes(conn, layer, codes)
            if clash:
                raise ImportRefused(f"{len(clash)} codes already stored in {layer} (use --mode "
                                    f"update or replace): {', '.join(sorted(clash)[:20])}")
        elif mode == "update":
            known = existing_codes(conn, layer, codes)
            unknown = [c for c in codes if c not in known]
            if unknown:
                raise ImportRefused(f"{len(unknown)} codes are not stored in {layer}, so there is "
                                    f"nothing to update: {', '.join(unknown[:20])}")
        elif mode == "replace":
            report.deleted = conn.execute(select(func.count()).select_from(spec.table)).scalar_one()
        done = [0]

        def tick(k: int) -> None:
            done[0] += k
            if progress:
                progress(done[0], len(gdf))

        if layer == "communities" and mode in ("replace", "update"):
            keep_community_history(conn, codes=None if mode == "replace" else codes)
        report.written = write_layer(conn, layer, gdf, mode=mode, progress=tick)
        if layer == "units":
            report.adjacency_pairs = _store_adjacency(conn, gdf, full=mode == "replace")
        if layer in ("units", "communities"):  # what processes hold in memory about them is stale now
            report.revision = raise_revision(
                conn, f"import:{layer}", actor=actor,
                streets=None if mode == "replace" else set(gdf["street_code"].dropna()),
                communities=set(codes) if layer == "communities" and mode != "replace" else None)
        conn.execute(insert(AuditLog.__table__).values(
            at=datetime.now(), actor=actor, action=f"import:{mode}", layer=layer,
            detail={"source": report.source, "written": report.written,
                    "repaired": len(report.repaired)}))
    return report


__all__ = ["ImportRefused", "ImportReport", "import_layer", "prepare", "read_source"]
