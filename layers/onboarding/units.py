"""Planning units where the city has none: blocks (街坊) cut from roads, households estimated.

Each street is cut into blocks along the road centre-lines inside it, and along the community
boundaries (so no block crosses one): the lines are noded together with the street's outline and
polygonised, so the blocks tile the street exactly. Blocks smaller than ``min_block_m2`` (slivers
between nearly parallel lines) are merged into the neighbour — of the same community, where there
is one — with which they share the longest edge.

A city with community polygons but no road centre-lines still gets units: each street is
**tessellated** instead — a lattice of hexagons (or squares) of about ``cell_m2`` is laid over it
and cut by the street's outline and the community boundaries exactly as roads would cut it, and
pieces under a third of a cell are merged into a neighbouring piece of the same community. The
units then tile the street and nest in its communities as blocks do; the report says that they are
a tessellation, not blocks between roads (:attr:`BuildResult.method`).

Households per block come from the best source the city has, chosen per community:

1. ``buildings`` — residential buildings with their households (points or polygons);
2. ``poi`` — residential points of interest (住宅小区, 居民区 …), one weight each (or their households);
3. ``raster`` — a population raster (GeoTIFF in EPSG:4326, e.g. WorldPop 100 m), summed per block;
4. ``area`` — an even spread over the community's area.

A community total from the households table (社区户数) is honoured exactly: the blocks of a community
sum to it (largest-remainder rounding of the source's weights), and the unit records
``<source>+table``. Without a total, buildings and rasters give their own numbers; points and area
only spread a total, so such blocks get none (``none``). Every unit records its source in
``households_source``.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from sqlalchemy import Engine

from geodata import naming
from geodata.catalog import as_text, is_code
from geodata.crs import WGS84, metric_crs_for
from geodata.errors import Refused
from geodata.i18n import _
from geodata.importer import store_adjacency
from geodata.revisions import lock_revision, raise_revision
from geodata.standards import get_setting
from geodata.store import read_layer
from geodata.text_tables import read_text_table
from geodata.topology import shared_edges
from geodata.unit_rows import replace_street_units

#: Blocks smaller than this (m²) are slivers, merged into a neighbour.
MIN_BLOCK_M2 = 400.0
#: Tessellated units: their shapes and default size (m²; about an urban-management unit grid).
SHAPES = ("hex", "square")
CELL_M2 = 10_000.0
CELL_M2_RANGE = (100.0, 4_000_000.0)
SOURCES = ("buildings", "poi", "raster", "area")
GRID_M = 1e-3
#: Categories of points of interest that mark housing.
RESIDENTIAL_CATEGORIES = ("住宅小区", "居民区", "小区", "住宅区", "住宅", "公寓", "宿舍", "别墅", "商住楼")
HOUSEHOLD_COLUMNS = {"community": ("community", "community_name", "name", "社区", "社区名称", "名称"),
                     "code": ("code", "community_code", "社区代码", "代码"),
                     "households": ("households", "户数", "总户数", "hh"),
                     "population": ("population", "人口", "总人口", "人数", "pop")}


class BuildRefused(Refused):
    """The units cannot be built as asked; ``problems`` names every reason."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems[:20]))


