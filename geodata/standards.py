"""Per-city settings and standards, each with its source (design.md §1).

These are the defaults written into the ``settings`` table by ``init-db``; a city changes
them there. Nothing here is a national number unless its source says so.
"""

from __future__ import annotations

from sqlalchemy import Connection, insert, select

from geodata.models import Setting

#: Incident categories: code → (kind 部件/事件, name, time limit in working hours).
#: Codes follow the big classes of GB/T 30428 / CJ/T 214 (部件 01–06, 事件 01–06).
INCIDENT_CATEGORIES: dict[str, tuple[str, str, float]] = {
    "C01-01": ("component", "井盖破损 (manhole cover damaged)", 8.0),
    "C01-02": ("component", "路灯不亮 (street light out)", 16.0),
    "C02-01": ("component", "道路破损 (road surface damaged)", 40.0),
    "C03-01": ("component", "垃圾桶破损 (bin damaged)", 16.0),
    "C04-01": ("component", "绿地脏乱 (green space untidy)", 16.0),
    "E01-01": ("event", "暴露垃圾 (exposed rubbish)", 4.0),
    "E01-02": ("event", "积存垃圾渣土 (accumulated waste)", 8.0),
    "E02-01": ("event", "非法小广告 (illegal flyers)", 8.0),
    "E03-01": ("event", "施工扰民 (construction nuisance)", 24.0),
    "E03-02": ("event", "违章搭建 (illegal structure)", 160.0),
    "E04-01": ("event", "占道经营 (street vending)", 4.0),
    "E05-01": ("event", "路面积水 (flooded road)", 2.0),
}

#: Facility kinds and the 5/10/15-minute life circle each serves (GB 50180-2018).
FACILITY_KINDS: dict[str, tuple[str, float]] = {
    "service_centre": ("社区服务中心", 1000.0),
    "health_centre": ("社区卫生服务中心", 500.0),
    "service_station": ("社区服务站", 300.0),
    "health_station": ("社区卫生服务站", 300.0),
    "kindergarten": ("幼儿园", 300.0),
    "elderly_care": ("养老服务站", 300.0),
    "police_post": ("警务室", 500.0),
}

DEFAULT_SETTINGS: list[dict] = [
    {"key": "households_min", "value": 1000, "description": "社区户数下限 minimum households per community",
     "source": "临沂 临发[2001]26号 (1,000–3,000 户); 城市居民委员会组织法 §6 says 100–700"},
    {"key": "households_max", "value": 3000, "description": "社区户数上限 maximum households per community",
     "source": "临沂 临发[2001]26号; Wuhai's 67 urban communities hold about 3,000 each"},
    {"key": "grid_households", "value": [300, 500],
     "description": "social-governance grid: households per cell, one 网格员 each",
     "source": "commonly quoted range; not a national number"},
    {"key": "grid_area_m2", "value": 10000, "description": "urban-management unit grid area",
     "source": "Beijing Dongcheng 2004 (1,652 cells of about 10,000 m²)"},
    {"key": "community_floor_area_m2", "value": 300,
     "description": "office and activity rooms of a community, minimum floor area",
     "source": "Inner Mongolia standard (Wuhai average 1,010 m², largest 6,400 m²)"},
    {"key": "service_area_per_100_households_m2", "value": 30,
     "description": "community service space per 100 households", "source": "NDRC 2022"},
    {"key": "people_per_household", "value": 2.62,
     "description": "average family household size", "source": "2020 census, China"},
    {"key": "facility_reach_m", "value": {k: v[1] for k, v in FACILITY_KINDS.items()},
     "description": "walking reach of each facility kind (5-minute ≈ 300 m, 10-minute ≈ 500 m, "
                    "15-minute 800–1,000 m)", "source": "GB 50180-2018 life circles"},
    {"key": "incident_categories",
     "value": {k: {"kind": v[0], "name": v[1], "limit_hours": v[2]} for k, v in INCIDENT_CATEGORIES.items()},
     "description": "incident categories and their time limits in working hours",
     "source": "GB/T 30428, CJ/T 214 (limits vary by city; these are examples)"},
    {"key": "rate_targets", "value": {"closed": 0.9, "closed_on_time": 0.7},
     "description": "结案率 and 按期结案率 targets", "source": "common city targets"},
]


def seed_settings(conn: Connection) -> int:
    """Insert the default settings that are missing; never overwrite a city's own values."""
    table = Setting.__table__
    present = set(conn.execute(select(table.c.key)).scalars())
    missing = [row for row in DEFAULT_SETTINGS if row["key"] not in present]
    if missing:
        conn.execute(insert(table), missing)
    return len(missing)


def get_setting(conn: Connection, key: str):
    """The stored value of setting ``key`` (the default when the row is missing)."""
    value = conn.execute(select(Setting.value).where(Setting.key == key)).scalar_one_or_none()
    if value is None:
        value = next(row["value"] for row in DEFAULT_SETTINGS if row["key"] == key)
    return value
