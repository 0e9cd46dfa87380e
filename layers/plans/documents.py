"""A plan as a document, and what the plan page draws of it.

Names: a plan names its communities (new ones as they are made, existing ones renamed); the
names are stored with the plan and used when it is adopted. A plan can be renamed, duplicated
(a new draft with the same assignment, hand edits and names) and, while a draft, deleted; its
timeline (who did what, with comments) comes from the audit log.

Drawing: communities are coloured so that neighbours never share a colour (a greedy colouring of
the community adjacency, largest degree first); the plan's communities are dissolved from their
units (a coverage union: units tile their street) and simplified for the zoom they are shown at;
units are sent only for the view, simplified to half a pixel of that zoom. What is dissolved is
kept with the loaded plan and redone only for the communities whose units changed.
"""

from __future__ import annotations

import json
import math

import numpy as np
import shapely

from geodata import plan_rows
from geodata.accounts import role_word
from geodata.audit_words import step_name
from geodata.errors import Forbidden, Refused
from geodata.i18n import _
from layers.plans.edits import describe as describe_plan
from layers.plans.edits import name_figure
from layers.plans.memory import LoadedPlan, PlanMemory
from layers.plans.workflow import WorkflowError, editable_plan

#: how many colours the page has; a planar map needs at most four, a greedy colouring a few more
PALETTE_SIZE = 10
#: plans with more units than this are drawn as community outlines when zoomed out and their
#: units loaded by view when zoomed in; smaller ones load every unit at once
ALL_UNITS_MAX = 20_000
#: the zoom from which a large plan's units are drawn (and can be selected and painted)
UNIT_ZOOM = 14
NAME_MAX = 50


# --- names ----------------------------------------------------------------------------------


def community_names(memory: PlanMemory, plan_id: int, district: str | None = None) -> dict[str, str]:
    """The name of every community the plan may show: the current communities' names, then the
    names the plan gives (new communities, renamed ones) over them."""
    engine = memory.engine
    districts = memory.plan(plan_id, district=district).districts
    return plan_rows.current_community_names(engine, districts) | plan_rows.community_names(engine, plan_id)


def name_community(memory: PlanMemory, plan_id: int, code: str, name: str, version: int, actor: str,
                   district: str | None = None) -> dict:
    """Give community ``code`` of a draft plan a name (unique among the plan's communities)."""
    name = " ".join(str(name or "").split())
    if not name:
        raise Refused(_("a community needs a name"))
    if len(name) > NAME_MAX:
        raise Refused(_("a community's name has at most {NAME_MAX} characters", NAME_MAX=NAME_MAX))
    plan = editable_plan(memory.engine, plan_id, version)
    loaded = memory.plan(plan_id, plan, district)
    if code not in loaded.partition:
        raise Refused(_("no community {code} in this plan", code=repr(code)))
    names = community_names(memory, plan_id, district)
    taken = [c for c in loaded.partition.communities if c != code and names.get(c) == name]
    if taken:
        raise Refused(_("community {p1} of this plan is already called {name}", p1=taken[0], name=name))
    new_version = plan_rows.name_community(memory.engine, plan_id, code, name, version, actor)
    memory.saved(loaded, new_version)
    return {"version": new_version, "community_code": code, "name": name}



def districts(memory: PlanMemory, plan: dict) -> list[dict]:
    """The districts a plan of every district is worked on by, its page opening one at a time
    (:meth:`~layers.plans.memory.PlanMemory.parts`): each with its name and its part's
    communities, how many are outside the bounds and not contiguous, from the figures kept
    (:mod:`layers.plans.figures`); none for a plan worked on whole."""
    parts = memory.parts(plan)
    if not parts:
        return []
    kept = plan_rows.district_figures(memory.engine, plan["id"])
    names = plan_rows.district_names(memory.engine)
    out = []
    for code in parts:
        sums = (kept.get(code) or {}).get("sums", {})
        out.append({"code": code, "name": names.get(code),
                    **{k: sums.get(k) for k in ("communities", "outside_bounds", "non_contiguous")}})
    return out


