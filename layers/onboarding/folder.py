"""One command for a whole city: a folder of whatever the city has, loaded in order, with a report.

The folder holds files named by layer — ``streets``, ``communities``, ``roads``, ``buildings``,
``pois``, ``facilities``, ``incidents`` (shapefile zip, GeoPackage, GeoJSON or CSV), ``households.csv``
(community name or code, households, population), ``population.tif``, ``codes.csv`` (the official code
table) — and ``onboard.toml`` saying what their fields and values mean::

    district = "420503"            # or --district
    [streets]
    file = "jd.shp.zip"            # default: streets.* in the folder
    map = { JDMC = "name" }
    [communities]
    map = { SQMC = "name", SSJD = "street" }
    [facilities]
    map = { 类别 = "kind", 名称 = "name" }
    values = { kind = { 幼儿园 = "kindergarten", 诊所 = "health_station" } }   # or "kinds.csv"
    unmapped = "skip"
    [households]
    columns = { community = "社区", households = "户数", population = "人口" }
    [pois]
    category = "type"              # residential ones (住宅小区, 居民区 …) weigh households
    [clean]
    max_sliver = 50

Every file the folder's config names (``file = …``, ``values = …`` CSVs) or that is found in it by
name lies inside the folder: no ``..``, no absolute path, no link pointing out of it, no GDAL
"virtual" file that names others. The folder comes from another department and the refusal goes
back to it, so a refusal names the entry, quotes at most a short printable excerpt of a file, and
an onboarding folder that is, holds or lies inside the app's own files (``private``: the
instance folder with the secret key) is refused outright.

Steps, in order: streets and communities by name (provisional codes under the district), their
topology and cleaning, roads (and buildings), units built from the roads with households estimated
(community totals honoured), facilities and incidents with their value mappings, the official code
table. Each step is one transaction; the report (JSON, rendered as HTML by the web layer) says what
was loaded, estimated, provisional, cleaned and left for the planner.
"""

from __future__ import annotations

import re
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
from sqlalchemy import Engine

from geodata.code_table import apply_code_table
from geodata.errors import Refused, excerpt
from geodata.i18n import _
from geodata.store import count_layer, read_layer, unit_totals
from layers.onboarding.boundaries import MAX_SLIVER_M2, clean_stored, stored_topology
from layers.onboarding.imports import ImportRefused, check_district, import_layer, parse_values, read_source
from layers.onboarding.units import RESIDENTIAL_CATEGORIES, build_stored, residential_points
from layers.plans.communities import bounds

CONFIG_NAMES = ("onboard.toml", "gridplan.toml")
SUFFIXES = (".zip", ".gpkg", ".geojson", ".json", ".shp", ".csv")
LAYERS = ("streets", "communities", "roads", "buildings", "pois", "facilities", "incidents")
REQUIRED = ("streets", "communities", "roads")
STEPS = ("streets", "communities", "clean", "roads", "buildings", "units", "facilities", "incidents", "codes",
         "report")
Progress = Callable[[str, int, int], None]
#: how much of one problem a refusal carries back to the department (a line of a file can be a megabyte)
PROBLEM_CHARS = 300
#: what GDAL reads as a "virtual" dataset naming other files, whatever the file is called
VIRTUAL_FILES = (b"<OGRVRTDataSource", b"<VRTDataset", b"<GDAL_WMS", b"<WFS_GetCapabilities")
#: PROJ definitions that read files (init files, grids) rather than describe a coordinate system
CRS_NAMING_FILES = re.compile(r"(init|grids|file|gridshift)\s*=|@", re.IGNORECASE)


class OnboardRefused(Refused):
    """The folder cannot be onboarded as it is; ``problems`` names every reason."""

    def __init__(self, problems: list[str] | str, step: str | None = None) -> None:
        problems = [problems] if isinstance(problems, str) else list(problems)
        # each one short and printable: it may quote a line of the department's file
        self.problems = [excerpt(p, PROBLEM_CHARS) for p in problems]
        self.step = step
        super().__init__((f"{step}: " if step else "") + "; ".join(self.problems[:20]))


