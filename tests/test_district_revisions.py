"""One revision per district (issue 19, item 5): on a generated two-district city, an import or
an adoption in one district leaves every other district's plan memory, coverage answers and plans
as they were, while the district it touched has them rebuilt; a write across both districts
raises both; a write whose districts cannot be known raises every district's."""

from __future__ import annotations

import json
import re
import subprocess

import geopandas as gpd
import pandas as pd
import pytest
import shapely
from sqlalchemy import select, text

from geodata import plan_rows
from geodata.db import get_engine
from geodata.exporter import export_layer
from geodata.models import Revision
from geodata.revisions import district_revision, raise_layer_revision, raise_revision
from geodata.store import read_layer, write_layer
from layers.coverage import cache as coverage_cache
from layers.onboarding.imports import import_layer
from layers.plans import workflow as plan_workflow
from layers.plans.memory import PlanMemory
from layers.sample_data.country import tile, write_country
from tests.conftest import make_app, recorded
from tests.test_plan_revisions import adopt
from tests.test_plan_scale import module_database
from tests.test_processes import call, every_process
from tests.webhelpers import BIN, ROOT, gunicorn_app

A, B = "421001", "421002"
#: how far district B is moved east (degrees, about 10 km): no street of A is within reach of it
APART = 0.1


@pytest.fixture(scope="module", params=["spatialite", "postgis"])
def country(request, tmp_path_factory, small_demo):
    """Two copies of the small demo, districts A and B, B moved well apart, with the demo's
    facilities in each (what coverage reads), in a database of each kind: (engine, layers, url)."""
    return two_districts_apart(request, tmp_path_factory, small_demo)


def two_districts_apart(request, tmp_path_factory, small_demo):
    """What :func:`country` makes, for other modules' fixtures."""
    url = module_database(request, tmp_path_factory)
    engine = get_engine(url)
    made = tile(small_demo, 2, [A, B])
    base = str(small_demo.layers["districts"]["code"].iloc[0])
    facilities = []
    for code in (A, B):
        copy = small_demo.layers["facilities"].copy()
        copy["district_code"] = code
        copy["community_code"] = copy["community_code"].astype(object).where(
            copy["community_code"].isna(), code + copy["community_code"].astype(str).str.slice(len(base)))
        copy["code"] = copy["code"].astype(str) + f"-{code}"
        facilities.append(copy)
    made.layers["facilities"] = gpd.GeoDataFrame(pd.concat(facilities, ignore_index=True), crs=4326)
    minx, _, maxx, _ = small_demo.layers["districts"].total_bounds
    assert 2 * (maxx - minx) < APART
    for frame in made.layers.values():  # B: every row east of A's first copy's place
        in_b = frame["district_code" if "district_code" in frame else "code"].astype(str) == B
        moved = shapely.transform(frame.geometry.values[in_b.to_numpy()], lambda xy: xy + (APART, 0.0))
        frame.loc[in_b, "geometry"] = gpd.GeoSeries(moved, index=frame.index[in_b], crs=4326)
    write_country(engine, made)  # the facilities too: a country's layers carry them when given
    return engine, made.layers, url


def streets(layers, district: str) -> list[str]:
    frame = layers["streets"]
    return sorted(frame.loc[frame["district_code"] == district, "code"])


def counters(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(select(Revision.name, Revision.value)).all())


@pytest.fixture
def warm(country):
    """A process's memory holding a plan of a street of each district, and its coverage answer of
    both streets: (engine, memory, coverage memory, {district: (street, plan id, coverage key)})."""
    engine, layers, _url = country
    memory = PlanMemory(engine)
    kept = coverage_cache.CoverageMemory(engine)
    held = {}
    for district in (A, B):
        street = streets(layers, district)[0]
        plan_id, _ = plan_workflow.auto_plan(memory, f"plan {street}", "planner", street=street)
        memory.plan(plan_id)
        key = coverage_cache.state_key(engine, street, "straight")
        kept.compute(street, "straight", key)
        held[district] = (street, plan_id, key)
    return engine, memory, kept, held


def stale(memory: PlanMemory, plan_id: int) -> dict | None:
    return plan_workflow.stale_changes(memory, plan_rows.get_plan(memory.engine, plan_id))