@dataclass
class BuildResult:
    """The units built (EPSG:4326) and how their households were estimated."""

    units: gpd.GeoDataFrame
    streets: list[str]
    sources: dict[str, int] = field(default_factory=dict)  # households_source → units
    unmatched_totals: list[str] = field(default_factory=list)  # table rows matched to no community
    totals_honoured: int = 0
    slivers_merged: int = 0
    revision: int | None = None
    method: str = "blocks"  # blocks (cut by roads) | tessellation (no roads: a lattice of cells)
    shape: str | None = None  # hex | square, for a tessellation
    cell_m2: float | None = None
    tessellated: list[str] = field(default_factory=list)  # the streets tessellated (no roads inside)

    def note(self) -> str:
        """What the units are, in a planner's words."""
        if self.method == "mixed":
            return _("the units are blocks cut by the road centre-lines and the community boundaries, "
                     "except in streets {streets}, which hold no roads: there they are a tessellation of "
                     "{shape} cells of about {cell_m2} m² cut by the street and community boundaries",
                     streets=", ".join(self.tessellated[:20]) + (" …" if len(self.tessellated) > 20 else ""),
                     shape=_("hexagonal") if self.shape == "hex" else _("square"),
                     cell_m2=f"{self.cell_m2:,.0f}")
        if self.method == "tessellation":
            return _("the units are a tessellation, not blocks: {shape} cells of about {cell_m2} m² cut by "
                     "the street and community boundaries (no road centre-lines were used)",
                     shape=_("hexagonal") if self.shape == "hex" else _("square"),
                     cell_m2=f"{self.cell_m2:,.0f}")
        return _("the units are blocks cut from the streets by the road centre-lines and the community "
                 "boundaries")

    def summary(self) -> dict:
        return {"units": len(self.units), "streets": len(self.streets),
                "method": self.method, "shape": self.shape, "cell_m2": self.cell_m2,
                "tessellated_streets": self.tessellated, "note": self.note(),
                "households": int(self.units["households"].sum()) if len(self.units) else 0,
                "sources": self.sources, "totals_honoured": self.totals_honoured,
                "unmatched_totals": self.unmatched_totals, "slivers_merged": self.slivers_merged,
                "revision": self.revision}


# --- inputs --------------------------------------------------------------------------------


def _pick(columns, names) -> str | None:
    lower = {str(c).strip().lower(): c for c in columns}
    return next((lower[n.lower()] for n in names if n.lower() in lower), None)


def read_households_table(path: str | Path, columns: dict[str, str] | None = None) -> pd.DataFrame:
    """A households table (CSV: community name or code, households, population) as ``community``,
    ``code``, ``households``, ``population``; ``columns`` names the table's own columns."""
    path = Path(path)
    frame = read_text_table(path, BuildRefused, missing="households table")
    frame = frame.rename(columns={v: k for k, v in (columns or {}).items()} if columns else {})
    found = {key: (key if key in frame.columns else _pick(frame.columns, names))
             for key, names in HOUSEHOLD_COLUMNS.items()}
    if found["households"] is None or (found["community"] is None and found["code"] is None):
        raise BuildRefused(f"{path.name} needs a households column (户数) and a community name (社区) or "
                           f"code column; it has {', '.join(frame.columns)}")
    out = pd.DataFrame({k: as_text(frame[v]) if v else None for k, v in found.items()})
    problems = []
    for key in ("households", "population"):
        if found[key] is None:
            out[key] = np.nan
            continue
        values = pd.to_numeric(out[key].str.replace(",", ""), errors="coerce")
        bad = out[key].notna() & (values.isna() | (values < 0) | (values % 1 != 0))
        for r in np.flatnonzero(bad.to_numpy())[:20]:
            problems.append(f"line {r + 2}: {key} {out[key].iloc[r]!r} is not a whole number ≥ 0")
        out[key] = values
    if problems:
        raise BuildRefused(problems)
    return out


def match_totals(table: pd.DataFrame, communities: pd.DataFrame) -> tuple[dict[str, tuple], list[str]]:
    """Community code → (households, population) from the table; the rows matched to no community.
    Ambiguous names refuse."""
    totals: dict[str, tuple] = {}
    by_code = table["code"].map(lambda c: isinstance(c, str) and is_code(c, 12)) if "code" in table else None
    rest = table if by_code is None else table[~by_code.astype(bool)]
    unmatched: list[str] = []
    if by_code is not None:
        known = set(communities["code"])
        for code, hh, pop in table.loc[by_code.astype(bool), ["code", "households", "population"]].itertuples(
                index=False):
            if code in known:
                totals[code] = (hh, pop)
            else:
                unmatched.append(code)
    if len(rest):
        found = naming.match_names(rest["community"], communities[["code", "name"]],
                                   naming.COMMUNITY_SUFFIXES)
        if found.ambiguous:
            raise BuildRefused([f"community name {n!r} in the households table is ambiguous: it matches "
                                + ", ".join(codes) for n, codes in found.ambiguous.items()])
        for code, hh, pop in zip(found.codes, rest["households"], rest["population"], strict=True):
            if code is not None:
                totals[code] = (hh, pop)
        unmatched += found.unmatched
    return totals, unmatched


