"""A generated city as a real one hands it over: names, polygons, roads and a spreadsheet.

No codes anywhere: streets carry a name (``…街道``, ``…镇``); communities a name and the *name*
of their street, written the way another department writes it (``…街办`` where the streets layer
says ``…街道``); a few community polygons overlap their neighbours a little, leave a small gap or
stick out of their street by a sliver (as polygons drawn by different departments do), and one
overlap is too large to clean on its own; households per community come in a table (CSV), some
communities above and below the bounds; roads are the centre-lines of a jittered lattice, one
feature per segment between crossings; a few residential points of interest (住宅小区).

Used by the onboarding tests and ``scripts/bench_onboard.py``; ``write_folder`` lays the city out
as ``flask onboard`` expects it. Everything is drawn from one seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from shapely.geometry import box

from geodata.crs import WGS84, metric_crs

CENTRE = (111.32, 30.68)  # 伍家岗区, Yichang
DISTRICT = "420503"
STREET_STEMS = ["宝塔河", "伍家", "大公桥", "万寿桥", "杨岔路", "伍家岗", "花艳", "桔城", "夷陵", "西陵",
                "云集", "学院", "葛洲坝", "窑湾", "东山", "隆中", "白沙", "中南", "桃花岭", "三峡"]
STREET_SUFFIXES = ["街道", "街道", "街道", "镇", "乡"]
COMMUNITY_A = ["和平", "友谊", "幸福", "光明", "长江", "胜利", "建设", "新华", "东方", "红星", "前进", "民主",
               "团结", "朝阳", "向阳", "金桥", "柳林", "桂花", "枫叶", "梅园", "松柏", "荷塘", "滨江", "望洲",
               "临江", "沿江", "万达", "紫阳", "北湖", "南湖", "星火", "常青", "锦绣", "宜康", "惠民", "安居"]
COMMUNITY_B = ["", "东", "西", "南", "北", "中", "新", "花园", "里", "苑", "坊", "湾", "路", "村", "岭", "港",
               "园", "城", "街", "台", "桥", "坪", "山", "洲", "堤", "门", "塘", "亭"]


@dataclass
class SampleCity:
    """The city's files as GeoDataFrames (EPSG:4326) and the households table."""

    streets: gpd.GeoDataFrame  # JDMC (name)
    communities: gpd.GeoDataFrame  # SQMC (name), SSJD (street name as another department writes it)
    roads: gpd.GeoDataFrame  # name, road_class: one segment between crossings per feature
    households: pd.DataFrame  # 社区, 户数, 人口
    pois: gpd.GeoDataFrame  # name, type
    district: str = DISTRICT