def changed_file(engine, tmp_path, layer: str, changed: list[str], street: str | None = None):
    """``layer`` exported (one street, or all) with the first row of each street of ``changed``
    changed (a unit's households, a community's name): what a department sends back. Its path."""
    out = export_layer(engine, layer, "geojson", tmp_path / f"{layer}.geojson", street=street)
    data = json.loads(out.path.read_text(encoding="utf-8"))
    left = set(changed)
    for feature in data["features"]:
        props = feature["properties"]
        if props["street_code"] not in left:
            continue
        if layer == "units":
            props["households"] = int(props["households"]) + 7
        else:
            props["name"] = "新" + props["name"]
        left.discard(props["street_code"])
    assert not left
    out.path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return out.path


def test_a_street_coverage_reads_only_its_own_district(country):
    engine, layers, _url = country
    with engine.connect() as conn:
        standards = coverage_cache.get_setting(conn, "facility_standards")
        assert coverage_cache.scope_districts(conn, streets(layers, A)[0], standards) == {A}
        assert coverage_cache.scope_districts(conn, None, standards) is None  # a city: every district


def test_a_district_within_reach_of_a_street_is_read_with_it(country):
    """A district whose outline comes within reach of a street (its facilities serve the street's
    households across the edge) is part of the street's scope; written in a transaction undone."""
    engine, layers, _url = country
    street = layers["streets"].set_index("code").loc[streets(layers, A)[0]]
    minx, miny, maxx, maxy = street.geometry.bounds
    near = gpd.GeoDataFrame({"code": ["421003"], "name": ["邻区"]},
                            geometry=[shapely.box(maxx + 0.002, miny, maxx + 0.02, maxy)], crs=4326)
    with engine.connect() as conn, conn.begin() as transaction:
        write_layer(conn, "districts", near, mode="append")
        standards = coverage_cache.get_setting(conn, "facility_standards")
        assert coverage_cache.scope_districts(conn, streets(layers, A)[0], standards) == {A, "421003"}
        transaction.rollback()


def test_a_layer_written_in_one_district_moves_only_its_keys(warm):
    engine, _memory, _kept, held = warm
    (a_street, _, a_key), (b_street, _, b_key) = held[A], held[B]
    where = read_layer(engine, "units", street=b_street).geometry.iloc[0].representative_point()
    facilities = gpd.GeoDataFrame(
        {"code": ["new-school"], "kind": ["school"], "name": ["新学校"], "district_code": [B]},
        geometry=[where], crs=4326)
    with engine.begin() as conn:
        write_layer(conn, "facilities", facilities, mode="append")
    assert coverage_cache.state_key(engine, a_street, "straight") == a_key
    assert coverage_cache.state_key(engine, b_street, "straight") != b_key


def test_a_facility_kept_by_another_district_sited_within_reach_changes_the_street_key(warm):
    """A station administered by district B but standing in district A's street serves A's
    households: its coming (and its going) changes A's street key, though no counter of A moved."""
    engine, _memory, _kept, held = warm
    a_street, _, a_key = held[A]
    where = read_layer(engine, "units", street=a_street).geometry.iloc[0].representative_point()
    facilities = gpd.GeoDataFrame(
        {"code": ["b-kept-station"], "kind": ["health_station"], "name": ["乙区所属卫生站"],
         "district_code": [B]}, geometry=[where], crs=4326)
    with engine.begin() as conn:
        write_layer(conn, "facilities", facilities, mode="append")
    added = coverage_cache.state_key(engine, a_street, "straight")
    assert added != a_key
    with engine.begin() as conn:  # deleted as every writer of a layer does: its district's counter raised
        conn.execute(text("DELETE FROM facilities WHERE code = 'b-kept-station'"))
        raise_layer_revision(conn, "facilities", {B})
    # gone: as before it came (B's extent of facilities measured again, far from A's street)
    assert coverage_cache.state_key(engine, a_street, "straight") == a_key


