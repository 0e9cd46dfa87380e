"""Import a layer's file once read: mapping, coercion, checks, geometry, and the write transaction.

A file read by :mod:`geodata.sources` is checked whole — field mapping, types, value mappings,
codes, geometry, place and parents — and refused with every problem named (row numbers count
features from 1) before anything is written (:func:`prepare`, :func:`check_source`). The write is
one transaction (:func:`write_import`): a refused or failed import leaves the database exactly as
it was.

Categories written by other departments are translated by a value mapping (``values``), with the
values no mapping covers listed with their counts and refused or, on request, left out
(``unmapped="skip"``). Names without codes are resolved by the domain
(:mod:`layers.onboarding.naming`, passed in as ``resolve``); the import as a whole — read, resolve,
check, write — is :func:`layers.onboarding.imports.import_layer`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import Transformer
from sqlalchemy import Connection, Engine, delete, insert, or_, select

from geodata import crs as crs_mod
from geodata import dialect, partitions, topology
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
from geodata.i18n import N_, _, speaks_english
from geodata.models import AuditLog, Community, CommunityHistory, Unit, UnitAdjacency
from geodata.naming import PROVISIONAL_SEQUENCES
from geodata.revisions import changes_since, lock_revision, raise_revision
from geodata.sources import ImportRefused
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

#: A feature may have at most this many vertices (a boundary drawn that finely is an error, and
#: checking it would hold the import for minutes).
MAX_VERTICES = 250_000
#: A repaired polygon may change its area by less than this share.
MAX_REPAIR_AREA_CHANGE = 0.01
MODES = ("append", "replace", "update")
#: the modes as a summary names them
MODE_WORDS = {"append": N_("appended"), "replace": N_("replacing the layer"), "update": N_("updated")}
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

_GEOM_FAMILIES = {
    "polygon": {"Polygon", "MultiPolygon"},
    "point": {"Point"},
    "line": {"LineString", "MultiLineString"},
}
#: Geometry type names by shapely's type id; id -1 (missing) indexes the last, empty name.
_TYPE_NAMES = np.array(["Point", "LineString", "LinearRing", "Polygon", "MultiPoint", "MultiLineString",
                        "MultiPolygon", "GeometryCollection", ""], dtype=object)


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
        """What the import did, in lines for a person (the command line's summary)."""
        # the layer by its Chinese name (区县, 社区 …) for a Chinese reader, by its key for an English one
        layer = self.layer if speaks_english() else get_layer(self.layer).label
        mode = self.mode if speaks_english() else _(MODE_WORDS.get(self.mode, self.mode))
        lines = [_("{layer}: {written} features written ({mode}) from {source}", layer=layer,
                   written=self.written, mode=mode, source=self.source)]
        if self.deleted:
            lines.append("  " + _("{n} features replaced", n=self.deleted))
        if self.adjacency_pairs is not None:
            lines.append("  " + _("{n} neighbouring unit pairs stored", n=self.adjacency_pairs))
        if self.repaired:
            lines.append("  " + _("{n} invalid geometries repaired: {which}", n=len(self.repaired),
                                  which="; ".join(self.repaired[:10])))
        if self.ignored_fields:
            lines.append("  " + _("fields not in the layer, ignored: {fields}",
                                  fields=", ".join(self.ignored_fields)))
        if self.provisional:
            lines.append("  " + _("{n} provisional codes given (replaced by `codes apply`): {codes}",
                                  n=len(self.provisional),
                                  codes=", ".join(self.provisional[:10])
                                  + (" …" if len(self.provisional) > 10 else "")))
        if self.matched_by_stem:
            lines.append("  " + _("names matched without their suffix: {names}", names=", ".join(
                f"{k} → {v}" for k, v in list(self.matched_by_stem.items())[:10])))
        if self.placed_by_area:
            lines.append("  " + _("{n} features placed in the street holding most of their area",
                                  n=self.placed_by_area))
        for name, counts in self.skipped.items():
            lines.append("  " + _("rows left out, {field} has no mapping: {values}", field=name,
                                  values=", ".join(f"{v} ({n})" for v, n in counts.items())))
        if self.estimated_population:
            lines.append("  " + _("population estimated for {n} features as households × {pph} (setting "
                                  "people_per_household): the file gives none for them",
                                  n=self.estimated_population, pph=self.people_per_household))
        if self.approximate:
            lines.append("  " + _("{n} approximate locations (counted in their community, placed in no cell)",
                                  n=self.approximate))
        return "\n".join(lines)
# --- checking ------------------------------------------------------------------------------


def mapped_columns(spec: LayerSpec, gdf: gpd.GeoDataFrame, mapping: dict[str, str]) -> tuple[dict, list]:
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


#: The layers whose features lie in their street's district, by the field naming the street (a
#: cell's community code begins with its street's nine digits).
STREET_OF = {"units": "street_code", "communities": "street_code", "grid_cells": "community_code"}
#: ``frame.attrs`` key: which rows' ``district_code`` the file itself gives
DISTRICT_GIVEN = "district_given"


def street_districts(conn: Connection, streets: set[str]) -> dict[str, str]:
    """The district each of ``streets`` (nine-digit codes) lies in: the stored street's
    ``district_code`` when the street is stored, else the first six digits of an official code
    (a provisional one, sequence 700–999, was given under whatever district the import named and
    says nothing); streets neither tells are left out."""
    table = get_layer("streets").table
    wanted = sorted(streets)
    found: dict[str, str] = {}
    for start in range(0, len(wanted), BATCH):
        chunk = wanted[start:start + BATCH]
        found.update({c: d for c, d in conn.execute(select(table.c.code, table.c.district_code)
                                                    .where(table.c.code.in_(chunk))) if d})
    for street in wanted:
        if street not in found and is_code(street, 9) and int(street[6:]) not in PROVISIONAL_SEQUENCES:
            found[street] = street[:6]
    return found


def _check_street_district(engine: Engine, spec: LayerSpec, frame: pd.DataFrame, problems: list[str]) -> None:
    """A unit, community or cell whose ``district_code`` is not its street's district
    (:func:`street_districts`), by row: it would be planned, counted and stored (on PostgreSQL
    split by district: in the partition) under the wrong district. A district the file leaves
    empty, taken from the codes, is put right from the stored street instead (a street moved to
    another district keeps its code)."""
    field = STREET_OF.get(spec.name)
    if field is None or field not in frame.columns or "district_code" not in frame.columns or frame.empty:
        return
    digits = spec.field(field).digits
    streets = np.array([c[:9] if isinstance(c, str) and is_code(c, digits) else None
                        for c in frame[field].to_numpy(dtype=object)], dtype=object)
    with engine.connect() as conn:
        known = street_districts(conn, {s for s in streets if s is not None})
    if not known:
        return
    district = frame["district_code"].to_numpy(dtype=object)
    theirs = np.array([known.get(s) if s is not None else None for s in streets], dtype=object)
    wrong = np.array([t is not None and isinstance(d, str) and is_code(d, 6) and d != t
                      for d, t in zip(district, theirs, strict=True)], dtype=bool)
    given = frame.attrs.get(DISTRICT_GIVEN)
    given = np.ones(len(frame), dtype=bool) if given is None or len(given) != len(frame) else given
    derived = wrong & ~given
    if derived.any():  # the file named no district: the street's is the right one
        values = district.copy()
        values[derived] = theirs[derived]
        frame["district_code"] = values
    rows = np.flatnonzero(wrong & given)
    codes = frame["code"].to_numpy(dtype=object) if "code" in frame.columns else np.full(len(frame), None)
    for i in rows[:20]:
        problems.append(_("row {row}: {code} has district_code {district}, but its street {street} lies in "
                          "district {street_district}", row=i + 1, code=codes[i] or "-", district=district[i],
                          street=streets[i], street_district=theirs[i]))
    if len(rows) > 20:
        problems.append(_("… and {n} more rows whose district_code is not their street's district",
                          n=len(rows) - 20))


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


#: The step that fills codes from names before the checks, ``(frame, geometries, problems, report)``:
#: the domain's rules (:func:`layers.onboarding.naming.resolver`).
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
    rename, report.ignored_fields = mapped_columns(spec, gdf, mapping or {})
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
    # which rows' district the file gives (the others' is taken from their codes, and may be put
    # right from their stored street: _check_street_district)
    frame.attrs[DISTRICT_GIVEN] = (frame["district_code"].notna().to_numpy()
                                   if "district_code" in frame.columns else np.zeros(len(frame), dtype=bool))
    _derive_district(frame, spec)
    if district and "district_code" in frame.columns:
        frame["district_code"] = frame["district_code"].fillna(district)
    _check_values(spec, frame, problems, reported)
    geoms = _check_geometry(spec, gdf, problems, report.repaired)
    if against is not None:
        against(frame, geoms, source, problems)
    frame.attrs.pop(DISTRICT_GIVEN, None)  # not carried into the frame written
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
    resolve: Resolver | None = None,
) -> tuple[gpd.GeoDataFrame, ImportReport]:
    """Every check of an import on a file already read, nothing written: :func:`prepare`, with
    ``resolve`` filling codes from names first (the domain's rules,
    :func:`layers.onboarding.naming.resolver`) and the result checked against what is stored
    (parents, place). Raises :class:`ImportRefused` naming every problem found."""
    spec, limits = get_layer(layer), read_limits(engine)

    def against(frame: pd.DataFrame, geoms: np.ndarray, source: Source, problems: list[str]) -> None:
        _check_parents(engine, spec, frame, problems)
        _check_street_district(engine, spec, frame, problems)
        known = len(problems)
        _check_place(engine, spec, geoms, source, limits, problems)
        if len(problems) == known:  # a file in the wrong place is named once, not row by row
            _check_near_parent(engine, spec, frame, geoms, problems)

    return prepare(spec, raw, declared_crs=declared_crs, mapping=mapping, values=values,
                   unmapped=unmapped, district=district, number=number,
                   resolve=resolve, limits=limits, against=against)


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