def raster_sums(path: str | Path, blocks: np.ndarray) -> np.ndarray:
    """The sum of the raster's values whose pixel centres lie in each block (blocks in EPSG:4326).

    Read in a fresh process: rasterio's GDAL and PROJ crash in a process where SpatiaLite (linked
    to the system PROJ) is already loaded, so they never meet the database's connections.
    """
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        outcome, value = pool.submit(_raster_sums, str(path), shapely.to_wkb(blocks)).result()
    if outcome == "refused":
        raise BuildRefused(value)
    return value


def _raster_sums(path: str, wkb: np.ndarray) -> tuple[str, object]:
    import rasterio
    from rasterio import features, windows

    name = Path(path).name
    blocks = shapely.from_wkb(wkb)
    try:
        src = rasterio.open(path)
    except (rasterio.errors.RasterioIOError, OSError) as exc:
        return "refused", f"population raster {name} cannot be read ({exc})"
    with src:
        crs = src.crs
        if crs is None or crs.to_epsg() not in (4326, 4490):
            return "refused", (f"population raster {name} is in {crs or 'no CRS'}, not EPSG:4326: "
                               "reproject it first (gdalwarp -t_srs EPSG:4326 in.tif out.tif)")
        minx, miny, maxx, maxy = shapely.total_bounds(blocks)
        window = windows.from_bounds(minx, miny, maxx, maxy, src.transform).round_offsets().round_lengths()
        if window.width > 0:
            window = window.intersection(windows.Window(0, 0, src.width, src.height))
        values = src.read(1, window=window, masked=True, boundless=False).astype(float).filled(0.0)
        transform = src.window_transform(window)
    values[~np.isfinite(values) | (values < 0)] = 0.0
    ids = features.rasterize(((g, i + 1) for i, g in enumerate(blocks)), out_shape=values.shape,
                             transform=transform, fill=0, dtype="int32", all_touched=False)
    return "ok", np.bincount(ids.ravel(), weights=values.ravel(), minlength=len(blocks) + 1)[1:]


# --- blocks --------------------------------------------------------------------------------


def _blocks(street, roads: np.ndarray, communities: np.ndarray) -> np.ndarray:
    """Blocks tiling ``street`` cut by ``roads`` and ``communities``' boundaries (all metric)."""
    lines = [shapely.boundary(street)]
    if len(roads):
        shapely.prepare(street)
        inside = shapely.contains_properly(street, roads)
        clipped = shapely.intersection(roads[~inside], street)
        lines += list(roads[inside]) + list(clipped[~shapely.is_empty(clipped)])
    if len(communities):
        inside = shapely.intersection(communities, street)
        lines += list(shapely.boundary(inside[~shapely.is_empty(inside)]))
    # noded on a millimetre grid: lines drawn on the same edge (a road on a community boundary,
    # moved by micrometres in a reprojection) become one, and every ring closes
    noded = shapely.union_all(np.asarray(lines, dtype=object), grid_size=GRID_M)
    edges = shapely.get_parts(noded)
    edges = edges[shapely.get_type_id(edges) == shapely.GeometryType.LINESTRING]
    faces = shapely.get_parts(shapely.polygonize(edges))
    faces = faces[shapely.contains(shapely.set_precision(street, GRID_M), shapely.point_on_surface(faces))]
    return faces