@pytest.mark.parametrize(("layer", "mode"), [("units", "replace"), ("communities", "update")])
def test_an_import_in_one_district_leaves_the_other_as_it_was(warm, tmp_path, layer, mode):
    engine, memory, kept, held = warm
    (a_street, a_plan, a_key), (b_street, b_plan, b_key) = held[A], held[B]
    loaded_a, loads = memory.plan(a_plan), memory.loads
    before, city = counters(engine), coverage_cache.state_key(engine, None, "straight")
    path = changed_file(engine, tmp_path, layer, [b_street], street=None if mode == "replace" else b_street)
    report = import_layer(engine, layer, path, mode=mode)
    assert report.written == 1 and report.revision is not None
    after = counters(engine)
    assert after[f"boundaries@{B}"] == before.get(f"boundaries@{B}", 0) + 1
    assert after.get(f"boundaries@{A}") == before.get(f"boundaries@{A}")
    assert after[f"layer:{layer}@{B}"] > before.get(f"layer:{layer}@{B}", 0)
    assert after.get(f"layer:{layer}@{A}") == before.get(f"layer:{layer}@{A}")
    # district A: its plan is the same object, nothing read again; its coverage answer is kept
    assert memory.plan(a_plan) is loaded_a and memory.loads == loads
    assert coverage_cache.state_key(engine, a_street, "straight") == a_key
    assert kept.remembered(a_key) is not None
    assert stale(memory, a_plan) is None
    # district B: read again, asked again, and its plan is stale, naming the street
    assert memory.plan(b_plan).stamp == district_revision(engine, B) and memory.loads == loads + 1
    assert coverage_cache.state_key(engine, b_street, "straight") != b_key
    assert stale(memory, b_plan)["streets"] == [b_street]
    # a city-wide answer covers both districts: its key moved
    assert coverage_cache.state_key(engine, None, "straight") != city


def test_an_adoption_in_one_district_leaves_the_other_as_it_was(warm):
    engine, memory, kept, held = warm
    (a_street, a_plan, a_key), (b_street, b_plan, b_key) = held[A], held[B]
    loaded_b, loads = memory.plan(b_plan), memory.loads
    before = district_revision(engine, B), district_revision(engine, A)
    report = adopt(memory, a_plan)
    assert report["revision"] is not None
    assert district_revision(engine, B) == before[0] and district_revision(engine, A) > before[1]
    assert memory.plan(b_plan) is loaded_b and memory.loads == loads
    assert coverage_cache.state_key(engine, b_street, "straight") == b_key
    assert stale(memory, b_plan) is None
    assert coverage_cache.state_key(engine, a_street, "straight") != a_key
    other = plan_workflow.auto_plan(memory, "again", "planner", street=a_street)[0]
    assert memory.plan(other).stamp == district_revision(engine, A)


def test_a_write_across_both_districts_raises_both(warm, tmp_path):
    engine, memory, _kept, held = warm
    (_a, a_plan, a_key), (_b, b_plan, b_key) = held[A], held[B]
    loads = memory.loads
    before = district_revision(engine, A), district_revision(engine, B)
    report = import_layer(engine, "units", changed_file(engine, tmp_path, "units", [_a, _b]), mode="replace")
    assert report.written == 2
    assert district_revision(engine, A) == before[0] + 1 and district_revision(engine, B) == before[1] + 1
    memory.plan(a_plan)
    memory.plan(b_plan)
    assert memory.loads == loads + 2
    assert stale(memory, a_plan) is not None and stale(memory, b_plan) is not None
    for street, key in ((_a, a_key), (_b, b_key)):
        assert coverage_cache.state_key(engine, street, "straight") != key


def test_a_write_whose_districts_are_unknown_raises_every_district(warm):
    engine, memory, _kept, held = warm
    loads = memory.loads
    before = district_revision(engine, A), district_revision(engine, B)
    with engine.begin() as conn:
        raise_revision(conn, "test", actor="test")  # streets None: any street may have changed
    assert district_revision(engine, A) == before[0] + 1 and district_revision(engine, B) == before[1] + 1
    with engine.begin() as conn:  # a street no table places, and a code that does not nest
        raise_revision(conn, "test", actor="test", streets=[held[A][0], "东区-7"])
    assert district_revision(engine, A) == before[0] + 2 and district_revision(engine, B) == before[1] + 2
    with engine.begin() as conn:  # a nine-digit code gone from every table: under its district's
        raise_revision(conn, "test", actor="test", streets=[B + "999"])
    assert district_revision(engine, A) == before[0] + 2 and district_revision(engine, B) == before[1] + 3
    memory.plan(held[A][1])
    memory.plan(held[B][1])
    assert memory.loads == loads + 2


