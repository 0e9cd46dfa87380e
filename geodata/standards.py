"""Per-city settings and standards, each with its source (docs/domain.md §1).

These are the defaults written into the ``settings`` table by ``init-db``; a city changes
them there. Nothing here is a national number unless its source says so.
"""

from __future__ import annotations

from sqlalchemy import Connection, insert, select

from geodata.i18n import N_
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

#: facility kinds as people name them, translated where shown (the Chinese are those above)
FACILITY_KIND_LABELS = {"service_centre": N_("community service centre"),
                        "health_centre": N_("community health centre"),
                        "service_station": N_("community service station"),
                        "health_station": N_("community health station"), "kindergarten": N_("kindergarten"),
                        "elderly_care": N_("elderly care station"), "police_post": N_("police post")}

#: what a facility falls short in (coverage findings), as people say it
FACILITY_PROBLEM_LABELS = {"under_floor_area": N_("floor area under the standard"),
                           "overloaded": N_("serves more households than the standard")}

#: The facility standards table (设施配置标准): one row per facility kind and life-circle level,
#: each with its source. ``reach_m`` is the walking distance (GB 50180-2018: 5-minute ≈ 300 m,
#: 10-minute ≈ 500 m, 15-minute 800–1,000 m); ``required`` says every community must have one;
#: ``min_floor_area_m2`` and ``floor_area_per_100_households_m2`` are the floor-area standards (0:
#: none); ``households_per_facility`` is the most households one facility serves where a standard
#: gives one (0: none) — the upper end of its life circle's households. A kind may appear on
#: several rows (one per level or distance); its first row holds its floor-area and load standards.
FACILITY_STANDARDS: list[dict] = [
    {"kind": "service_centre", "level": "15-minute", "reach_m": 1000, "required": False,
     "min_floor_area_m2": 0, "floor_area_per_100_households_m2": 0, "households_per_facility": 32000,
     "source": N_("GB 50180-2018 15-minute life circle: 800–1,000 m walk, 17,000–32,000 households")},
    {"kind": "health_centre", "level": "10-minute", "reach_m": 500, "required": False,
     "min_floor_area_m2": 0, "floor_area_per_100_households_m2": 0, "households_per_facility": 8000,
     "source": N_("GB 50180-2018 10-minute life circle: ~500 m walk, 5,000–8,000 households")},
    {"kind": "service_station", "level": "5-minute", "reach_m": 300, "required": True,
     "min_floor_area_m2": 300, "floor_area_per_100_households_m2": 30, "households_per_facility": 4000,
     "source": N_("GB 50180-2018 5-minute life circle (~300 m, 1,500–4,000 households); office and activity "
                  "rooms ≥ 300 m² (Inner Mongolia standard); ≥ 30 m² service space per 100 households "
                  "(NDRC 2022); every community its own rooms")},
    {"kind": "health_station", "level": "5-minute", "reach_m": 300, "required": False,
     "min_floor_area_m2": 0, "floor_area_per_100_households_m2": 0, "households_per_facility": 4000,
     "source": N_("GB 50180-2018 5-minute life circle: ~300 m walk, 1,500–4,000 households")},
    {"kind": "kindergarten", "level": "5-minute", "reach_m": 300, "required": False,
     "min_floor_area_m2": 0, "floor_area_per_100_households_m2": 0, "households_per_facility": 4000,
     "source": N_("GB 50180-2018 5-minute life circle: ~300 m walk, 1,500–4,000 households")},
    {"kind": "elderly_care", "level": "5-minute", "reach_m": 300, "required": False,
     "min_floor_area_m2": 0, "floor_area_per_100_households_m2": 0, "households_per_facility": 4000,
     "source": N_("GB 50180-2018 5-minute life circle: ~300 m walk, 1,500–4,000 households")},
    {"kind": "police_post", "level": "10-minute", "reach_m": 500, "required": False,
     "min_floor_area_m2": 0, "floor_area_per_100_households_m2": 0, "households_per_facility": 0,
     "source": N_("city practice (not a GB 50180-2018 facility): reach as the 10-minute circle")},
]