@dataclass
class Plan:
    """What the folder holds: a file (or None) per layer, and the config of each."""

    folder: Path
    district: str
    files: dict[str, Path | None]
    config: dict


@dataclass
class OnboardReport:
    """What onboarding did, step by step, with the seconds each took."""

    folder: str
    district: str
    steps: dict[str, dict] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"folder": self.folder, "district": self.district, "steps": self.steps,
                "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
                "total_seconds": round(sum(self.seconds.values()), 2)}


def _find(folder: Path, stem: str) -> Path | None:
    for suffix in SUFFIXES:
        for path in sorted(folder.glob(f"{stem}*{suffix}")):
            if path.is_file():
                return path
    return None


def _refuse_private(root: Path, private: tuple[Path, ...]) -> None:
    """Refuse a folder that is, holds or lies inside one of the app's own folders (the instance
    folder with the secret key), or holds one of its files (the SpatiaLite database): nothing of
    them may be named by an import."""
    for own in private:
        own = Path(own).resolve()
        inside = own.is_relative_to(root) or (own.is_dir() and root.is_relative_to(own))
        if inside:
            raise OnboardRefused(_("{folder} is, holds or lies inside gridplan's own files ({own}: the "
                                   "secret key, the database): onboard from a folder of the city's files "
                                   "only", folder=root, own=own))


def _inside(root: Path, name: object, entry: str) -> Path:
    """The file ``name`` (from ``entry`` of the config) in the folder ``root``; refused when it is
    not a relative name, climbs out with ``..``, or is a link that points out of the folder."""
    if not isinstance(name, str) or not name.strip():
        raise OnboardRefused(_("{entry} must be the name of a file in the folder", entry=entry))
    relative = Path(name)
    if relative.is_absolute() or relative.drive or ".." in relative.parts or "\0" in name:
        raise OnboardRefused(_("{entry} = {name}: only a file inside the folder may be named (no absolute "
                               "path, no ..)", entry=entry, name=excerpt(repr(name), 160)))
    path = root / relative
    _check_file(root, path, _("{entry} = {name}", entry=entry, name=excerpt(repr(name), 160)))
    return path


def _check_file(root: Path, path: Path, what: str) -> None:
    """Refuse ``path`` when it (or, for a shapefile, a part beside it) resolves outside ``root``,
    or is a GDAL virtual file that would read others."""
    parts = [path]
    if path.suffix.lower() == ".shp":  # GDAL reads the .dbf, .shx, .prj, .cpg … of the same name
        parts += [p for p in path.parent.glob(path.stem + ".*") if p != path]
    for part in parts:
        if not part.exists() and not part.is_symlink():
            continue
        try:
            outside = not part.resolve().is_relative_to(root)
        except (RuntimeError, OSError):  # a loop of links
            outside = True
        if outside:
            raise OnboardRefused(_("{what}: {name} is a link pointing out of the folder; only the folder's "
                                   "own files are read", what=what, name=excerpt(part.name)))
        if part.is_file():
            with part.open("rb") as f:
                head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
            if head.startswith(VIRTUAL_FILES):
                raise OnboardRefused(_("{what}: {name} is a GDAL virtual file that would read other files; "
                                       "send the data itself", what=what, name=excerpt(part.name)))


