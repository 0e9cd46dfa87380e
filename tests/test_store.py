"""The layer store on SpatiaLite and PostGIS: round trips, filters, the spatial index."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from sqlalchemy import func, select

from geodata import dialect
from geodata.catalog import LAYERS
from geodata.models import IncidentStep, UnitAdjacency
from geodata.store import as_stored_type, layer_counts, read_layer, write_layer
from layers.sample_data.demo import write_demo


def test_demo_round_trips_through_the_database(engine, small_demo):
    write_demo(engine, small_demo)
    counts = layer_counts(engine)
    for name, gdf in small_demo.layers.items():
        assert counts[name] == len(gdf), name
    units = read_layer(engine, "units")
    original = small_demo.layers["units"].set_index("code")
    stored = units.set_index("code").loc[original.index]
    assert (stored["households"] == original["households"]).all()
    assert (stored["community_code"].fillna("") == original["community_code"].fillna("")).all()
    as_multi = as_stored_type(np.asarray(original.geometry.values, dtype=object), "polygon")
    assert shapely.equals_exact(np.asarray(stored.geometry.values), as_multi, tolerance=1e-12).all()
    assert units.crs.to_epsg() == 4326
    with engine.connect() as conn:
        pairs = conn.execute(select(func.count()).select_from(UnitAdjacency)).scalar_one()
        steps = conn.execute(select(func.count()).select_from(IncidentStep)).scalar_one()
    assert pairs == len(small_demo.adjacency)
    assert steps == len(small_demo.steps)
    incidents = read_layer(engine, "incidents")
    assert incidents["reported_at"].min() == small_demo.layers["incidents"]["reported_at"].min()


def test_read_one_street_or_one_community(engine, small_demo):
    write_demo(engine, small_demo)
    street = small_demo.layers["streets"]["code"].iloc[1]
    community = small_demo.layers["communities"]["code"].iloc[0]
    units = read_layer(engine, "units", street=street)
    assert len(units) == (small_demo.layers["units"]["street_code"] == street).sum()
    cells = read_layer(engine, "grid_cells", community=community)
    assert len(cells) and (cells["community_code"] == community).all()
    cells = read_layer(engine, "grid_cells", street=street)
    assert len(cells) and cells["code"].str.startswith(street).all()
    facilities = read_layer(engine, "facilities", street=street)
    assert facilities["community_code"].dropna().str.startswith(street).all()
    roads = read_layer(engine, "roads", street=street)
    outline = small_demo.layers["streets"].set_index("code").geometry[street]
    assert len(roads) and shapely.intersects(roads.geometry.values, outline).all()


def test_bbox_query_returns_what_intersects_the_box(engine, small_demo):
    write_demo(engine, small_demo)
    units = small_demo.layers["units"]
    minx, miny, maxx, maxy = units.total_bounds
    box = (minx, miny, (minx + maxx) / 2, (miny + maxy) / 2)
    found = read_layer(engine, "units", bbox=box)
    expected = units[shapely.intersects(shapely.envelope(units.geometry.values), shapely.box(*box))]
    assert set(found["code"]) == set(expected["code"])
    assert 0 < len(found) < len(units)


def test_bbox_query_uses_the_spatial_index(engine, small_demo):
    write_demo(engine, small_demo)
    table = LAYERS["units"].table
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("ANALYZE units")
            conn.exec_driver_sql("SET enable_seqscan = off")  # a small table; show the index is usable
        stmt = select(table.c.code).where(dialect.bbox_filter(conn, table, (114.2, 30.5, 114.25, 30.55)))
        plan = dialect.query_plan(conn, stmt)
    if engine.dialect.name == "sqlite":
        assert "SpatialIndex" in plan or "idx_units_geom" in plan, plan
    else:  # on tables partitioned by district: the index of the partition scanned
        assert "idx_units_geom" in plan or ("Index Scan using units_" in plan and "_geom_idx" in plan), plan


def test_write_is_one_transaction(engine, small_demo):
    units = small_demo.layers["units"].iloc[:50]
    with pytest.raises(RuntimeError):
        with engine.begin() as conn:
            write_layer(conn, "units", units)
            raise RuntimeError("fail after the inserts")
    assert layer_counts(engine)["units"] == 0


def test_update_mode_changes_matched_rows(engine, small_demo):
    units = small_demo.layers["units"].iloc[:20].copy()
    with engine.begin() as conn:
        write_layer(conn, "units", units)
    units["households"] = np.arange(20) + 5000
    with engine.begin() as conn:
        write_layer(conn, "units", units.iloc[:10], mode="update")
    stored = read_layer(engine, "units").set_index("code")["households"]
    assert (stored.loc[units["code"].iloc[:10]].to_numpy() == np.arange(10) + 5000).all()
    assert (stored.loc[units["code"].iloc[10:]].to_numpy()
            == small_demo.layers["units"]["households"].iloc[10:20].to_numpy()).all()


def test_writers_that_read_first_wait_for_each_other(engine):
    """Two transactions that each read and then write, interleaved: on SQLite a deferred
    transaction would fail with "database is locked" when the other committed between its read
    and its write (seen as a 503 under load); both must be stored, one after the other."""
    import threading

    from sqlalchemy import text

    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE tally (n INTEGER)"))
    first_read, second_done = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def first() -> None:
        try:
            with engine.begin() as conn:
                n = conn.execute(text("SELECT count(*) FROM tally")).scalar_one()
                first_read.set()
                second_done.wait(1.0)  # the second writer cannot finish while this one holds the lock
                conn.execute(text("INSERT INTO tally VALUES (:n)"), {"n": n})
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)
            first_read.set()

    def second() -> None:
        try:
            first_read.wait(10)
            with engine.begin() as conn:
                n = conn.execute(text("SELECT count(*) FROM tally")).scalar_one()
                conn.execute(text("INSERT INTO tally VALUES (:n)"), {"n": n})
        except BaseException as exc:  # noqa: BLE001
            failures.append(exc)
        second_done.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not failures, failures
    with engine.connect() as conn:
        stored = sorted(conn.execute(text("SELECT n FROM tally")).scalars())
    # SQLite serialises the two (the second reads the first's row); PostgreSQL's read committed
    # lets both read 0 — where that matters the code locks the rows it reads (FOR UPDATE)
    assert stored == ([0, 1] if engine.dialect.name == "sqlite" else [0, 0])