class CodesRefused(ImportRefused):
    """An import refused for its codes in its mode: an append whose codes are stored already, or an
    update whose codes are not. The message speaks the command line (``--mode``); ``layer``,
    ``mode`` and ``codes`` (sorted) let a page word it as the page offers the modes."""

    def __init__(self, problems: list[str] | str, layer: str, mode: str, codes: list[str]) -> None:
        super().__init__(problems)
        self.layer, self.mode, self.codes = layer, mode, codes


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


def write_import(
    engine: Engine,
    layer: str,
    gdf: gpd.GeoDataFrame,
    report: ImportReport,
    *,
    mode: str = "append",
    actor: str = "cli",
    exported_at: int | None = None,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Write a checked file (:func:`check_source`) into ``layer``: one transaction, all or nothing.

    ``mode``: ``append`` refuses codes already stored or repeated; ``replace`` swaps the whole
    layer; ``update`` updates the features matched by code and refuses unknown codes.
    Units naming retired communities are refused, and so is a units file exported at boundary
    revision ``exported_at`` that would undo later changes (:func:`stale_units`) unless ``force``.
    ``progress(written, total)`` is called after every batch of inserts. Recorded in the audit log
    under ``actor``.
    """
    codes = gdf["code"].tolist()
    if layer in partitions.LARGE and "district_code" in gdf.columns:
        # a new district's partitions first, in short transactions of their own: made inside this
        # one, their lock would stop every district's reads until the import commits
        partitions.prepare_districts(engine, gdf["district_code"].dropna().unique())
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
                raise CodesRefused(_("{n_clash} codes already stored in {layer} (use --mode update or "
                                     "replace): {p3}",
                                     n_clash=len(clash), layer=layer, p3=', '.join(sorted(clash)[:20])),
                                   layer, mode, sorted(clash))
        elif mode == "update":
            known = existing_codes(conn, layer, codes)
            unknown = [c for c in codes if c not in known]
            if unknown:
                raise CodesRefused(_("{n_unknown} codes are not stored in {layer}, so there is nothing to "
                                     "update: {p3}",
                                     n_unknown=len(unknown), layer=layer, p3=', '.join(unknown[:20])),
                                   layer, mode, sorted(unknown))
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


__all__ = ["CodesRefused", "ImportRefused", "ImportReport", "MODES", "NAME_FIELDS", "Resolver", "StaleFile",
           "UNMAPPED",
           "check_source", "mapped_columns", "parse_values", "prepare", "retired_communities", "stale_units",
           "store_adjacency", "write_import"]