def read_config(folder: str | Path, district: str | None = None, *, private: tuple[Path, ...] = ()) -> Plan:
    """Read ``onboard.toml`` (optional) and find the files; refuse what is missing or malformed,
    and any file outside the folder (see the module notes; ``private``: the app's own folders)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise OnboardRefused(_("{folder} is not a folder", folder=folder))
    root = folder.resolve()
    _refuse_private(root, tuple(private))
    config: dict = {}
    for name in CONFIG_NAMES:
        path = folder / name
        if path.exists() or path.is_symlink():
            _check_file(root, path, name)
            try:
                config = tomllib.loads(path.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise OnboardRefused(_("{name} is not valid TOML ({exc})", name=name, exc=exc)) from None
            break
    district = district or config.get("district")
    problems = []
    if not district:
        problems.append("name the district: --district CODE (or district = \"…\" in onboard.toml)")
    files: dict[str, Path | None] = {}
    for layer in (*LAYERS, "households", "raster", "codes"):
        section = config.get(layer, {})
        if not isinstance(section, dict):
            problems.append(f"[{layer}] in the config must be a table")
            continue
        default = {"households": "households", "raster": "population", "codes": "codes"}.get(layer, layer)
        if "file" in section:
            path = _inside(root, section["file"], f"[{layer}] file")
            if not path.exists():
                problems.append(f"[{layer}] file {excerpt(section['file'])} is not in {folder}")
            files[layer] = path
        elif layer == "raster":
            found = sorted(folder.glob("*.tif")) + sorted(folder.glob("*.tiff"))
            files[layer] = found[0] if found else None
        else:
            files[layer] = _find(folder, default)
        if files[layer] is not None and "file" not in section:
            _check_file(root, files[layer], f"[{layer}]")
        crs = section.get("crs")
        if crs is not None and (not isinstance(crs, str | int) or CRS_NAMING_FILES.search(str(crs))):
            raise OnboardRefused(_("[{layer}] crs = {crs}: give an EPSG code (EPSG:4490) or GCJ02, not a "
                                   "definition that reads files", layer=layer, crs=excerpt(repr(crs))))
        values = section.get("values")
        if isinstance(values, dict):
            for field_name, table in values.items():
                if isinstance(table, str):
                    _inside(root, table, f"[{layer}] values.{excerpt(field_name)}")
    for layer in REQUIRED:
        if files.get(layer) is None and not any(p.startswith(f"[{layer}]") for p in problems):
            problems.append(f"no {layer} file in {folder} (a file named {layer}.geojson/.gpkg/.zip/.csv, "
                            f"or [{layer}] file = … in onboard.toml)")
    if problems:
        raise OnboardRefused(problems)
    return Plan(folder, str(district), files, config)


def _values(plan: Plan, layer: str) -> dict[str, dict[str, str]] | None:
    raw = plan.config.get(layer, {}).get("values")
    if not raw:
        return None
    out: dict[str, dict[str, str]] = {}
    root = plan.folder.resolve()
    for name, table in raw.items():
        if isinstance(table, str):  # a CSV beside the config, inside the folder (checked again here)
            path = _inside(root, table, f"[{layer}] values.{excerpt(name)}")
            if ":" in str(name) or "=" in str(name):
                raise OnboardRefused(_("[{layer}] values.{name}: a field name has no : or =",
                                       layer=layer, name=excerpt(name)))
            out.update(parse_values([f"{name}={path}"]))
        elif isinstance(table, dict):
            out[name] = {str(k): str(v) for k, v in table.items()}
        else:
            raise OnboardRefused(_("[{layer}] values.{name} is a table of source = kind, or a CSV file name",
                                   layer=layer, name=name))
    return out


def _import(engine: Engine, plan: Plan, layer: str, **extra) -> dict:
    section = plan.config.get(layer, {})
    report = import_layer(engine, layer, plan.files[layer], mode="replace", crs=section.get("crs"),
                          mapping={str(k): str(v) for k, v in section.get("map", {}).items()},
                          district=plan.district, values=_values(plan, layer),
                          unmapped=section.get("unmapped", "refuse"), actor="onboard", **extra)
    return {"file": plan.files[layer].name, "written": report.written, "repaired": len(report.repaired),
            "provisional": len(report.provisional), "matched_by_stem": report.matched_by_stem,
            "placed_by_area": report.placed_by_area, "skipped": report.skipped,
            "approximate": report.approximate, "ignored_fields": report.ignored_fields}


def _pois(plan: Plan) -> gpd.GeoDataFrame | None:
    path = plan.files.get("pois")
    if path is None:
        return None
    import tempfile

    from geodata.crs import parse_crs, to_wgs84

    section = plan.config.get("pois", {})
    with tempfile.TemporaryDirectory(prefix="gridplan-pois-") as tmp:
        raw = read_source(path, declared_crs=parse_crs(section.get("crs")), workdir=Path(tmp))
    raw = to_wgs84(raw.rename(columns=section.get("map", {})), parse_crs(section.get("crs")))
    categories = tuple(section.get("residential", RESIDENTIAL_CATEGORIES))
    return residential_points(raw, section.get("category"), categories)


def _figures(engine: Engine) -> dict:
    """The city as it now stands: counts, provisional codes, households and the bounds."""
    communities = read_layer(engine, "communities")
    streets = read_layer(engine, "streets")
    totals = unit_totals(engine)
    hh = totals.set_index("community_code")["households"] if len(totals) else pd.Series(dtype=int)
    per = communities["code"].map(hh).fillna(0).to_numpy() if len(communities) else np.zeros(0)
    limits = bounds(engine)
    status = limits.status(per)
    return {"streets": len(streets), "communities": len(communities),
            "provisional_streets": int(streets["provisional"].astype(bool).sum()) if len(streets) else 0,
            "provisional_communities": int(communities["provisional"].astype(bool).sum())
            if len(communities) else 0,
            "units": count_layer(engine, "units"), "households": int(totals["households"].sum()),
            "bounds": [limits.minimum, limits.maximum],
            "communities_below": int((status == "below").sum()),
            "communities_above": int((status == "above").sum()),
            "blind_spot_households": int(totals.loc[totals["community_code"].isna(), "households"].sum())}


def onboard(engine: Engine, folder: str | Path, district: str | None = None, *,
            progress: Progress | None = None, private: tuple[Path, ...] = ()) -> OnboardReport:
    """Load a whole city from ``folder`` (see the module notes); returns the report. Raises
    :class:`OnboardRefused` naming the step and its problems when one cannot be done — the steps
    before it stay loaded, each having been its own transaction. A folder naming a file outside
    itself is refused before anything is loaded. ``private``: the app's own folders (instance/),
    which the onboarding folder may not be, hold or lie in."""
    plan = read_config(folder, district, private=private)
    try:
        check_district(engine, plan.district)
    except ImportRefused as exc:
        raise OnboardRefused(exc.problems, "district") from None
    report = OnboardReport(str(plan.folder), plan.district)

    def step(name: str, work: Callable[[], dict | None]) -> None:
        if progress:
            progress(name, STEPS.index(name), len(STEPS))
        started = time.perf_counter()
        try:
            done = work()
        except (ImportRefused, Refused) as exc:
            problems = getattr(exc, "problems", [str(exc)])
            raise OnboardRefused(problems, name) from None
        report.seconds[name] = time.perf_counter() - started
        if done is not None:
            report.steps[name] = done

    step("streets", lambda: _import(engine, plan, "streets"))
    step("communities", lambda: _import(engine, plan, "communities"))

    def cleaning() -> dict:
        before = stored_topology(engine).summary()
        max_sliver = float(plan.config.get("clean", {}).get("max_sliver", MAX_SLIVER_M2))
        result = clean_stored(engine, max_sliver, actor="onboard")
        after = result.summary()
        return {"max_sliver_m2": max_sliver,
                "before": {k: v for k, v in before.items() if k != "findings"},
                "changed": result.changed,
                "after": {k: v for k, v in after.items() if k not in ("findings", "changed")},
                "left_for_planner": after["findings"]}

    step("clean", cleaning)
    step("roads", lambda: _import(engine, plan, "roads", number=True))
    if plan.files.get("buildings"):
        step("buildings", lambda: _import(engine, plan, "buildings", number=True))

    def units() -> dict:
        households = plan.files.get("households")
        columns = plan.config.get("households", {}).get("columns")
        built = build_stored(engine, households=households, raster=plan.files.get("raster"), pois=_pois(plan),
                             actor="onboard", columns=columns)
        return built.summary() | {"households_table": households.name if households else None,
                                  "raster": plan.files["raster"].name if plan.files.get("raster") else None}

    step("units", units)
    for layer in ("facilities", "incidents"):
        if plan.files.get(layer):
            step(layer, lambda layer=layer: _import(engine, plan, layer, number=True))
    if plan.files.get("codes"):
        step("codes", lambda: apply_code_table(engine, plan.files["codes"], actor="onboard").summary())
    step("report", lambda: _figures(engine))
    return report


__all__ = ["OnboardRefused", "OnboardReport", "onboard", "read_config"]