def lattice(bounds: tuple[float, float, float, float], shape: str, cell_m2: float) -> np.ndarray:
    """Cells of ``cell_m2`` (hexagons or squares) covering ``bounds`` (metric), laid on a lattice
    anchored at the CRS's origin so that the cells of neighbouring streets line up."""
    minx, miny, maxx, maxy = bounds
    if shape == "square":
        side = float(np.sqrt(cell_m2))
        x = np.arange(np.floor(minx / side), np.ceil(maxx / side) + 1) * side
        y = np.arange(np.floor(miny / side), np.ceil(maxy / side) + 1) * side
        gx, gy = np.meshgrid(x[:-1], y[:-1])
        return shapely.box(gx.ravel(), gy.ravel(), gx.ravel() + side, gy.ravel() + side)
    # flat-topped hexagons of side a: columns 1.5·a apart, rows √3·a apart, odd columns half a row up
    a = float(np.sqrt(2 * cell_m2 / (3 * np.sqrt(3))))
    dx, dy = 1.5 * a, np.sqrt(3) * a
    cols = np.arange(np.floor(minx / dx) - 1, np.ceil(maxx / dx) + 2)
    rows = np.arange(np.floor(miny / dy) - 1, np.ceil(maxy / dy) + 2)
    ci, rj = np.meshgrid(cols, rows)
    cx = (ci * dx).ravel()
    cy = (rj * dy + np.where(ci % 2 != 0, dy / 2, 0.0)).ravel()
    angles = np.deg2rad(np.arange(0, 360, 60))
    ring = np.stack([cx[:, None] + a * np.cos(angles), cy[:, None] + a * np.sin(angles)], axis=-1)
    cells = shapely.polygons(np.concatenate([ring, ring[:, :1]], axis=1))
    return cells[shapely.intersects(cells, shapely.box(minx, miny, maxx, maxy))]


def _lattice_lines(street, shape: str, cell_m2: float) -> np.ndarray:
    """The lattice's cell edges over ``street``, to cut it as road centre-lines would."""
    cells = lattice(shapely.bounds(street), shape, cell_m2)
    cells = cells[shapely.intersects(cells, street)]
    return shapely.boundary(cells)


def _has_inner_roads(street, roads: np.ndarray) -> bool:
    """Whether any road runs inside ``street`` (not only along its edge), metres."""
    if not len(roads):
        return False
    inner = shapely.buffer(street, -1.0)
    return bool(not shapely.is_empty(inner) and shapely.intersects(roads, inner).any())


def _root(target: np.ndarray, face: int) -> int:
    """The face ``face`` ends in after following the merges decided so far."""
    while target[face] != face:
        face = int(target[face])
    return face