def test_every_process_sees_a_change_in_its_district_and_keeps_the_others(country, tmp_path):
    """gunicorn (two workers, memory warmed in the background) on the two-district city: units of
    a street of B replaced from the command line — every process plans that street from the new
    units, and keeps its coverage answer of a street of A (same ETag: nothing computed again)."""
    from webmap.auth import add_token

    engine, layers, url = country
    with make_app(url).app_context():
        token = add_token("planner-districts", "planner")
    a_street, b_street = streets(layers, A)[0], streets(layers, B)[0]

    def b_plan():
        r = call(base, token, "POST", "/api/plans", json={"name": "p", "street": b_street})
        return r, r.json()["scores"]["households"]

    def a_coverage():
        r = call(base, token, "GET", "/api/coverage/report",
                 params={"street": a_street, "method": "straight"})
        return r, r.headers["ETag"]

    with gunicorn_app(url, tmp_path, GRIDPLAN_WARM_EVERY="1") as (base, env):
        planned, etags = every_process(b_plan), every_process(a_coverage)
        assert len(set(planned.values())) == 1 and len(set(etags.values())) == 1
        path = changed_file(engine, tmp_path, "units", [b_street])
        command = ["import", "units", str(path), "--mode", "replace"]
        subprocess.run([str(BIN / "flask"), "--app", "webmap", *command], cwd=ROOT, env=env, check=True,
                       capture_output=True)
        assert set(every_process(b_plan).values()) == {next(iter(planned.values())) + 7}
        assert every_process(a_coverage) == etags


def test_an_adoption_reads_only_what_lies_in_its_streets(warm):
    """Working out an adoption in A reads the facilities within its communities' box and the
    cells under its streets' codes — never every facility and cell of the province (B's among
    them) — and still moves each facility of A to the community it stands in."""
    from layers.plans import adoption

    engine, memory, _kept, held = warm
    _street, a_plan, _key = held[A]
    with recorded(engine) as statements:
        work = adoption.work_out(memory, a_plan)
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")
             and any(f"FROM {t}" in s for t in ("facilities", "grid_cells"))]
    assert len(reads) >= 2, statements
    unbounded = [s for s in reads if "WHERE" not in s and "LIMIT" not in s]  # LIMIT 0: columns only
    assert not unbounded, unbounded
    assert len(work.facility_communities) > 0
    assert all(str(code).endswith(f"-{A}") for code in work.facility_communities["code"])
    assert set(work.facility_communities["district_code"]) == {A}


def test_a_new_plan_leaves_the_coverage_keys(warm):
    """A planner's new draft changes no boundary and no layer: every coverage key stays (on
    SQLite plans are numbered by a counter kept beside the revisions; counted as one, each new
    draft had every server's warm-up thread queue the city's whole report again)."""
    engine, memory, _kept, held = warm
    street, _plan, key = held[A]
    city = coverage_cache.state_key(engine, None, "straight")
    plan_workflow.auto_plan(memory, "one more draft", "planner", street=street)
    assert coverage_cache.state_key(engine, street, "straight") == key
    assert coverage_cache.state_key(engine, None, "straight") == city


#: the tables split by district (docs/scale.md): a statement on one of them names its district
SPLIT = re.compile(r"\b(FROM|UPDATE|JOIN) (units|unit_adjacency|communities|community_history|facilities"
                   r"|grid_cells|incidents|incident_steps|plan_assignments|buildings|roads)\b")


def test_an_adoption_and_its_cells_name_their_district_in_every_statement(warm):
    """Adopting a plan of district A and dividing its cells again: every statement reading,
    changing or deleting rows of a table split by district says which district (on a store split
    by district it goes to A's part alone; unpruned, it would open — and lock — every district's).
    The one kind left: a code looked up alone — a community's or cell's code is the nation's, and
    is refused when it is taken anywhere."""
    from layers.plans import adoption

    engine, memory, _kept, held = warm
    _street, a_plan, _key = held[A]
    with recorded(engine) as statements:
        adopt(memory, a_plan)
        adoption.regenerate_cells(engine, a_plan, "admin")
    touching = [s for s in statements if SPLIT.search(s)]
    assert len(touching) >= 10, statements
    unscoped = [s for s in touching if "district_code" not in s.split("WHERE", 1)[-1]]
    code_alone = re.compile(r"\s*\w+\.code IN \((?:[^()]|\([^()]*\))*\)\s*")  # PostgreSQL: %(code_1)s
    by_code_alone = [s for s in unscoped if code_alone.fullmatch(s.split("WHERE", 1)[-1])]
    assert len(by_code_alone) <= 3, by_code_alone  # taken, retired (communities); taken (cells)
    unscoped = [s for s in unscoped if s not in by_code_alone]
    assert not unscoped, "\n\n".join(unscoped)
    assert len(touching) - len(by_code_alone) >= 20
