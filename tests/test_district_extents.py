"""Reads by place name their districts (issue 19): each district's extent of a layer is kept
against the layer's revision counters (``geodata.extents``) and equals the extent of its rows
after every kind of write; a district's coverage report reads the facilities, roads, buildings and
communities of its halo from the districts whose rows can meet it — its own alone when the next
district lies far — and still finds a facility kept by a far district but standing in it."""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager

import geopandas as gpd
import numpy as np
import pytest
from sqlalchemy import event, text

from geodata.extents import (
    PLACED_LAYERS,
    district_extents,
    districts_meeting,
    districts_naming,
    split_by_district,
)
from geodata.revisions import raise_layer_revision
from geodata.store import read_layer, write_layer
from layers.coverage import gaps
from layers.coverage.districts import CoverageTask, district_inputs, report_all, report_district, whole_crs
from layers.plans.scale import SerialRunner, process_engine
from tests.conftest import PARTITIONED
from tests.test_district_coverage import as_json
from tests.test_district_revisions import A, B, streets, two_districts_apart


@pytest.fixture(scope="module", params=["spatialite", "postgis"])
def country(request, tmp_path_factory, small_demo):
    """Districts A and B 10 km apart, the demo's facilities in each: (engine, layers, url)."""
    return two_districts_apart(request, tmp_path_factory, small_demo)


#: the statements that read a layer by place (the halo's reads)
PLACED = ("FROM facilities", "FROM roads", "FROM buildings", "FROM communities")


def truth(bind, layer: str) -> dict[str, tuple]:
    """Each district's extent of ``layer`` from its rows, read whole."""
    frame = read_layer(bind, layer)
    return {str(d): tuple(part.total_bounds) for d, part in frame.groupby("district_code") if len(part)}


def same_extents(kept: dict, wanted: dict) -> None:
    assert sorted(kept) == sorted(wanted)
    for code, bounds in wanted.items():
        np.testing.assert_allclose(kept[code], bounds, atol=1e-9, err_msg=code)


def station(engine, district: str, street: str, code: str) -> gpd.GeoDataFrame:
    """A health station kept by ``district``, standing on the unit of ``street`` farthest from
    every health station (so that it reaches households none reached)."""
    units = read_layer(engine, "units", street=street)
    points = units.geometry.representative_point()
    stations = read_layer(engine, "facilities", where={"kind": "health_station"})
    metric_points, metric_stations = points.to_crs(3857), stations.to_crs(3857)
    where = points.iloc[int(np.argmax([metric_stations.distance(p).min() for p in metric_points]))]
    return gpd.GeoDataFrame({"code": [code], "kind": ["health_station"], "name": ["代管卫生站"],
                             "district_code": [district]}, geometry=[where], crs=4326)


@contextmanager
def statements_with_parameters(engine):
    said: list[tuple[str, object]] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        said.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield said
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_each_districts_extent_is_that_of_its_rows_after_every_kind_of_write(country):
    engine, layers, _url = country
    for layer in PLACED_LAYERS:
        same_extents(district_extents(engine, layer), truth(engine, layer))
    a_box = tuple(read_layer(engine, "units", street=streets(layers, A)[0]).total_bounds)
    assert districts_meeting(engine, "facilities", a_box) == [A]  # B lies 10 km east

    # a write naming its district: B's extent now reaches into A
    with engine.begin() as conn:
        write_layer(conn, "facilities", station(engine, B, streets(layers, A)[0], "b-in-a"), mode="append")
    same_extents(district_extents(engine, "facilities"), truth(engine, "facilities"))
    assert districts_meeting(engine, "facilities", a_box) == [A, B]

    # a write whose districts are unknown: every district's counter, the layer measured whole
    with engine.begin() as conn:
        conn.execute(text("UPDATE facilities SET district_code = :a WHERE code = 'b-in-a'"), {"a": A})
        raise_layer_revision(conn, "facilities", None)
    same_extents(district_extents(engine, "facilities"), truth(engine, "facilities"))
    assert districts_meeting(engine, "facilities", a_box) == [A]

    # read on a connection whose transaction is undone: measured there, nothing of it kept
    with engine.connect() as conn, conn.begin() as transaction:
        conn.execute(text("UPDATE facilities SET district_code = :b WHERE code = 'b-in-a'"), {"b": B})
        raise_layer_revision(conn, "facilities", {A, B})
        same_extents(district_extents(conn, "facilities"), truth(conn, "facilities"))
        assert districts_meeting(conn, "facilities", a_box) == [A, B]
        transaction.rollback()
    same_extents(district_extents(engine, "facilities"), truth(engine, "facilities"))

    # the row goes, its district's counter raised: the extent shrinks back
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM facilities WHERE code = 'b-in-a'"))
        raise_layer_revision(conn, "facilities", {A})
    same_extents(district_extents(engine, "facilities"), truth(engine, "facilities"))

    # a district's roads all gone: it has no extent, and is read for no box
    with engine.connect() as conn, conn.begin() as transaction:
        conn.execute(text("DELETE FROM roads WHERE district_code = :b"), {"b": B})
        raise_layer_revision(conn, "roads", {B})
        assert B not in district_extents(conn, "roads") and A in district_extents(conn, "roads")
        transaction.rollback()


