"""Names without codes: the domain's rules that turn a file's names into codes on import.

Cities hold streets and communities by *name*. On import (:mod:`layers.onboarding.imports`) a
street without a code gets the stored code of the same name in its district, or the next free
**provisional code** under the district (``--district``); a community's street is taken from its
code (codes nest), its street's name (matched exactly, then without its suffix, with
:mod:`geodata.naming`) or, failing both, the street holding most of its area
(:func:`street_by_area`); then it gets the stored code of the same name in that street, or a
provisional code under it. Facilities and incidents without a community get the one they lie in
(:func:`community_at`). :func:`resolver` hands these steps to :func:`geodata.importer.check_source`,
which runs them before its checks so that what the checks say is about the codes.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from sqlalchemy import Connection, Engine, or_, select

from geodata import crs as crs_mod
from geodata import naming
from geodata.catalog import get_layer, is_code
from geodata.i18n import _
from geodata.importer import ImportRefused, ImportReport, Resolver
from geodata.models import CommunityHistory
from geodata.store import read_layer


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
    orphan = missing & parent.isna().to_numpy()
    if orphan.any():
        problems.append(f"{int(orphan.sum())} streets have no code and no district to give them a "
                        "provisional code under: name the district with --district (e.g. --district 420503)")
        return
    stored = read_layer(engine, "streets")
    taken = set(stored["code"]) | set(frame["code"].dropna())
    known = {(d, naming.normalise(n)): (c, bool(p)) for c, n, d, p in zip(
        stored["code"], stored["name"], stored["district_code"], stored["provisional"], strict=True)}
    _fill_codes(frame, missing, parent, known, taken, problems, report)
    frame["district_code"] = frame["district_code"].fillna(parent)


def _fill_codes(frame: pd.DataFrame, missing: np.ndarray, parent: pd.Series, known: dict, taken: set[str],
                problems: list[str], report: ImportReport) -> None:
    """Give each row of ``missing`` its code: the stored one of the same name under the same parent
    (``known``: (parent, normalised name) → (code, provisional)), else the next free provisional
    code under its parent (recorded in ``report.provisional``). A row without a name is left to the
    required-field check."""
    rows = np.arange(1, len(frame) + 1)
    codes = frame["code"].to_numpy(dtype=object).copy()
    flags = frame["provisional"].to_numpy(dtype=object).copy()
    for i in np.flatnonzero(missing):
        name = naming.normalise(frame["name"].iloc[i])
        if name is None:
            continue
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
    _fill_codes(frame, missing, frame["street_code"], known, taken, problems, report)


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


def resolver(engine: Engine, layer: str, district: str | None) -> Resolver | None:
    """The names → codes step of ``layer`` for :func:`geodata.importer.check_source` (None: the
    layer's files carry their codes)."""
    step = {"streets": _resolve_streets, "communities": _resolve_communities,
            "facilities": _resolve_points, "incidents": _resolve_points}.get(layer)
    if step is None:
        return None
    return lambda frame, geoms, problems, report: step(engine, district, frame, geoms, problems, report)


__all__ = ["check_district", "community_at", "resolver", "street_by_area"]