def _merge_slivers(faces: np.ndarray, label: np.ndarray,
                   min_block_m2: float, same_label_only: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
    """Merge faces under ``min_block_m2`` into the neighbour (same label first — only, with
    ``same_label_only``) sharing the longest edge; returns the merged faces, their labels and how
    many slivers went."""
    area = shapely.area(faces)
    small = area < min_block_m2
    if not small.any() or len(faces) < 2:
        return faces, label, 0
    i, j, shared = shared_edges(faces, 1e-6)
    length = shapely.length(shared)
    target = np.arange(len(faces))
    for s in np.flatnonzero(small)[np.argsort(area[small])]:
        hit = (i == s) | (j == s)
        other = np.where(i[hit] == s, j[hit], i[hit])
        if not len(other):
            continue
        same = np.array([label[o] == label[s] for o in other])
        if same_label_only and not same.any():
            continue  # a piece cut off from the rest of its community stays a unit of its own
        if same_label_only:
            other, hit = other[same], np.flatnonzero(hit)[same]
            same = same[same]
        score = length[hit] + np.where(same, 1e9, 0.0) + np.where(area[other] >= min_block_m2, 1e6, 0.0)
        # never into a face that already went into this one (two slivers would swap forever)
        score = np.where([_root(target, o) == s for o in other], -np.inf, score)
        if np.isfinite(score).any():
            target[s] = other[np.argmax(score)]
    # follow chains of merges to their end
    for _step in range(len(faces)):
        nxt = target[target]
        if (nxt == target).all():
            break
        target = nxt
    keep = np.unique(target)
    merged = np.empty(len(keep), dtype=object)
    for k, t in enumerate(keep):
        parts = faces[target == t]
        merged[k] = parts[0] if len(parts) == 1 else shapely.union_all(parts)
    return merged, label[keep], int(len(faces) - len(keep))


def _row_order(xy: np.ndarray, band: float = 150.0) -> np.ndarray:
    """North → south in bands of ``band`` metres, then west → east."""
    return np.lexsort((xy[:, 0], -np.floor(xy[:, 1] / band)))


def _apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """Whole numbers summing to ``total``, in proportion to ``weights`` (largest remainder)."""
    weights = np.clip(np.asarray(weights, dtype=float), 0, None)
    if total <= 0 or len(weights) == 0:
        return np.zeros(len(weights), dtype=np.int64)
    if weights.sum() <= 0:
        weights = np.ones(len(weights))
    exact = weights / weights.sum() * total
    out = np.floor(exact).astype(np.int64)
    short = int(total - out.sum())
    if short > 0:
        out[np.argsort(-(exact - out), kind="stable")[:short]] += 1
    return out


@dataclass
class Sources:
    """What the city has to estimate households from (all optional; EPSG:4326)."""

    buildings: gpd.GeoDataFrame | None = None  # households per building
    pois: gpd.GeoDataFrame | None = None  # residential points (a ``households`` column optional)
    raster: str | Path | None = None
    totals: dict[str, tuple] = field(default_factory=dict)  # community → (households, population)
    people_per_household: float = 2.62


def _points_per_block(blocks: np.ndarray, points: gpd.GeoDataFrame | None, value: str | None) -> np.ndarray:
    out = np.zeros(len(blocks))
    if points is None or points.empty or not len(blocks):
        return out
    where = shapely.point_on_surface(np.asarray(points.geometry.values, dtype=object))
    b, p = shapely.STRtree(blocks).query(where, predicate="within")[::-1]
    weights = pd.to_numeric(points[value], errors="coerce").fillna(0).to_numpy(float) \
        if value and value in points.columns else np.ones(len(points))
    np.add.at(out, b, weights[p])
    return out


def estimate(blocks: np.ndarray, community: np.ndarray, sources: Sources) -> tuple[np.ndarray, np.ndarray,
                                                                                  np.ndarray]:
    """Households, population and source of each block (``blocks`` in EPSG:4326, ``community`` the
    code of each, None outside every community)."""
    n = len(blocks)
    by_source = {
        "buildings": _points_per_block(blocks, sources.buildings, "households"),
        "poi": _points_per_block(blocks, sources.pois, "households" if sources.pois is not None
                                 and "households" in sources.pois.columns else None),
        "raster": raster_sums(sources.raster, blocks) if sources.raster else np.zeros(n),
        "area": shapely.area(gpd.GeoSeries(blocks, crs=WGS84).to_crs(metric_crs_for(
            gpd.GeoDataFrame(geometry=blocks, crs=WGS84))).values) if n else np.zeros(0),
    }
    households = np.zeros(n, dtype=np.int64)
    population = np.zeros(n, dtype=np.int64)
    source = np.full(n, "none", dtype=object)
    pph = sources.people_per_household
    keys = pd.Series(community, dtype=object).fillna("").to_numpy()
    for code, members in pd.Series(np.arange(n)).groupby(keys).indices.items():
        total = sources.totals.get(code) if code else None
        method = next((s for s in SOURCES if by_source[s][members].sum() > 0
                       and (s != "area" or total is not None)), None)
        if total is not None and pd.notna(total[0]):
            hh = _apportion(int(total[0]), by_source[method or "area"][members])
            households[members] = hh
            source[members] = f"{method or 'area'}+table"
            pop = total[1] if len(total) > 1 else None
            population[members] = _apportion(int(pop), hh) if pop is not None and pd.notna(pop) else \
                np.round(hh * pph).astype(np.int64)
            continue
        if method == "buildings":
            households[members] = np.round(by_source["buildings"][members]).astype(np.int64)
        elif method == "raster":
            households[members] = np.round(by_source["raster"][members] / pph).astype(np.int64)
        else:
            continue  # points and area only spread a total
        population[members] = np.round(households[members] * pph).astype(np.int64)
        source[members] = method
    return households, population, source


def check_tessellation(shape: str, cell_m2: float) -> None:
    """Refuse a cell shape or size a tessellation cannot use, naming it."""
    if shape not in SHAPES:
        raise BuildRefused(_("cell shape {shape} is not one of {shapes}", shape=repr(shape),
                             shapes=", ".join(SHAPES)))
    low, high = CELL_M2_RANGE
    if not (isinstance(cell_m2, (int, float)) and np.isfinite(cell_m2) and low <= cell_m2 <= high):
        raise BuildRefused(_("cell size {cell_m2} m² is outside {low}–{high} m²", cell_m2=cell_m2,
                             low=f"{low:,.0f}", high=f"{high:,.0f}"))


def build_units(streets: gpd.GeoDataFrame, communities: gpd.GeoDataFrame, roads: gpd.GeoDataFrame,
                sources: Sources | None = None, *, min_block_m2: float = MIN_BLOCK_M2,
                progress: Callable[[int, int], None] | None = None, shape: str | None = None,
                cell_m2: float = CELL_M2) -> BuildResult:
    """Blocks for every street of ``streets`` (code, district_code) from ``roads`` and the
    ``communities`` (code, street_code), with households estimated from ``sources``. With
    ``shape`` (``hex`` or ``square``) the streets are tessellated into cells of about ``cell_m2``
    instead, and ``roads`` are not used."""
    sources = sources or Sources()
    if streets.empty:
        raise BuildRefused(_("no streets to build units in"))
    if shape is not None:
        check_tessellation(shape, cell_m2)
        roads = roads.iloc[:0]
    crs = metric_crs_for(streets)
    street_m = np.asarray(streets.to_crs(crs).geometry.values, dtype=object)
    empty = np.empty(0, dtype=object)
    road_m = np.asarray(roads.to_crs(crs).geometry.values, dtype=object) if len(roads) else empty
    comm_m = np.asarray(communities.to_crs(crs).geometry.values, dtype=object) if len(communities) \
        else np.empty(0, object)
    comm_codes = communities["code"].to_numpy(dtype=object) if len(communities) else np.empty(0, object)
    comm_street = communities["street_code"].to_numpy(dtype=object) if len(communities) else empty
    road_tree, comm_tree = shapely.STRtree(road_m), shapely.STRtree(comm_m)
    frames, merged_total, tessellated = [], 0, []
    for k, (code, district, street) in enumerate(zip(streets["code"], streets["district_code"], street_m,
                                                     strict=True)):
        near_roads = road_m[road_tree.query(street, predicate="intersects")] if len(road_m) else road_m
        near = comm_tree.query(street, predicate="intersects") if len(comm_m) else np.empty(0, int)
        near = near[np.argsort(comm_street[near] != code, kind="stable")]  # the street's own first
        # a street with no road inside it would be left as whole communities: it is tessellated
        cut = shape if shape is not None else None if _has_inner_roads(street, near_roads) else "hex"
        if cut is not None:
            near_roads = _lattice_lines(street, cut, cell_m2)
            tessellated.append(code)
        faces = _blocks(street, near_roads, comm_m[near])
        label = np.full(len(faces), None, dtype=object)
        if len(near) and len(faces):
            f, c = shapely.STRtree(comm_m[near]).query(shapely.point_on_surface(faces), predicate="within")
            order = np.lexsort((c, f))  # the first community listed wins an overlap
            f, c = f[order], c[order]
            first = np.ones(len(f), dtype=bool)
            first[1:] = f[1:] != f[:-1]
            label[f[first]] = comm_codes[near][c[first]]
        if cut is not None:  # a piece under a third of a cell joins its community's neighbour
            faces, label, merged = _merge_slivers(faces, label, max(min_block_m2, cell_m2 / 3),
                                                  same_label_only=True)
        else:
            faces, label, merged = _merge_slivers(faces, label, min_block_m2)
        merged_total += merged
        xy = shapely.get_coordinates(shapely.point_on_surface(faces))
        order = _row_order(xy)
        frames.append(gpd.GeoDataFrame({
            "code": [f"{code}{r + 1:05d}" for r in range(len(faces))],
            "street_code": code, "community_code": label[order], "district_code": district,
            "land_use": "residential",
        }, geometry=list(faces[order]), crs=crs))
        if progress:
            progress(k + 1, len(streets))
    units = pd.concat(frames, ignore_index=True) if frames else gpd.GeoDataFrame(geometry=[], crs=crs)
    units = gpd.GeoDataFrame(units, geometry="geometry", crs=crs).to_crs(WGS84)
    hh, pop, source = estimate(np.asarray(units.geometry.values, dtype=object),
                               units["community_code"].to_numpy(dtype=object), sources)
    units["households"], units["population"], units["households_source"] = hh, pop, source
    present = set(units["community_code"].dropna())
    honoured = sum(1 for c in sources.totals if c in present)
    return BuildResult(units, list(streets["code"]), {str(k): int(v) for k, v in
                                                      pd.Series(source).value_counts().items()},
                       totals_honoured=honoured, slivers_merged=merged_total,
                       method="blocks" if not tessellated
                       else "tessellation" if len(tessellated) == len(streets) else "mixed",
                       shape=(shape or "hex") if tessellated else None,
                       cell_m2=float(cell_m2) if tessellated else None, tessellated=tessellated)


def residential_points(points: gpd.GeoDataFrame, column: str | None,
                       categories: tuple[str, ...] = RESIDENTIAL_CATEGORIES) -> gpd.GeoDataFrame:
    """The points whose ``column`` names a residential category (a category containing one of
    ``categories``, as 商务住宅;住宅区;住宅小区 does)."""
    if column is None:
        return points
    if column not in points.columns:
        raise BuildRefused(_("points of interest have no column {column} (columns: {p2})",
                             column=repr(column), p2=', '.join(map(str, points.columns.drop('geometry')))))
    text = points[column].astype(str)
    return points[text.map(lambda v: any(c in v for c in categories))]


def build_stored(engine: Engine, *, street: str | None = None, households: str | Path | None = None,
                 raster: str | Path | None = None, pois: gpd.GeoDataFrame | None = None,
                 min_block_m2: float = MIN_BLOCK_M2, actor: str = "cli",
                 columns: dict[str, str] | None = None,
                 progress: Callable[[int, int], None] | None = None, shape: str | None = None,
                 cell_m2: float | None = None) -> BuildResult:
    """Build the units of the stored streets (one, or all) from the stored roads, communities and
    buildings (and ``households``, a table whose ``columns`` are named as :data:`HOUSEHOLD_COLUMNS`
    or mapped by ``columns`` {ours: theirs}, ``raster``, ``pois``), and replace those streets' units, their
    adjacency and raise the boundary revision, in one transaction.

    Without roads in these streets (or when ``shape`` or ``cell_m2`` asks for it) the streets are
    tessellated into ``shape`` cells (``hex`` by default) of about ``cell_m2`` (default
    :data:`CELL_M2`) instead of cut into blocks."""
    streets = read_layer(engine, "streets", where={"code": street} if street else None)
    if streets.empty:
        raise BuildRefused(_("street {street} is not stored", street=street) if street else
                           _("no streets are stored: import the streets first"))
    roads = read_layer(engine, "roads", bbox=tuple(streets.total_bounds))
    if roads.empty or shape is not None or cell_m2 is not None:
        shape = shape or "hex"  # no road centre-lines: the streets are tessellated
        cell_m2 = CELL_M2 if cell_m2 is None else cell_m2
        check_tessellation(shape, cell_m2)
    communities = read_layer(engine, "communities", bbox=tuple(streets.total_bounds))
    buildings = read_layer(engine, "buildings", bbox=tuple(streets.total_bounds))
    with engine.connect() as conn:
        pph = float(get_setting(conn, "people_per_household") or 2.62)
    totals, unmatched = {}, []
    if households is not None:
        totals, unmatched = match_totals(read_households_table(households, columns), communities)
    sources = Sources(buildings=buildings if len(buildings) else None, pois=pois, raster=raster,
                      totals=totals, people_per_household=pph)
    result = build_units(streets, communities, roads, sources, min_block_m2=min_block_m2, progress=progress,
                         shape=shape, cell_m2=CELL_M2 if cell_m2 is None else cell_m2)
    result.unmatched_totals = unmatched
    with engine.begin() as conn:
        lock_revision(conn)  # the boundary counters first, as every boundary writer (one lock order)
        replace_street_units(conn, result.streets, result.units)
        store_adjacency(conn, result.units, full=False)
        result.revision = raise_revision(conn, "units:build", actor=actor, streets=result.streets)
    return result


__all__ = ["CELL_M2", "SHAPES", "BuildRefused", "BuildResult", "Sources", "build_stored", "build_units",
           "check_tessellation", "estimate", "lattice",
           "match_totals", "raster_sums", "read_households_table", "residential_points"]