def test_a_districts_halo_is_read_from_the_districts_whose_rows_can_meet_it(country):
    """On a store split by district the halo's reads name the districts whose rows can meet it
    (A's alone: B lies far); on a whole table they go by the spatial index alone. Either way a
    facility kept by B is read where it serves A."""
    engine, layers, url = country
    split = split_by_district(engine)
    assert split == (PARTITIONED and engine.dialect.name == "postgresql")
    rows = [dataclasses.asdict(s) for s in gaps.load_standards(engine)]
    task = CoverageTask(url, A, "roads", int(whole_crs(engine).to_epsg()), rows)

    def halo_reads() -> list[tuple[str, object]]:
        report_district(task)  # the extents measured and kept first; the reads recorded next
        with statements_with_parameters(process_engine(url)) as said:
            report_district(task)
        reads = [(s, p) for s, p in said if any(f in s for f in PLACED) and "district_extents" not in s]
        assert len(reads) >= 5, said
        return reads

    for statement, parameters in halo_reads():
        by_box = "&&" in statement or "SpatialIndex" in statement
        if split:
            assert "district_code" in statement.split("WHERE", 1)[-1], statement
            assert B not in str(parameters), (statement, parameters)  # B, far east, is not read
        elif by_box:
            assert "district_code IN" not in statement, statement

    # a station kept by B, standing in B, naming a community of A: read with A's named ones
    a_community = sorted(layers["communities"].loc[layers["communities"]["district_code"] == A, "code"])[0]
    named = station(engine, B, streets(layers, B)[0], "b-names-a")
    named["community_code"] = a_community
    with engine.begin() as conn:
        write_layer(conn, "facilities", named, mode="append")
    try:
        assert districts_naming(engine, "facilities", [a_community]) == [A, B]
        read = district_inputs(engine, A, gaps.load_standards(engine)).facilities
        assert read.loc[read["code"] == "b-names-a", "community_code"].tolist() == [a_community]
        assert as_json(report_all(engine, "straight", runner=SerialRunner()).report) == \
            as_json(gaps.report_for(engine, method="straight"))
    finally:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM facilities WHERE code = 'b-names-a'"))
            raise_layer_revision(conn, "facilities", {B})
    assert districts_naming(engine, "facilities", [a_community]) == [A]

    # a station kept by B but standing in A's first street: read with A's halo, and counted
    before = covered(report_all(engine, "straight", runner=SerialRunner()).report)
    with engine.begin() as conn:
        write_layer(conn, "facilities", station(engine, B, streets(layers, A)[0], "b-kept"), mode="append")
    try:
        assert "b-kept" in set(district_inputs(engine, A, gaps.load_standards(engine)).facilities["code"])
        named = [p for s, p in halo_reads() if "FROM facilities" in s]
        assert any(B in str(p) for p in named) == split, named
        whole = gaps.report_for(engine, method="straight")
        made = report_all(engine, "straight", runner=SerialRunner())
        assert as_json(made.report) == as_json(whole)
        assert covered(whole) > before  # it reaches households no station reached
    finally:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM facilities WHERE code = 'b-kept'"))
            raise_layer_revision(conn, "facilities", {B})


def covered(report: dict) -> int:
    """Households within reach of a health station, in ``report``."""
    return next(r["households_covered"] for r in report["reach"] if r["kind"] == "health_station")


@pytest.mark.parametrize("layer", PLACED_LAYERS)
def test_a_box_far_from_every_district_names_none(country, layer):
    engine, _layers, _url = country
    assert districts_meeting(engine, layer, (100.0, 10.0, 100.1, 10.1)) == []
    assert read_layer(engine, layer, bbox=(100.0, 10.0, 100.1, 10.1)).empty