#: The working calendar incident limits run on (工作日历): working periods of a day, working
#: weekdays (ISO, 1 = Monday), public holidays and make-up working days (调休上班).
WORKING_CALENDAR: dict = {
    "hours": [["09:00", "17:00"]],
    "weekdays": [1, 2, 3, 4, 5],
    "holidays": [
        "2025-01-01", "2025-01-28", "2025-01-29", "2025-01-30", "2025-01-31", "2025-02-01",
        "2025-02-02", "2025-02-03", "2025-02-04", "2025-04-04", "2025-04-05", "2025-04-06",
        "2025-05-01", "2025-05-02", "2025-05-03", "2025-05-04", "2025-05-05", "2025-05-31",
        "2025-06-01", "2025-06-02", "2025-10-01", "2025-10-02", "2025-10-03", "2025-10-04",
        "2025-10-05", "2025-10-06", "2025-10-07", "2025-10-08",
        "2026-01-01", "2026-01-02", "2026-01-03", "2026-02-15", "2026-02-16", "2026-02-17",
        "2026-02-18", "2026-02-19", "2026-02-20", "2026-02-21", "2026-02-22", "2026-02-23",
        "2026-04-04", "2026-04-05", "2026-04-06", "2026-05-01", "2026-05-02", "2026-05-03",
        "2026-05-04", "2026-05-05", "2026-06-19", "2026-06-20", "2026-06-21", "2026-09-25",
        "2026-09-26", "2026-09-27", "2026-10-01", "2026-10-02", "2026-10-03", "2026-10-04",
        "2026-10-05", "2026-10-06", "2026-10-07",
    ],
    "workdays": ["2025-01-26", "2025-02-08", "2025-04-27", "2025-09-28", "2025-10-11",
                 "2026-01-04", "2026-02-14", "2026-02-28", "2026-05-09", "2026-09-20", "2026-10-10"],
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
    {"key": "facility_standards", "value": FACILITY_STANDARDS,
     "description": "设施配置标准 facility standards: kind, life-circle level, walking reach (m), "
                    "required in every community, minimum floor area (m²), floor area per 100 "
                    "households (m²), households per facility (0 = no standard); each row with its source",
     "source": "GB 50180-2018; Inner Mongolia (300 m²); NDRC 2022 (30 m² per 100 households)"},
    {"key": "incident_categories",
     "value": {k: {"kind": v[0], "name": v[1], "limit_hours": v[2]} for k, v in INCIDENT_CATEGORIES.items()},
     "description": "incident categories and their time limits in working hours",
     "source": "GB/T 30428, CJ/T 214 (limits vary by city; these are examples)"},
    {"key": "rate_targets", "value": {"closed": 0.9, "closed_on_time": 0.7},
     "description": "结案率 and 按期结案率 targets", "source": "common city targets"},
    {"key": "working_calendar", "value": WORKING_CALENDAR,
     "description": "工作日历 working calendar of incident time limits: working hours of a day, "
                    "working weekdays (1 = Monday), public holidays (法定节假日) and make-up working "
                    "days (调休上班); a limit in working days is that many working days of these hours",
     "source": "国务院办公厅 holiday notices for 2025 (国办发明电〔2024〕12号) and 2026 "
               "(国办发明电〔2025〕7号); a city adds each year's notice and its own office hours"},
    {"key": "duplicate_distance_m", "value": 50.0,
     "description": "疑似重复 a report this close (metres) to an open case of the same category is "
                    "offered as a likely duplicate",
     "source": "local practice; choose per city"},
    {"key": "photo_max_mb", "value": 8.0,
     "description": "案件照片 largest photo accepted with a case (MB); JPEG, PNG or WebP",
     "source": "a phone camera's photo is 2–6 MB"},
    {"key": "session_hours", "value": 8,
     "description": "登录有效期 hours a sign-in lasts (1–744): then the user signs in again, whatever they "
                    "did in between; GRIDPLAN_SESSION_HOURS overrides it",
     "source": "a working day; 等保 2.0 asks that sessions end"},

    {"key": "incident_separation", "value": True,
     "description": "岗位分离 监督员 report and verify (核查), never a case they handled; the 指挥中心 "
                    "files (立案), cancels (作废) and dispatches (派遣), not a 监督员 or 网格长; off: one "
                    "person may take every step (a small town's office)",
     "source": "GB/T 30428, CJJ/T 106 (监督中心 and 指挥中心 separate)"},
    {"key": "supervise_rule", "value": {"from": 0.8, "yellow": 1.0, "red": 2.0},
     "description": "督办 a case may be chased once this share of its time limit has run (from); it "
                    "is a yellow warning (黄牌) at its limit and a red one (红牌) at this many times "
                    "its limit",
     "source": "local practice (e.g. yellow at due, red at twice the limit); choose per city"},
    {"key": "incident_after_photo", "value": ["C02-01", "E03-02"],
     "description": "处置后照片 categories whose handling needs an after-photo (category codes)",
     "source": "local practice; choose per city"},
    {"key": "unit_households_max", "value": 100000,
     "description": "导入检查 most households one planning unit or building may hold: an imported file "
                    "with more in a row is refused (a typing or unit error, e.g. 9e18)",
     "source": "a large compound (小区) holds a few thousand households; 100,000 leaves room for any block"},
    {"key": "unit_population_max", "value": 100000,
     "description": "导入检查 most people one planning unit or building may hold: an imported file with "
                    "more in a row is refused",
     "source": "as unit_households_max"},
    {"key": "import_region", "value": {"lon_min": 73.0, "lon_max": 136.0, "lat_min": 3.0, "lat_max": 54.0},
     "description": "导入范围 where imported features may lie (longitude, latitude in degrees): a file "
                    "outside it, or at 0°, 0°, was read in the wrong coordinate system and is refused",
     "source": "China's extent (73°E–135°E, 4°N–54°N) with a margin; a city may narrow it to its province"},
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
