"""What one process keeps in memory about plans, and who owns it.

Building the unit graph of a city and a plan's partition takes seconds; a hand edit must take
milliseconds. So each process keeps recent unit graphs and loaded plans in a :class:`PlanMemory`
— one object, made by ``create_app`` (``app.extensions["gridplan.plans"]``) or by the job
worker, never a module global. Everything in it is keyed to the boundary revision stored in the
database (:mod:`geodata.revisions`) of the district it covers: on every use that district's
revision is read (one small query), and a graph or plan built from another revision of it is
rebuilt, so a process never answers from boundaries another process has since replaced — while
an import or an adoption in another district leaves it as it is (a city-wide graph or plan is
keyed to the whole database's revision). A loaded plan is also keyed to the plan's stored
version: an edit saved by another process is caught up on by applying the rows it changed (each
row records the version that last changed it), so two server processes can share one planner's
edits without reading the whole plan again.

A server process warms its memory when it starts (:meth:`PlanMemory.warm`, from
``webmap.wsgi``): the unit graph and the most recently changed plans are read before the first
planner asks, and read again whenever the boundaries change, so a city-size plan opens in seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from sqlalchemy import Engine

from geodata import plan_rows
from geodata.errors import Refused
from geodata.i18n import _
from geodata.revisions import current_revision, district_revision
from layers.plans.communities import bounds
from layers.plans.engine import Rules
from layers.plans.files import district_of, home_streets_of_district, units_from_database
from layers.plans.partition import Partition, UnitGraph


@dataclass
class UnitSet:
    """The stored units of one street, one district or all, their graph, and the revision they
    were read at."""

    #: the whole database's boundary revision when they were read (what a plan made of them
    #: records as its base: the log is judged from it)
    revision: int
    street: str | None
    units: gpd.GeoDataFrame
    graph: UnitGraph
    #: community code → home street, from the street's whole district (None: from ``graph``);
    #: see :func:`layers.plans.engine.current_labels`
    home: pd.Series | None = None
    #: what they stay valid by: the street's (or the district's) district's revision (all: the
    #: whole database's)
    stamp: int | None = None
    #: the district they are (None: a street's, or all)
    district: str | None = None


#: a version of a plan and a zoom rounded to a tenth (None: not simplified)
OutlineKey = tuple[int, float | None]


@dataclass
class PlanCaches:
    """What pages derive from a loaded plan, each entry checking for itself whether it is still
    current (by the plan's version, or by each community's households and area); it lives and
    dies with the loaded plan, so boundaries read again start with none of it."""

    #: (version, community → its neighbours, longest shared boundary first):
    #: :func:`layers.plans.edits.community_adjacency`
    adjacency: tuple[int, dict[str, list[str]]] | None = None
    #: the current communities' codes, each with whether it is provisional (the boundary revision
    #: the plan was loaded at): :func:`layers.plans.edits.current_codes`
    standing: dict[str, bool] | None = None
    #: (version, the plan described for its page): :func:`layers.plans.documents.describe`
    described: tuple[int, dict] | None = None
    #: community → ((households, area), its outline): :func:`layers.plans.documents.outlines`
    outlines: dict[str, tuple[tuple[int, float], shapely.Geometry]] = field(default_factory=dict)
    #: the last few zooms' whole outline answers (GeoJSON text)
    outline_answers: dict[OutlineKey, str] = field(default_factory=dict)
    #: the same answers' features by community code (what an edit's redraw asks for)
    outline_features: dict[OutlineKey, dict[str, str]] = field(default_factory=dict)


@dataclass
class LoadedPlan:
    """A stored plan in memory: its row, its units and graph, its partition and rules — the whole
    plan, or one district's part of a plan of every district (``part``: a province's plan is
    opened and edited district by district, :mod:`layers.plans.figures`).

    The partition keeps its own scores, contiguity included (re-checked lazily for the
    communities an edit touched). ``lock`` serialises edits within the process. ``caches`` holds
    what pages derive from the plan (:class:`PlanCaches`).
    """

    plan: dict
    #: the whole database's boundary revision its units were read at
    revision: int
    units: gpd.GeoDataFrame
    graph: UnitGraph
    partition: Partition
    rules: Rules
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    caches: PlanCaches = field(default_factory=PlanCaches, repr=False)
    #: what it stays valid by: its units' district's revision (:attr:`UnitSet.stamp`)
    stamp: int | None = None
    #: the district this is the part of (None: the whole plan)
    part: str | None = None

    @property
    def plan_id(self) -> int:
        return self.plan["id"]

    @property
    def districts(self) -> list[str]:
        """The districts of the plan's units (those every statement about the plan names)."""
        return sorted({str(d) for d in self.units["district_code"].dropna()})

    @property
    def version(self) -> int:
        return self.plan["version"]