def sample_city(communities: int = 8, seed: int = 1, *, blocks_per_side: int = 4, block_m: float = 120.0,
                communities_per_street: tuple[int, int] = (2, 2), empty_streets: int = 0,
                roadless_streets: int = 0, unlisted: int = 0) -> SampleCity:
    """A city of about ``communities`` communities of ``blocks_per_side``² blocks each, grouped into
    streets of ``communities_per_street`` (columns, rows) communities.

    What real cities also hand over, on request: ``empty_streets`` streets at the end with no
    community at all (a rural street nobody has drawn yet); ``roadless_streets`` streets at the
    start whose roads are missing from the roads file; ``unlisted`` communities missing from the
    households table (no total for them). When ``communities`` does not fill the last street, the
    rest of that street is uncovered (a street of a single community, with a blind area)."""
    rng = np.random.default_rng(seed)
    sx, sy = communities_per_street
    per_street = sx * sy
    n_streets = max(1, int(np.ceil(communities / per_street))) + max(0, empty_streets)
    street_cols = int(np.ceil(np.sqrt(n_streets)))
    street_rows = int(np.ceil(n_streets / street_cols))
    cols, rows = street_cols * sx * blocks_per_side, street_rows * sy * blocks_per_side
    # the lattice: straight roads, jittered
    xs = np.arange(cols + 1) * block_m + np.r_[0, rng.uniform(-0.2, 0.2, cols - 1) * block_m, 0]
    ys = np.arange(rows + 1) * block_m + np.r_[0, rng.uniform(-0.2, 0.2, rows - 1) * block_m, 0]
    # road segments between crossings
    vx, vy = np.meshgrid(np.arange(cols + 1), np.arange(rows))
    def segments(x0, y0, x1, y1):
        return shapely.linestrings(np.stack([np.stack([x0, y0], -1), np.stack([x1, y1], -1)], axis=-2)
                                   .reshape(-1, 2, 2))

    vertical = segments(xs[vx], ys[vy], xs[vx], ys[vy + 1])
    hx, hy = np.meshgrid(np.arange(cols), np.arange(rows + 1))
    horizontal = segments(xs[hx], ys[hy], xs[hx + 1], ys[hy])
    roads = np.concatenate([vertical, horizontal])
    arterial = np.concatenate([(vx.ravel() % blocks_per_side) == 0, (hy.ravel() % blocks_per_side) == 0])
    street_of_road = np.full(len(roads), -1)

    def rect(c0, r0, c1, r1):
        return box(xs[c0], ys[r0], xs[c1], ys[r1])

    street_geoms, street_names, comm_geoms, comm_names, comm_street = [], [], [], [], []
    used = set()
    k = 0
    for s in range(n_streets):
        scol, srow = s % street_cols, s // street_cols
        c0, r0 = scol * sx * blocks_per_side, srow * sy * blocks_per_side
        street_geoms.append(rect(c0, r0, c0 + sx * blocks_per_side, r0 + sy * blocks_per_side))
        if s < roadless_streets:  # the roads inside this street are not in the file
            street_of_road[shapely.within(roads, street_geoms[-1])] = s
        stem = STREET_STEMS[s % len(STREET_STEMS)]
        stem += "" if s < len(STREET_STEMS) else str(s // len(STREET_STEMS))
        street_names.append(stem + STREET_SUFFIXES[s % len(STREET_SUFFIXES)])
        for q in range(per_street):
            if k >= communities:
                break
            qc, qr = q % sx, q // sx
            a = c0 + qc * blocks_per_side
            b = r0 + qr * blocks_per_side
            comm_geoms.append(rect(a, b, a + blocks_per_side, b + blocks_per_side))
            while True:
                name = COMMUNITY_A[k % len(COMMUNITY_A)]
                name += COMMUNITY_B[(k // len(COMMUNITY_A)) % len(COMMUNITY_B)]
                name += "" if k < len(COMMUNITY_A) * len(COMMUNITY_B) else str(k // (len(COMMUNITY_A)
                                                                                     * len(COMMUNITY_B)))
                if name not in used:
                    break
                k += 1
            used.add(name)
            comm_names.append(name + "社区")
            # another department writes the street as …街办 (streets say …街道) for half of them
            written = street_names[-1]
            if written.endswith("街道") and q % 2:
                written = written[:-2] + "街办"
            comm_street.append(written)
            k += 1
    comm_geoms = np.asarray(comm_geoms, dtype=object)
    street_geoms = np.asarray(street_geoms, dtype=object)
    # a street with fewer communities than its blocks: the rest is left uncovered (a rural gap)
    # defects: small overlaps, small gaps, slivers outside the street, one large overlap
    n = len(comm_geoms)
    for i in rng.choice(n, size=max(1, n // 10), replace=False):
        minx, miny, maxx, maxy = comm_geoms[i].bounds
        kind = rng.integers(3)
        if kind == 0:  # a 0.6 × 40 m notch into the eastern neighbour: overlap 24 m²
            comm_geoms[i] = shapely.union(comm_geoms[i], box(maxx, miny + 20, maxx + 0.6, miny + 60))
        elif kind == 1:  # a 0.5 × 30 m bite: a gap of 15 m²
            comm_geoms[i] = shapely.difference(comm_geoms[i], box(minx, miny + 30, minx + 0.5, miny + 60))
        else:  # drawn 0.3 m past the street's northern edge over 30 m: 9 m² outside
            comm_geoms[i] = shapely.union(comm_geoms[i], box(minx + 10, maxy, minx + 40, maxy + 0.3))
    if n > 1:  # one overlap too large to clean by itself (12 × 40 m)
        minx, miny, maxx, maxy = comm_geoms[0].bounds
        comm_geoms[0] = shapely.union(comm_geoms[0], box(maxx, miny + 10, maxx + 12, miny + 50))
    # households: most within 1,000–3,000, a few above and below
    hh = rng.integers(1300, 2700, n)
    hh[rng.choice(n, size=max(1, n // 8), replace=False)] = rng.integers(3200, 3800, max(1, n // 8))
    small = rng.choice(n, size=max(1, n // 10), replace=False)
    hh[small] = rng.integers(600, 900, len(small))
    pop = np.round(hh * rng.normal(2.62, 0.15, n)).astype(int)
    listed = np.ones(n, dtype=bool)
    listed[n - min(max(0, unlisted), n):] = False  # the last communities are missing from the table
    keep_road = street_of_road < 0
    roads, arterial = roads[keep_road], arterial[keep_road]
    # residential points in some blocks
    centres = np.stack(np.meshgrid((xs[:-1] + xs[1:]) / 2, (ys[:-1] + ys[1:]) / 2), -1).reshape(-1, 2)
    pick = rng.choice(len(centres), size=max(4, len(centres) // 5), replace=False)
    poi_xy = centres[pick] + rng.uniform(-20, 20, (len(pick), 2))
    kinds = rng.choice(["住宅小区", "居民区", "幼儿园", "诊所"], size=len(pick), p=[0.5, 0.2, 0.2, 0.1])

    crs = metric_crs(*CENTRE)
    x0, y0 = gpd.GeoSeries(shapely.points([CENTRE]), crs=WGS84).to_crs(crs).iloc[0].coords[0]
    x0, y0 = x0 - cols * block_m / 2, y0 - rows * block_m / 2

    def place(geoms, **columns):
        moved = shapely.transform(np.asarray(geoms, dtype=object), lambda c: c + (x0, y0))
        return gpd.GeoDataFrame(columns, geometry=list(moved), crs=crs).to_crs(WGS84)

    prefix = {True: "大道", False: "路"}
    return SampleCity(
        streets=place(street_geoms, JDMC=street_names),
        communities=place(comm_geoms, SQMC=comm_names, SSJD=comm_street),
        roads=place(roads, name=[f"{COMMUNITY_A[i % len(COMMUNITY_A)]}{prefix[bool(a)]}"
                                 for i, a in enumerate(arterial)],
                    road_class=np.where(arterial, "arterial", "branch")),
        households=pd.DataFrame({"社区": comm_names, "户数": hh, "人口": pop})[listed].reset_index(drop=True),
        pois=place(shapely.points(poi_xy), name=[f"{t}{i}" for i, t in enumerate(kinds)], type=kinds),
    )


CONFIG = """# what the files of this folder hold (flask --app webmap onboard FOLDER --district CODE)
[streets]
file = "streets.geojson"
map = { JDMC = "name" }

[communities]
file = "communities.geojson"
map = { SQMC = "name", SSJD = "street" }

[roads]
file = "roads.geojson"

[households]
file = "households.csv"
columns = { community = "社区", households = "户数", population = "人口" }

[pois]
file = "pois.geojson"
category = "type"

[clean]
max_sliver = 50
"""


def write_folder(city: SampleCity, folder: str | Path, *, pois: bool = False) -> Path:
    """Lay ``city`` out as a folder ``flask onboard`` reads: GeoJSON files, the households CSV
    and ``onboard.toml``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pyogrio.write_dataframe(city.streets, folder / "streets.geojson")
    pyogrio.write_dataframe(city.communities, folder / "communities.geojson")
    pyogrio.write_dataframe(city.roads, folder / "roads.geojson")
    city.households.to_csv(folder / "households.csv", index=False, encoding="utf-8-sig")
    config = CONFIG
    if pois:
        pyogrio.write_dataframe(city.pois, folder / "pois.geojson")
    else:
        config = config.replace('[pois]\nfile = "pois.geojson"\ncategory = "type"\n\n', "")
    (folder / "onboard.toml").write_text(config, encoding="utf-8")
    return folder


__all__ = ["SampleCity", "sample_city", "write_folder"]