def district_of_page(memory: PlanMemory, plan: dict, asked: str | None) -> str | None:
    """The district a plan's page (and each request of it) works on: ``asked`` when the plan is
    worked on district by district (refused when it is not one of the plan's), else its first
    district; None for a plan worked on whole."""
    parts = memory.parts(plan)
    if not parts:
        return None
    if asked is None:
        return parts[0]
    if asked not in parts:
        raise Refused(_("plan {plan_id} has no district {district}", plan_id=plan["id"], district=asked))
    return asked


# --- the plan as a document -----------------------------------------------------------------


def rename(memory: PlanMemory, plan_id: int, name: str, version: int, actor: str, role: str) -> dict:
    """Rename a plan (any status but adopted; planners and admins)."""
    name = " ".join(str(name or "").split())
    if not name or len(name) > 200:
        raise Refused(_("a plan's name has 1 to 200 characters"))
    plan = plan_rows.get_plan(memory.engine, plan_id)
    if role not in ("planner", "admin"):
        raise WorkflowError(_("a {role} may not rename a plan", role=role_word(role)))
    plan_rows.require_version(plan, version, memory.engine)
    if plan["status"] == "adopted":
        raise WorkflowError(_("plan {plan_id} is adopted: its name is part of the record", plan_id=plan_id))
    new_version = plan_rows.rename_plan(memory.engine, plan_id, name, version, actor)
    return {"version": new_version, "name": name}


def duplicate(memory: PlanMemory, plan_id: int, name: str | None, author: str) -> dict:
    """A new draft, by ``author``, with the plan's assignment, hand edits and names."""
    plan = plan_rows.get_plan(memory.engine, plan_id)
    name = " ".join(str(name or "").split()) or _("{name} (copy)", name=plan["name"])
    if len(name) > 200:
        raise Refused(_("a plan's name has 1 to 200 characters"))
    return {"plan_id": plan_rows.duplicate_plan(memory.engine, plan_id, name, author), "name": name}


def delete(memory: PlanMemory, plan_id: int, version: int, actor: str, role: str) -> dict:
    """Delete a draft: its author or an admin; submitted, approved, rejected and adopted plans
    are part of the record and stay."""
    plan = plan_rows.get_plan(memory.engine, plan_id)
    if plan["status"] != "draft":
        raise WorkflowError(_("plan {plan_id} is {status}: only a draft can be deleted",
                              plan_id=plan_id, status=plan['status']))
    if role != "admin" and not (role == "planner" and plan["author"] == actor):
        raise Forbidden(_("only its author ({author}) or an admin may delete plan {plan_id}",
                          author=plan['author'], plan_id=plan_id))
    plan_rows.delete_plan(memory.engine, plan_id, version, actor)
    memory.forget(plan_id)
    return {"deleted": plan_id}


def timeline(memory: PlanMemory, plan_id: int) -> list[dict]:
    """Who did what to the plan, oldest first, with the comment each step carried."""
    plan_rows.get_plan(memory.engine, plan_id)
    out = []
    for row in plan_rows.plan_timeline(memory.engine, plan_id):
        detail = row["detail"]
        out.append({"at": row["at"].isoformat(timespec="seconds"), "actor": row["actor"],
                    "action": row["action"], "label": step_name(row["action"]),
                    "comment": detail.get("comment"),
                    "detail": {k: v for k, v in detail.items() if k != "comment"}})
    return out


# --- what the page draws ------------------------------------------------------------------------


def colour_communities(neighbours: dict[str, list[str]], palette: int = PALETTE_SIZE) -> dict[str, int]:
    """A colour index for every community such that no two neighbours share one: greedy, the
    communities with most neighbours first, each taking the smallest index its coloured
    neighbours leave free (indices wrap past ``palette`` only on a graph no map produces)."""
    colours: dict[str, int] = {}
    for code in sorted(neighbours, key=lambda c: (-len(neighbours[c]), c)):
        used = {colours[n] for n in neighbours[code] if n in colours}
        colours[code] = next(i for i in range(len(used) + 1) if i not in used) % max(palette, len(used) + 1)
    return colours