class PlanMemory:
    """The owner of a process's unit graphs and loaded plans (a few of each, least recent dropped)."""

    def __init__(self, engine: Engine, capacity: int = 4) -> None:
        self.engine = engine
        self.capacity = capacity
        #: by (street, district): a street's units, a district's, or (None, None) all
        self._units: OrderedDict[tuple[str | None, str | None], UnitSet] = OrderedDict()
        #: by (plan, district): a whole plan (None), or one district's part of a plan of every district
        self._plans: OrderedDict[tuple[int, str | None], LoadedPlan] = OrderedDict()
        self._lock = threading.RLock()
        #: street → its district (codes do not move between districts: a code table gives a
        #: street a new code, not a new district)
        self._districts: dict[str, str | None] = {}
        #: how many times units were read from the database (what tests and benchmarks count)
        self.loads = 0

    def revision(self) -> int:
        """The whole database's boundary revision stored now."""
        return current_revision(self.engine)

    def district(self, street: str | None) -> str | None:
        """The district of ``street`` (None: all, or a street no table places)."""
        if street is None:
            return None
        if street not in self._districts:
            self._districts[street] = district_of(self.engine, street)
        return self._districts[street]

    def stamp(self, street: str | None, district: str | None = None) -> int:
        """The revision the units of ``street`` (or of ``district``) are kept by: its district's
        (one small query), which another district's change leaves as it is; all streets: the
        whole database's."""
        district = self.district(street) if street is not None else district
        return self.revision() if district is None else district_revision(self.engine, district)

    def units(self, street: str | None = None, revision: int | None = None, *,
              district: str | None = None) -> UnitSet:
        """The stored units of ``street`` (or of ``district``, or all) with their graph, as of the
        stored revision of their district; ``revision``: the whole database's revision the caller
        read (what units read now are recorded at; default: read here)."""
        district = None if street is not None else district
        key = (street, district)
        # first: a change after it makes the units look older, never newer
        stamp = self.stamp(street, district)
        with self._lock:
            found = self._units.get(key)
            if found is None or found.stamp != stamp:
                revision = self.revision() if revision is None else revision
                units, adjacency = units_from_database(self.engine, street, district=district)
                self.loads += 1
                if not len(units):  # an unknown street or district: refused, and nothing kept for it
                    raise Refused(_("no units to plan in street {street}", street=street) if street
                                  else _("no units in district {district}", district=district) if district
                                  else _("no units to plan"))
                home = home_streets_of_district(self.engine, str(units["district_code"].iloc[0])) \
                    if street is not None else None
                found = UnitSet(revision, street, units, UnitGraph.from_units(units, adjacency), home, stamp,
                                district)
                self._units[key] = found
            self._units.move_to_end(key)
            while len(self._units) > self.capacity:
                self._units.popitem(last=False)
            return found

    def parts(self, row: dict) -> list[str]:
        """The districts a plan is opened by, one at a time: those of a plan of every district
        when it has more than one (no process need hold a province); none for a plan worked on
        whole (a street's, one district's)."""
        if (row["params"] or {}).get("street"):
            return []
        districts = plan_rows.figure_districts(self.engine, row["id"]) or \
            plan_rows.plan_districts(self.engine, row["id"])  # a plan made before figures were kept
        return districts if len(districts) > 1 else []

    def plan(self, plan_id: int, row: dict | None = None, district: str | None = None) -> LoadedPlan:
        """Plan ``plan_id`` at its stored version on the stored boundaries (rebuilt when either
        moved); ``row`` is its stored row when the caller has just read it. ``district``: only
        that district's part of a plan of every district (a street's plan is whole whatever it
        names), kept by that district's revision — what a province's plan page works on."""
        row = row or plan_rows.get_plan(self.engine, plan_id)
        street = (row["params"] or {}).get("street")
        part = None if street else district
        stamp = self.stamp(street, part)
        key = (plan_id, part)
        with self._lock:
            found = self._plans.get(key)
            if found is not None and found.stamp == stamp and found.version < row["version"]:
                found = self._catch_up(found, row)
            if found is None or found.version != row["version"] or found.stamp != stamp:
                found = self._load(row, part)
                self._plans[key] = found
            self._plans.move_to_end(key)
            while len(self._plans) > self.capacity:
                self._plans.popitem(last=False)
            return found

    def _load(self, row: dict, part: str | None = None) -> LoadedPlan:
        params = row["params"] or {}
        unit_set = self.units(params.get("street"), district=part)
        graph = unit_set.graph
        assignment = plan_rows.plan_assignment(self.engine, row["id"], district=part)
        labels = assignment.reindex(graph.codes).to_numpy(dtype=object)
        labels = np.where(pd.isna(labels), graph.current, labels)  # units the plan never saw keep theirs
        partition = Partition(graph, labels)
        partition.broken()  # contiguity of every community now, in one pass, not on the first edit
        return LoadedPlan(row, unit_set.revision, unit_set.units, graph, partition,
                          plan_rules(self.engine, params), stamp=unit_set.stamp, part=part)

    def _catch_up(self, loaded: LoadedPlan, row: dict) -> LoadedPlan | None:
        """Apply to ``loaded`` the units another process moved since its version (None when
        that is most of the plan, as after a rebase: reading it whole is then cheaper)."""
        changes = plan_rows.assignment_changes(self.engine, row["id"], loaded.version, loaded.districts)
        g = loaded.graph
        if len(changes) > len(g) // 4 or not all(u in g.position for u in changes.index):
            return None
        with loaded.lock:
            p = loaded.partition
            for label, units in changes.groupby(changes.to_numpy(), sort=False):
                positions = np.array([g.position[u] for u in units.index], dtype=np.int64)
                p.move(positions, label)
            loaded.plan = row
        return loaded

    def warm(self, plans: int | None = None,
             prepare: Callable[[PlanMemory, int, str | None], object] | None = None
             ) -> list[int]:
        """Read the unit graph and the ``plans`` most recently changed plans (default: as many
        as this memory keeps) into memory now, and ``prepare`` each (e.g. its outlines); returns
        their ids. A plan that cannot be read (deleted meanwhile) is skipped."""
        recent = sorted(plan_rows.list_plans(self.engine), key=lambda r: r["updated_at"], reverse=True)
        warmed = []
        for row in recent[:self.capacity if plans is None else plans][::-1]:  # the newest is kept last
            try:
                stored = plan_rows.get_plan(self.engine, row["id"])
                part = next(iter(self.parts(stored)), None)  # a province's plan: the district its page opens
                self.plan(row["id"], stored, part)
                if prepare is not None:
                    prepare(self, row["id"], part)
            except plan_rows.PlanNotFound:
                continue
            warmed.append(row["id"])
        return warmed[::-1]

    def keep_warm(self, stop: threading.Event, every: float = 30.0,
                  prepare: Callable[[PlanMemory, int, str | None], object] | None = None) -> None:
        """Warm now, then again whenever the stored boundary revision or the set of recent plans
        moves, until ``stop`` is set — a server process's background thread."""
        seen = None
        while not stop.is_set():
            try:
                recent = plan_rows.list_plans(self.engine)[:self.capacity]
                state = (self.revision(), tuple(r["id"] for r in recent))
                if state != seen:
                    started = time.perf_counter()
                    warmed = self.warm(prepare=prepare)
                    log.info("plan memory warmed in %.1f s: plans %s", time.perf_counter() - started, warmed)
                    seen = state
            except Exception:  # noqa: BLE001 — a warm-up that fails is retried; requests still read for themselves
                log.exception("warming the plan memory failed")
            stop.wait(every)

    def saved(self, loaded: LoadedPlan, version: int) -> None:
        """Record that ``loaded``'s change was committed as ``version``."""
        loaded.plan = {**loaded.plan, "version": version}

    def forget(self, plan_id: int) -> None:
        """Drop plan ``plan_id`` (whole, and every district's part of it)."""
        with self._lock:
            for key in [k for k in self._plans if k[0] == plan_id]:
                del self._plans[key]


log = logging.getLogger(__name__)


def plan_rules(engine: Engine, params: dict | None) -> Rules:
    """The rules of a plan's parameters, the city's household bounds where they say nothing."""
    limits = bounds(engine)
    return Rules.from_params(params, limits.minimum, limits.maximum)

