"""Coverage answers computed once per state of the data, and drawn by view.

A gap report reads units, communities, streets, grid cells, facilities, roads and buildings and
the standards table; its answer changes only when one of them does. :func:`state_key` names that
state from what the database stores (the boundary revision, each layer's own revision raised by
every write, the standards setting), never from what a process remembers, so that two gunicorn
workers and the job worker agree; the key is the answers' ETag (an unchanged answer costs a 304).
A street's key names only the revisions of the districts its answer is read from (its own, and
those within reach of it: :func:`scope_districts`), so an import in another district leaves its
kept answer current; a city's names every revision.

A scope of up to :data:`SYNC_UNITS` units (a street, the demo district) is computed in the web
request (well under a second) and kept under its key by the app's :class:`CoverageMemory`. A larger scope
(a city) is computed by the background worker (:data:`layers.coverage.gaps.JOB_KIND`), whose stored
result carries the key and, per row of the standards table, the households out of reach by unit:
every process then answers from the job's result, and a gap layer is drawn for the view asked
(``bbox``) from the units the database finds in it, simplified for the zoom.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from sqlalchemy import Connection, Engine, select

from geodata.dialect import bbox_filter, bounds_columns
from geodata.errors import Refused
from geodata.extents import districts_meeting, refresh_extents
from geodata.i18n import _
from geodata.models import District, Job, Street
from geodata.revisions import CACHED_LAYERS, all_revisions, district_revisions
from geodata.standards import get_setting
from geodata.store import count_layer, read_layer
from layers.coverage import gaps as coverage

#: Scopes with more units than this are computed by the background worker, never in a request.
SYNC_UNITS = 40_000
#: How many computed scopes a process keeps (the district and a few streets).
KEEP = 4
#: A view holding more units than this (a city seen whole) is shaded by community instead.
MAX_VIEW_UNITS = 6_000
#: What a report job's result holds beside the report (for the cache, not for readers).
CACHE_KEYS = ("key", "uncovered_by_unit", "uncovered_by_community")
#: Coordinates sent to the map are rounded to this (degrees: about 10 cm).
GRID = 1e-6


def scope_districts(conn: Connection, street: str | None, standards: list | None) -> set[str] | None:
    """The districts a coverage answer of ``street`` is read from: the street's own, and every
    district whose outline comes within the largest reach of the street's box (its facilities,
    roads and buildings serve households across the edge: :func:`layers.coverage.gaps.load_inputs`
    reads them in the street's box widened so). ``None`` — every district — for a city, or when
    the database cannot say (a street without an outline, no district outlines stored)."""
    if street is None:
        return None
    table = Street.__table__
    found = conn.execute(select(*bounds_columns(conn, table.c.geom), table.c.district_code)
                         .where(table.c.code == street)).first()
    if found is None or any(v is None for v in found):
        return None
    reach = max(coverage.reach_limits(coverage.standards_from_rows(standards)).values(), default=1000.0)
    minx, miny, maxx, maxy = (float(v) for v in found[:4])
    # the box load_inputs reads, a little wider (the street's outline holds its units)
    metres = 1.5 * reach + 200.0
    dlat = metres / 111_320.0
    dlon = metres / (111_320.0 * max(math.cos(math.radians((miny + maxy) / 2)), 0.1))
    box = (minx - dlon, miny - dlat, maxx + dlon, maxy + dlat)
    districts = District.__table__
    if conn.execute(select(districts.c.code).where(districts.c.geom.is_(None)).limit(1)).first():
        return None  # a district without an outline may lie within reach: it cannot be told
    near = {c for (c,) in conn.execute(select(districts.c.code).where(bbox_filter(conn, districts, box)))}
    if not near:  # no outlines to judge by: what lies within reach cannot be told apart
        return None
    # what serves the street's households is read by place, whichever district keeps it: a
    # facility (road, building) of another district sited within reach counts that district in,
    # so its change — or its coming and going — changes this key. Told by each district's extent
    # of the layer (geodata.extents), not by a read of every district's rows in the box.
    for layer in ("facilities", "roads", "buildings"):
        near |= set(districts_meeting(conn, layer, box))
    return near | {str(found[4])}


def state_key(engine: Engine, street: str | None, method: str | None) -> str:
    """The name of what a coverage answer of ``street`` by ``method`` is computed from: the
    database, its revisions (a street's: those of the districts within its reach) and the
    standards table. Equal keys, equal answers."""
    if street is not None:  # measured and kept before the read, which cannot keep them
        refresh_extents(engine, ("facilities", "roads", "buildings"))
    with engine.connect() as conn:
        standards = get_setting(conn, "facility_standards")
        districts = scope_districts(conn, street, standards)
        revisions = all_revisions(conn) if districts is None else \
            {"districts": sorted(districts), **district_revisions(conn, districts, CACHED_LAYERS)}
    # the database, not the connection's options (the worker names its sessions after the job)
    where = engine.url.set(query={}).render_as_string(hide_password=True)
    blob = json.dumps([where, revisions, standards,
                       street, method or "auto"], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


@dataclass
class Prepared:
    """A computed scope: the report, and either the run itself (computed here) or the households
    out of reach by unit for every row of the standards table (from the worker's result)."""

    key: str
    street: str | None
    report: dict
    inputs: coverage.CoverageInputs | None = None
    run: coverage.ReachRun | None = None
    uncovered: dict[str, dict[str, int]] = field(default_factory=dict)
    #: the same by community (a city's view from afar)
    by_community: dict[str, dict[str, int]] = field(default_factory=dict)
    #: gap layers already computed from the run: (name, kind, radius) → frame
    layers: dict = field(default_factory=dict)

    @property
    def whole(self) -> bool:
        """Whether the run is in memory (a small scope): every layer can be drawn whole."""
        return self.run is not None


def row_key(kind: str, radius_m: float) -> str:
    return f"{kind}|{float(radius_m):g}"


def uncovered_by(run: coverage.ReachRun, codes: np.ndarray) -> dict[str, dict[str, int]]:
    """Per row of the standards table: code (of a unit, or of a community) → households out of
    reach (codes with some only)."""
    hh = run.households
    out = {}
    for row in run.standards:
        lost = pd.Series(hh.households * ~run.covered(row.kind, row.reach_m)).groupby(codes).sum()
        lost = lost[lost > 0]
        out[row_key(row.kind, row.reach_m)] = {str(k): int(v) for k, v in lost.items()}
    return out


def too_large(engine: Engine, street: str | None) -> bool:
    """Whether the scope is a job for the worker rather than for a web request."""
    return count_layer(engine, "units", **({"street": street} if street else {})) > SYNC_UNITS


def compute(engine: Engine, street: str | None, method: str | None, key: str) -> Prepared:
    """Compute the scope here (a small scope) as the state ``key`` names it."""
    standards = coverage.load_standards(engine)
    inputs = coverage.load_inputs(engine, street, standards)
    run = coverage.compute_reach(inputs, standards, method)
    report = coverage.gap_report(inputs, standards, method, run=run)
    prepared = Prepared(key, street, report, inputs, run)
    for name in ("blind_spots", "cell_problems", "facility_problems", "missing"):  # asked for next
        prepared.layers[(name, None, None)] = coverage.gap_layer(name, inputs, run)
    return prepared


def from_jobs(engine: Engine, key: str, street: str | None) -> Prepared | None:
    """The newest finished report job computed from the state ``key`` names, if any."""
    with engine.connect() as conn:
        rows = conn.execute(select(Job.id, Job.result).where(
            Job.kind == coverage.JOB_KIND, Job.status == "done").order_by(Job.id.desc()).limit(20)).all()
    for _id, result in rows:
        if isinstance(result, dict) and result.get("key") == key:
            report = {k: v for k, v in result.items() if k not in CACHE_KEYS}
            return Prepared(key, street, report, uncovered=result.get("uncovered_by_unit") or {},
                            by_community=result.get("uncovered_by_community") or {})
    return None


class CoverageMemory:
    """What one process keeps of computed coverage scopes, and who owns it: made by
    ``create_app`` (``app.extensions["gridplan.coverage"]``, read through
    :func:`webmap.extensions.coverage_memory`), or by whatever else wants one (a command, a
    benchmark), never a module global. Entries are keyed by :func:`state_key` — the database's
    address, the revisions it stores and the standards table, read from the database on every
    request — so an entry computed before another process changed a layer is never found again
    (its key is no longer asked for); the oldest go beyond ``keep``. The job worker keeps none:
    each job runs in a process of its own and reads the database (or the siting files)."""

    def __init__(self, engine: Engine, keep: int = KEEP) -> None:
        self.engine = engine
        self.keep = keep
        self._items: OrderedDict[str, Prepared] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def remembered(self, key: str) -> Prepared | None:
        """The scope computed from the state ``key`` names, if this process keeps it."""
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def remember(self, prepared: Prepared) -> Prepared:
        with self._lock:
            self._items[prepared.key] = prepared
            self._items.move_to_end(prepared.key)
            while len(self._items) > self.keep:
                self._items.popitem(last=False)
        return prepared

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def compute(self, street: str | None, method: str | None, key: str) -> Prepared:
        """Compute the scope here (a small scope) and keep it under ``key``."""
        return self.remember(compute(self.engine, street, method, key))

    def from_jobs(self, key: str, street: str | None) -> Prepared | None:
        """The worker's answer for the state ``key`` names (kept once found), if any."""
        found = from_jobs(self.engine, key, street)
        return None if found is None else self.remember(found)

    def warm(self, street: str | None = None, method: str | None = None, start_job=None) -> str:
        """Make sure the scope's answers are ready for the first reader: computed here (a small
        scope), or a report job queued for the worker (a city, through ``start_job(params)``) when
        neither a finished nor a pending one exists for the current state. Returns what it did."""
        key = state_key(self.engine, street, method)
        if self.remembered(key) is not None:
            return "ready"
        if not too_large(self.engine, street):
            self.compute(street, method, key)
            return "computed"
        if self.from_jobs(key, street) is not None:
            return "ready"
        if start_job is None or pending_job(self.engine, street, method) is not None:
            return "pending"
        if failed_lately(self.engine, street, method, key):
            return "failed"
        start_job({"street": street, "method": method, "by": "gridplan", "key": key})
        return "queued"

    def keep_warm(self, stop: threading.Event, every: float = 30.0) -> None:
        """A server process's background thread: the district's coverage kept computed for the
        state of the data (looked at every ``every`` seconds), so that no reader waits for it."""
        from geodata import jobs

        def queue(params: dict) -> int:
            return jobs.create_job(self.engine, coverage.JOB_KIND, params, per_user=0)

        while not stop.is_set():
            try:
                self.warm(start_job=queue)
            except Exception:  # noqa: BLE001 — a database not made yet, a bad standards table: try later
                pass
            stop.wait(every)


#: After a report job queued by the warm-up failed, the same state is queued again no sooner than
#: this (seconds), doubling with each failure in a row up to :data:`RETRY_MOST`: a job failing on
#: the data or the standards (as it will until they change, which changes the state) is not run
#: again every half minute by every server process; one killed by a restart is, soon enough.
RETRY_FAILED_AFTER = 600.0
RETRY_MOST = 6 * 3600.0
#: how many of the newest report jobs are looked at for the failures of a state
RETRY_LOOKBACK = 50


def failed_lately(engine: Engine, street: str | None, method: str | None, key: str,
                  now: datetime | None = None) -> bool:
    """Whether the warm-up's report jobs of this state (``key``) failed lately: the newest ended
    failed, less than :data:`RETRY_FAILED_AFTER` × 2^(failures in a row − 1) ago."""
    with engine.connect() as conn:
        rows = conn.execute(select(Job.status, Job.params, Job.finished_at).where(
            Job.kind == coverage.JOB_KIND).order_by(Job.id.desc()).limit(RETRY_LOOKBACK)).all()
    failures, last = 0, None
    for status, params, finished in rows:
        params = params or {}
        if params.get("key") != key or params.get("street") != street \
                or (params.get("method") or "auto") != (method or "auto"):
            continue
        if status != "failed":
            break
        failures += 1
        last = last or finished
    if not failures or last is None:
        return False
    wait = min(RETRY_FAILED_AFTER * 2 ** (failures - 1), RETRY_MOST)
    return ((now or datetime.now()) - last).total_seconds() < wait


def pending_job(engine: Engine, street: str | None, method: str | None) -> int | None:
    """A report job for the same scope queued or running already (one is enough)."""
    with engine.connect() as conn:
        rows = conn.execute(select(Job.id, Job.params).where(
            Job.kind == coverage.JOB_KIND, Job.status.in_(("queued", "running"))).order_by(Job.id)).all()
    for job_id, params in rows:
        params = params or {}
        if params.get("street") == street and (params.get("method") or "auto") == (method or "auto"):
            return int(job_id)
    return None


def job_result(engine: Engine, street: str | None, method: str | None) -> dict:
    """What the worker stores for a report job: the report, the key of the state it was computed
    from (taken before reading, so that a change during the job makes it stale, never wrong) and
    the households out of reach by unit."""
    key = state_key(engine, street, method)
    standards = coverage.load_standards(engine)
    inputs = coverage.load_inputs(engine, street, standards)
    run = coverage.compute_reach(inputs, standards, method)
    report = coverage.gap_report(inputs, standards, method, run=run)
    try:  # "where to build next" then starts from the solver
        prepare_siting(key, run, inputs.units)
    except (Refused, ValueError, MemoryError):  # the report stands; a siting job computes its own
        pass
    hh = run.households
    communities = pd.Series(hh.community, dtype=object).fillna("").to_numpy()
    return {**report, "key": key, "uncovered_by_unit": uncovered_by(run, hh.unit),
            "uncovered_by_community": uncovered_by(run, communities)}


#: A city's report job prepares the siting models (:func:`prepare_siting`, which reads the city
#: whole in the job's process) up to this many units: a city (the 198,166-unit city's took 23 s
#: beside its report), not a province, which a siting job could not hold either.
PREPARE_SITING_UNITS = 400_000


def districts_job_result(engine: Engine, method: str | None, *, runner=None, progress=None,
                         preparing=None) -> dict:
    """What the worker stores for a city's report job, made district by district
    (:func:`layers.coverage.districts.report_all` on ``runner``; ``progress`` as each district
    finishes): the same report, state key and households out of reach by unit and community as
    :func:`job_result`, so the pages answer from it as they did. Then, for a city of up to
    :data:`PREPARE_SITING_UNITS` units (``preparing()`` called first), the siting models of the
    standards table's rows, as :func:`job_result` prepares them: "where to build next" from the
    page starts from the solver."""
    from layers.coverage.districts import report_all

    key = state_key(engine, None, method)  # before reading: a change meanwhile makes it stale
    made = report_all(engine, method, runner=runner, progress=progress, uncovered=True)
    if made.report["units"] <= PREPARE_SITING_UNITS and not _basis_path(key).exists():
        if preparing:
            preparing()
        try:  # the report stands whatever this does; a siting job computes its own
            standards = coverage.load_standards(engine)
            inputs = coverage.load_inputs(engine, None, standards)
            prepare_siting(key, coverage.compute_reach(inputs, standards, method), inputs.units)
        except (Refused, ValueError, MemoryError):
            pass
    return {**made.report, "key": key, "uncovered_by_unit": made.uncovered("unit"),
            "uncovered_by_community": made.uncovered("community")}


# --- layers by view ---------------------------------------------------------------------------


def parse_bbox(text: str | None) -> tuple[float, float, float, float] | None:
    """``minx,miny,maxx,maxy`` in degrees, or None; a :class:`ValueError` names what is wrong."""
    if text in (None, ""):
        return None
    parts = text.split(",")
    if len(parts) != 4:
        raise ValueError("bbox must be minx,miny,maxx,maxy")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"bbox must be four numbers minx,miny,maxx,maxy, not {text!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise ValueError("bbox must be four finite numbers")
    minx, miny, maxx, maxy = values
    if not (-180 <= minx < maxx <= 180 and -90 <= miny < maxy <= 90):
        raise ValueError("bbox must be minx,miny,maxx,maxy within longitude and latitude, min < max")
    return minx, miny, maxx, maxy


def tolerance(zoom: float | None) -> float:
    """Degrees of one screen pixel at ``zoom`` (a web map's 256-pixel tiles): outlines are
    simplified to it, since no one sees finer."""
    if zoom is None:
        return 0.0
    return 360.0 / (256.0 * 2.0 ** max(0.0, min(float(zoom), 22.0)))


def in_view(frame: gpd.GeoDataFrame, bbox, zoom: float | None) -> gpd.GeoDataFrame:
    """The rows of ``frame`` meeting ``bbox`` (all without one), their outlines simplified to a
    pixel of ``zoom`` and rounded to :data:`GRID`."""
    if bbox is not None and len(frame):
        frame = frame[shapely.intersects(np.asarray(frame.geometry.values, dtype=object),
                                         shapely.box(*bbox))]
    if not len(frame):
        return frame
    geoms = np.asarray(frame.geometry.values, dtype=object)
    if shapely.is_missing(geoms).all():  # figures without outlines
        return frame
    step = tolerance(zoom)
    if step > 0:
        geoms = shapely.simplify(geoms, step * 0.8, preserve_topology=True)
    geoms = shapely.set_precision(geoms, GRID, mode="pointwise")
    return frame.set_geometry(gpd.GeoSeries(geoms, index=frame.index, crs=frame.crs))


def check_row(prepared: Prepared, kind: str, radius_m: float | None) -> float:
    """The radius asked for ``kind`` (default: the kind's first row of the standards table),
    refused when the kind is not in the table or the radius beyond its largest reach."""
    if prepared.whole:
        return coverage.reach_rows_for(prepared.run, kind, radius_m)[0][1]
    rows = [r for r in prepared.report["standards"] if r["kind"] == kind]
    if not rows:
        kinds = ", ".join(dict.fromkeys(r["kind"] for r in prepared.report["standards"]))
        raise Refused(_("unknown facility kind {kind}; kinds: {p2}", kind=repr(kind), p2=kinds))
    if radius_m is None:
        return float(rows[0]["reach_m"])
    limit = max(float(r["reach_m"]) for r in rows)
    if not 0 < radius_m <= limit:
        raise Refused(_("radius {radius_m} m: give 0 < radius ≤ {limit} m for {kind}",
                        radius_m=format(radius_m, 'g'), limit=format(limit, 'g'), kind=kind))
    return float(radius_m)


def uncovered_in_view(engine: Engine, prepared: Prepared, kind: str, radius_m: float, bbox,
                      zoom: float | None, outlines: bool = True) -> tuple[gpd.GeoDataFrame, dict]:
    """The ``uncovered`` layer within ``bbox`` and its totals over the whole scope (households out
    of reach and units): the totals come from the computation, never from what the view holds.
    ``outlines=False``: a city seen whole sends its communities' figures without their outlines
    (the page has them already, and draws the shading on them: the communities go over the wire
    once)."""
    if prepared.whole:
        whole = coverage.uncovered_units(prepared.run, prepared.inputs.units, kind, radius_m)
        totals = {"units": len(whole), "uncovered": int(whole["uncovered"].sum())}
        return in_view(whole, bbox, zoom), totals
    counts = prepared.uncovered.get(row_key(kind, radius_m))
    if counts is None:
        raise KeyError(row_key(kind, radius_m))
    totals = {"units": len(counts), "uncovered": int(sum(counts.values()))}
    scope = {"street": prepared.street} if prepared.street else {}
    if count_layer(engine, "units", **({"bbox": bbox} if bbox is not None else {}), **scope) > MAX_VIEW_UNITS:
        # seen from afar: the communities, shaded by their households out of reach
        lost = prepared.by_community.get(row_key(kind, radius_m)) or {}
        shown = read_layer(engine, "communities", bbox=bbox, **scope) if bbox is not None else \
            read_layer(engine, "communities", **scope)
        shown = shown[shown["code"].isin(lost)].copy()
        frame = gpd.GeoDataFrame({"code": shown["code"], "kind": kind, "radius_m": float(radius_m),
                                  "households": shown["households"] if "households" in shown else None,
                                  "uncovered": shown["code"].map(lost).astype("int64"),
                                  "community_code": shown["code"], "street_code": shown["street_code"],
                                  "level": "community"},
                                 geometry=shown.geometry if outlines else [None] * len(shown), crs=4326)
        # households in no community (blind spots) are drawn as their units, not lost
        area = {"bbox": bbox} if bbox is not None else {}
        loose = read_layer(engine, "units", empty=["community_code"], **area, **scope)
        loose = loose[loose["code"].isin(counts)]
        if len(loose):
            loose = gpd.GeoDataFrame({
                "code": loose["code"], "kind": kind, "radius_m": float(radius_m),
                "households": loose["households"], "uncovered": loose["code"].map(counts).astype("int64"),
                "community_code": None, "street_code": loose["street_code"], "level": "unit"},
                geometry=loose.geometry, crs=4326)
            frame = pd.concat([frame, loose], ignore_index=True)
        return in_view(gpd.GeoDataFrame(frame, geometry="geometry", crs=4326), None, zoom), \
            totals | {"by_community": True}
    units = read_layer(engine, "units", bbox=bbox, **scope) if bbox is not None else \
        read_layer(engine, "units", isin={"code": list(counts)}, **scope)
    units = units[units["code"].isin(counts)].copy()
    units["uncovered"] = units["code"].map(counts).astype("int64")
    units["kind"] = kind
    units["radius_m"] = float(radius_m)
    columns = [f.name for f in coverage.GAP_LAYERS["uncovered"][1]]
    return in_view(units[columns + ["geometry"]], None, zoom), totals


def finding_points(findings: list[dict], kind_key: str = "kind") -> gpd.GeoDataFrame:
    """Findings of the report as points (a city's blind spots drawn by view)."""
    return gpd.GeoDataFrame({"kind": [f.get(kind_key) for f in findings],
                             "code": [" ".join(f.get("codes") or []) for f in findings],
                             "households": [f.get("households") for f in findings],
                             "area_m2": [f.get("area_m2") for f in findings]},
                            geometry=shapely.points([[f["lon"], f["lat"]] for f in findings])
                            if findings else [], crs=4326)


# --- siting in the background -------------------------------------------------------------------

#: The background job that sites facilities for a scope too large for a web request.
SITES_JOB = "coverage_sites"



#: Where the worker keeps the siting models of a city (``GRIDPLAN_SITING_CACHE``, default a folder
#: in the system's temporary directory): each job runs in a process of its own, so what one job
#: computed reaches the next through these files, named after the state key.
KEEP_MODELS = 64


def _models_dir() -> Path:
    return Path(os.environ.get("GRIDPLAN_SITING_CACHE")
                or Path(tempfile.gettempdir()) / f"gridplan-siting-{os.getuid()}")


def _ours(folder: Path) -> bool:
    """The folder is this service's own (its user's, no one else may write): what is unpickled
    from it was written by this service."""
    try:
        found = folder.stat()
    except OSError:
        return False
    return found.st_uid == os.getuid() and not found.st_mode & 0o022


def _model_path(key: str, kind: str, radius: float) -> Path:
    name = hashlib.sha256(json.dumps([key, kind, float(radius)]).encode()).hexdigest()[:32]
    return _models_dir() / f"{name}.pickle"


def save_model(key: str, kind: str, radius: float, entry: dict, path: Path | None = None) -> None:
    """Keep a siting model (candidates, coverage matrix, households) of the state ``key`` names
    for ``kind`` at ``radius``; the oldest files beyond :data:`KEEP_MODELS` go."""
    folder = _models_dir()
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _ours(folder):
            return
        path = path or _model_path(key, kind, radius)
        part = path.with_suffix(f".{os.getpid()}.part")
        with open(part, "wb") as out:
            pickle.dump(entry, out, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(part, path)  # whole or not at all: a reader never sees half a file
        files = sorted(folder.glob("*.pickle"), key=lambda f: f.stat().st_mtime, reverse=True)
        for old in files[KEEP_MODELS:]:
            old.unlink(missing_ok=True)
    except OSError:  # a full or read-only disk: the next job computes it again
        pass


def load_model(key: str, kind: str, radius: float, path: Path | None = None) -> dict | None:
    """The siting model kept by :func:`save_model` for that state, kind and radius, if any.
    Written only by this service's own worker into its own folder."""
    if not _ours(_models_dir()):
        return None
    try:
        with open(path or _model_path(key, kind, radius), "rb") as found:
            entry = pickle.load(found)  # noqa: S301 — our own file, named after a hash of the state
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
        return None
    return entry if isinstance(entry, dict) and entry.get("key") == key else None


def save_models(key: str, run: coverage.ReachRun, models: dict) -> None:
    """Every siting model in ``models`` (kept by :func:`layers.coverage.siting.site_for`) to the files."""
    for question, model in list(models.items()):
        if not (isinstance(question, tuple) and len(question) == 2):
            continue
        before, demand = models[("households", *question)]
        save_model(key, *question, {"key": key, "candidates": models["units"], "model": model,
                                    "covered_before": before, "demand": demand, "method": run.method})


def _basis_path(key: str) -> Path:
    name = hashlib.sha256(json.dumps([key, "basis"]).encode()).hexdigest()[:32]
    return _models_dir() / f"{name}.pickle"


def save_basis(key: str, run: coverage.ReachRun, candidates: gpd.GeoDataFrame) -> None:
    """Keep what a siting model at any reach is computed from, for the state ``key`` names: the
    household points, each one's walk to its nearest facility of every kind, the road graph and
    the candidates (a city's grid of them, with their points in metres). A question at a reach
    no model was kept for then costs one coverage matrix, not a reading of the city's layers
    and a walk of its roads."""
    from layers.coverage import siting

    hh = run.households
    save_model(key, "", 0.0, {
        "key": key, "basis": True, "method": run.method, "xy": hh.xy, "households": hh.households,
        "distance": {kind: found.distance for kind, found in run.nearest.items()},
        "limits": coverage.reach_limits(run.standards), "graph": run.graph,
        "candidates": candidates, "candidates_xy": siting.candidates_xy(candidates, hh.crs)},
        path=_basis_path(key))


def load_basis(key: str) -> dict | None:
    """What :func:`save_basis` kept for that state, if any."""
    entry = load_model(key, "", 0.0, path=_basis_path(key))
    return entry if entry is not None and entry.get("basis") else None


def model_from_basis(basis: dict, kind: str, radius: float) -> dict:
    """The siting model of ``kind`` at ``radius`` (as :func:`save_models` keeps it) computed from
    a :func:`save_basis` entry; refused like :func:`layers.coverage.siting.site_for` refuses."""
    from layers.coverage import siting

    limits = basis["limits"]
    if kind not in basis["distance"]:
        raise Refused(_("unknown facility kind {kind}; kinds of the standards table: {p2}",
                        kind=repr(kind), p2=', '.join(basis["distance"])))
    if not 0 < float(radius) <= limits[kind]:
        raise Refused(_("radius {radius_m} m: give 0 < radius ≤ {p2} m, the largest reach of {kind} in the "
                        "standards table", radius_m=radius, p2=format(limits[kind], 'g'), kind=kind))
    covered = basis["distance"][kind] <= float(radius)
    households = basis["households"]
    model = siting.demand_model(basis["xy"][~covered], households[~covered], basis["candidates_xy"],
                                float(radius), basis["graph"])
    return {"key": basis["key"], "candidates": basis["candidates"], "model": model,
            "covered_before": int(households[covered].sum()), "demand": int(households[~covered].sum()),
            "method": basis["method"]}


def prepare_siting(key: str, run: coverage.ReachRun, units: gpd.GeoDataFrame) -> None:
    """The report job of a city computes, beside the report, the siting model of every row of the
    standards table (candidates and coverage matrix at the row's reach): "where to build next"
    from the page then starts from the solver; and keeps the basis of a model at any other reach
    (:func:`save_basis`)."""
    from layers.coverage import siting

    models: dict = {}
    for row in run.standards:
        if row.kind in run.nearest and _model_path(key, row.kind, row.reach_m).exists() is False:
            siting.site_for(run, row.kind, 1, radius_m=float(row.reach_m), units=units, method="greedy",
                            models=models)
    save_models(key, run, models)
    if not _basis_path(key).exists():
        candidates = models.get("units")
        if candidates is None:
            candidates = siting.candidate_points(units)
            if len(candidates) > siting.THIN_ABOVE:
                candidates = siting.thin_candidates(candidates, run.households.crs)
        save_basis(key, run, candidates)


def sites_for(prepared_run: coverage.ReachRun, units: gpd.GeoDataFrame, params: dict,
              on_greedy=None, models: dict | None = None, engine: Engine | None = None) -> dict:
    """Site ``params['k']`` facilities of ``params['kind']``: the greedy answer first (handed to
    ``on_greedy``), then the exact solver's with its proof when asked (``solver`` auto|exact),
    both from one coverage matrix (kept in ``models`` for the next question on the same run)."""
    from layers.coverage import siting

    kind, k, radius = params["kind"], params["k"], params.get("radius")
    solver = params.get("solver") or "auto"
    time_limit = float(params.get("time_limit") or 60.0)
    models = {} if models is None else models
    if on_greedy is None:  # nobody to show a first answer to: one pass
        best, used, radius = siting.site_for(prepared_run, kind, k, radius_m=radius, units=units,
                                             method=solver, time_limit=time_limit, models=models)
        return siting.sites_answer(best, used, kind, radius, k, prepared_run.method, engine)
    first, used, radius = siting.site_for(prepared_run, kind, k, radius_m=radius, units=units,
                                          method="greedy", models=models)
    if solver == "greedy" or first.optimal:
        return siting.sites_answer(first, used, kind, radius, k, prepared_run.method, engine)
    if on_greedy:  # shown at once: the places in words come with the final answer
        greedy = siting.sites_answer(first, used, kind, radius, k, prepared_run.method)
        on_greedy(greedy | {"stage": "greedy"})
    best, used, radius = siting.site_for(prepared_run, kind, k, radius_m=radius, units=units, method=solver,
                                         time_limit=time_limit, models=models)
    return siting.sites_answer(best, used, kind, radius, k, prepared_run.method, engine)


def run_sites_job(engine: Engine, job: dict) -> dict:
    """The worker's runner for :data:`SITES_JOB`: the siting model of the state of the data (kept
    in files by the report job or an earlier siting job: no layer read, no road walked), else the
    reach of the scope computed here; the greedy answer stored at once (the page shows it), then
    the exact answer with its bound."""
    from geodata import jobs
    from geodata.i18n import _
    from layers.coverage import siting

    params = job.get("params") or {}
    kind, k = params.get("kind"), params.get("k")
    key = state_key(engine, params.get("street"), params.get("method"))
    standards = coverage.load_standards(engine)
    radius = params.get("radius")
    if radius is None:
        radius = next((row.reach_m for row in standards if row.kind == kind), None)

    def on_greedy(answer: dict) -> None:
        jobs.report_partial(engine, job["id"], answer, 0.8,
                            _("greedy answer ready; the exact solver is proving it"))

    entry = load_model(key, kind, float(radius)) if radius is not None else None
    if entry is None and radius is not None:  # a reach not kept yet: from the city's basis
        basis = load_basis(key)
        if basis is not None:
            jobs.report(engine, job["id"], 0.3, _("choosing sites"))
            entry = model_from_basis(basis, kind, float(radius))
            save_model(key, kind, float(radius), entry)
    if entry is not None:
        jobs.report(engine, job["id"], 0.6, _("choosing sites"))
        solver = params.get("solver") or "auto"
        time_limit = float(params.get("time_limit") or 60.0)
        need = {"covered_before": entry["covered_before"], "demand": entry["demand"]}
        first = siting.solve_model(entry["model"], k, method="greedy", **need)
        if solver == "greedy" or first.optimal:
            return siting.sites_answer(first, entry["candidates"], kind, float(radius), k, entry["method"],
                                       engine)
        on_greedy(siting.sites_answer(first, entry["candidates"], kind, float(radius), k, entry["method"])
                  | {"stage": "greedy"})
        best = siting.solve_model(entry["model"], k, method=solver, time_limit=time_limit, **need)
        return siting.sites_answer(best, entry["candidates"], kind, float(radius), k, entry["method"], engine)
    jobs.report(engine, job["id"], 0.05, _("reading the layers"))
    inputs = coverage.load_inputs(engine, params.get("street"), standards)
    jobs.report(engine, job["id"], 0.3, _("computing the reach"))
    run = coverage.compute_reach(inputs, standards, params.get("method"))
    jobs.report(engine, job["id"], 0.6, _("choosing sites"))
    models: dict = {}
    answer = sites_for(run, inputs.units, params, models=models, on_greedy=on_greedy, engine=engine)
    save_models(key, run, models)
    if "units" in models and not _basis_path(key).exists():  # a question at another reach: no reading
        save_basis(key, run, models["units"])
    return answer