def describe(memory: PlanMemory, plan_id: int, district: str | None = None) -> dict:
    """The plan with every community's figures, name, neighbours and colour, and how the page
    should load its units (all at once, or by view from ``unit_zoom``). Kept with the loaded
    plan for its version: a city's thousand communities are described once per edit, not per
    request."""
    loaded = memory.plan(plan_id, district=district)
    cached = loaded.caches.described
    if cached is not None and cached[0] == loaded.version:
        return {**cached[1]}  # callers add the user's actions to their copy
    version = loaded.version
    described = describe_plan(memory, plan_id, district)
    names = community_names(memory, plan_id, district)
    colours = colour_communities({c["community_code"]: c["neighbours"] for c in described["communities"]})
    for c in described["communities"]:
        name_figure(c, names.get(c["community_code"]))
        c["colour"] = colours[c["community_code"]]
    described["by_view"] = described["units"] > ALL_UNITS_MAX
    described["unit_zoom"] = UNIT_ZOOM if described["by_view"] else None
    if described["version"] == version:
        loaded.caches.described = (version, described)
    return {**described}


def tolerance(zoom: float | None) -> float:
    """Half a pixel at ``zoom``, in degrees (0 — nothing simplified — without a zoom)."""
    if zoom is None:
        return 0.0
    return 360.0 / (256 * 2 ** max(0.0, min(float(zoom), 22.0))) / 2


def _round(geoms: np.ndarray, tol: float) -> np.ndarray:
    digits = 7 if tol == 0 else min(7, max(4, int(-math.floor(math.log10(tol))) + 1))
    return shapely.transform(geoms, lambda xy: np.round(xy, digits))


def _feature_collection(features: list[str]) -> str:
    return '{"type":"FeatureCollection","features":[' + ",".join(features) + "]}"


def units_in_view(memory: PlanMemory, plan_id: int, bbox: tuple[float, float, float, float] | None = None,
                  zoom: float | None = None, district: str | None = None) -> str:
    """The plan's units (within ``bbox`` when given) as GeoJSON, simplified to half a pixel of
    ``zoom``: each with its community in the plan, the current one (``null`` for a blind spot)
    and a point inside it (for lasso selection)."""
    loaded = memory.plan(plan_id, district=district)
    with loaded.lock:
        units = loaded.units
        positions = np.arange(len(units)) if bbox is None else np.sort(units.sindex.query(shapely.box(*bbox)))
        labels = loaded.partition.labels[positions].tolist()
        current = loaded.graph.current[positions].tolist()
    tol = tolerance(zoom)
    geoms = units.geometry.values[positions]
    inside = shapely.point_on_surface(geoms)
    if tol:
        geoms = shapely.simplify(geoms, tol, preserve_topology=True)
    geoms = _round(geoms, tol)
    texts = shapely.to_geojson(geoms)
    codes = units["code"].to_numpy()[positions].tolist()
    households = units["households"].fillna(0).to_numpy(dtype=np.int64)[positions].tolist()
    streets = units["street_code"].to_numpy()[positions].tolist()
    land = units["land_use"].to_numpy()[positions].tolist() if "land_use" in units else [None] * len(codes)
    xs, ys = np.round(shapely.get_x(inside), 6).tolist(), np.round(shapely.get_y(inside), 6).tolist()
    features = []
    for i in range(len(codes)):
        properties = {"code": codes[i], "households": households[i], "street_code": streets[i],
                      "land_use": land[i] if isinstance(land[i], str) else None,
                      "community_code": labels[i] or None, "current_code": current[i],
                      "lon": xs[i], "lat": ys[i]}
        features.append('{"type":"Feature","properties":' + json.dumps(properties, ensure_ascii=False)
                        + ',"geometry":' + texts[i] + "}")
    return _feature_collection(features)


def _dissolved(loaded: LoadedPlan) -> dict[str, shapely.Geometry]:
    """Each community's outline (the coverage union of its units), kept with the loaded plan
    and redone only for the communities whose households or area changed since."""
    cache = loaded.caches.outlines
    p = loaded.partition
    signature = {c: (int(p.households[c]), round(float(p.area[c]), 1)) for c in p.communities}
    stale = [c for c in signature if cache.get(c, (None, None))[0] != signature[c]]
    geoms = loaded.units.geometry.values
    for code in stale:
        members = p.members(code)
        cache[code] = (signature[code], shapely.coverage_union_all(geoms[members]))
    for code in set(cache) - set(signature):
        del cache[code]
    return {c: cache[c][1] for c in signature}


def prepare(memory: PlanMemory, plan_id: int, district: str | None = None) -> None:
    """Work out now what a plan page asks for first — the plan described, its communities'
    outlines — so that warming a server's memory (:meth:`PlanMemory.warm`) leaves nothing slow
    for the first planner to open the plan."""
    describe(memory, plan_id, district)
    loaded = memory.plan(plan_id, district=district)
    with loaded.lock:
        _dissolved(loaded)


def outlines(memory: PlanMemory, plan_id: int, zoom: float | None = None,
             codes: list[str] | None = None, district: str | None = None) -> str:
    """The plan's communities as GeoJSON outlines simplified for ``zoom`` (shared boundaries
    simplified once, so neighbours still meet), each with a point inside it for its label; the
    last few zooms' answers are kept with the loaded plan for its version. ``codes``: only these
    communities (those an edit changed: the page redraws them, not the whole plan)."""
    whole = _outlines(memory, plan_id, zoom, district)
    if codes is None:
        return whole
    loaded = memory.plan(plan_id, district=district)
    key = (loaded.version, None if zoom is None else round(float(zoom), 1))
    with loaded.lock:
        by_code = loaded.caches.outline_features.get(key)
    if by_code is None:  # the version moved on meanwhile: the whole answer is the right one
        return whole
    return _feature_collection([by_code[c] for c in codes if c in by_code])


def _outlines(memory: PlanMemory, plan_id: int, zoom: float | None = None,
              district: str | None = None) -> str:
    loaded = memory.plan(plan_id, district=district)
    key = (loaded.version, None if zoom is None else round(float(zoom), 1))
    with loaded.lock:
        answers = loaded.caches.outline_answers
        if key in answers:
            return answers[key]
    with loaded.lock:
        dissolved = _dissolved(loaded)
        p = loaded.partition
        households = {c: int(p.households[c]) for c in dissolved}
    codes = sorted(dissolved)
    geoms = np.array([dissolved[c] for c in codes], dtype=object)
    tol = tolerance(zoom)
    if tol and len(geoms):
        geoms = shapely.coverage_simplify(geoms, tol * 2)
    inside = shapely.point_on_surface(np.array([dissolved[c] for c in codes], dtype=object)) if codes else []
    texts = shapely.to_geojson(_round(geoms, tol)) if codes else []
    features = []
    for i, code in enumerate(codes):
        properties = {"code": code, "households": households[code],
                      "lon": round(float(shapely.get_x(inside[i])), 6),
                      "lat": round(float(shapely.get_y(inside[i])), 6)}
        features.append('{"type":"Feature","properties":' + json.dumps(properties)
                        + ',"geometry":' + texts[i] + "}")
    answer = _feature_collection(features)
    with loaded.lock:
        by_code = loaded.caches.outline_features
        for old in [k for k in answers if k[0] != key[0]] + list(answers)[:-5]:
            answers.pop(old, None)  # other versions' answers, and all but the last few zooms
            by_code.pop(old, None)
        answers[key] = answer
        by_code[key] = dict(zip(codes, features, strict=True))
    return answer


def document_actions(plan: dict, role: str, actor: str) -> list[str]:
    """What ``role`` may do with the plan as a document: rename (not once adopted), duplicate,
    delete (a draft, by its author or an admin) — what the page offers as buttons."""
    actions = []
    if role in ("planner", "admin"):
        if plan["status"] != "adopted":
            actions.append("rename")
        actions.append("duplicate")
        if plan["status"] == "draft" and (role == "admin" or plan["author"] == actor):
            actions.append("delete")
    return actions
