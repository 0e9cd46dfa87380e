"""Boundaries as they are: topology of constructed overlapping and gapped polygons with exact
areas, cleaning only what is under the threshold, history kept, the revision raised."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import shapely
from shapely.geometry import box
from sqlalchemy import func, select

from geodata.crs import WGS84
from geodata.models import CommunityHistory
from geodata.revisions import current_revision
from geodata.store import read_layer, write_layer
from layers.onboarding.boundaries import clean, clean_stored, topology
from tests.conftest import make_app

METRIC = 4547  # CGCS2000 3-degree Gauss–Krüger CM 114E: what to_metric picks at 114.3E
X0, Y0 = 530_000.0, 3_385_000.0


def _in_degrees(geoms, **columns) -> gpd.GeoDataFrame:
    moved = [shapely.affinity.translate(g, X0, Y0) for g in geoms]
    return gpd.GeoDataFrame(columns, geometry=moved, crs=METRIC).to_crs(WGS84)


def constructed() -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """Two streets 300 × 100 m side by side, four communities with known defects:

    - A sticks a 0.8 × 50 m notch into B (overlap 40 m², small: B keeps it, it holds it on 3 sides);
    - B has a 60 × 40 m hole (gap 2,400 m², large) and a 10 × 10 m corner into street 2, over C
      (outside 100 m² and overlap 100 m², both large);
    - C leaves a 0.5 × 40 m notch next to D (gap 20 m², small: C has the longer edge with it);
    - D sticks 0.2 m out of street 2 (outside 20 m², small: cut off).
    """
    s1, s2 = box(0, 0, 300, 100), box(300, 0, 600, 100)
    a = shapely.union(box(0, 0, 150, 100), box(150, 0, 150.8, 50))
    b = shapely.union(shapely.difference(box(150, 0, 300, 100), box(200, 60, 260, 100)), box(300, 0, 310, 10))
    c = shapely.difference(box(300, 0, 450, 100), box(449.5, 0, 450, 40))
    d = box(450, 0, 600.2, 100)
    streets = _in_degrees([s1, s2], code=["420503901", "420503902"], name=["一街道", "二镇"],
                          district_code=["420503"] * 2)
    codes = ["420503901901", "420503901902", "420503902901", "420503902902"]
    communities = _in_degrees([a, b, c, d], code=codes,
                              name=["甲社区", "乙社区", "丙社区", "丁社区"],
                              street_code=["420503901", "420503901", "420503902", "420503902"],
                              district_code=["420503"] * 4)
    return communities, streets


def _by(findings, kind):
    return sorted((tuple(f["codes"]), f["area_m2"]) for f in findings if f["kind"] == kind)


def test_topology_finds_overlaps_gaps_and_outside_pieces_with_exact_areas():
    communities, streets = constructed()
    found = topology(communities, streets).summary()
    assert found["overlaps"] == 2 and found["gaps"] == 2 and found["outside_street"] == 2
    assert found["overlap_m2"] == pytest.approx(140.0, abs=0.01)
    assert found["gap_m2"] == pytest.approx(2420.0, abs=0.01)
    assert found["outside_street_m2"] == pytest.approx(120.0, abs=0.01)
    assert _by(found["findings"], "overlap") == [
        (("420503901901", "420503901902"), pytest.approx(40.0, abs=0.01)),
        (("420503901902", "420503902901"), pytest.approx(100.0, abs=0.01))]
    assert _by(found["findings"], "gap") == [(("420503901",), pytest.approx(2400.0, abs=0.01)),
                                             (("420503902",), pytest.approx(20.0, abs=0.01))]
    assert _by(found["findings"], "outside_street") == [
        (("420503901902", "420503901"), pytest.approx(100.0, abs=0.01)),
        (("420503902902", "420503902"), pytest.approx(20.0, abs=0.01))]
    # every finding carries a point inside its piece, in degrees
    for f in found["findings"]:
        lon, lat = f["point"]
        assert 114.0 < lon < 114.7 and 30.0 < lat < 31.0
    json.dumps(found)  # plain JSON


def test_clean_changes_only_what_is_under_the_threshold():
    communities, streets = constructed()
    result = clean(communities, streets, max_sliver=50)
    changed = {(c["kind"], tuple(c["codes"])): c for c in result.changed}
    assert set(changed) == {("outside_street", ("420503902902", "420503902")),
                            ("overlap", ("420503901901", "420503901902")),
                            ("gap", ("420503902",))}
    assert changed[("overlap", ("420503901901", "420503901902"))]["to"] == "420503901902"
    assert changed[("gap", ("420503902",))]["to"] == "420503902901"
    # A, C and D were redrawn; B (its large defects left for the planner) was not
    assert sorted(result.communities["code"]) == ["420503901901", "420503902901", "420503902902"]
    after = result.summary()
    assert after["overlaps"] == 1 and after["overlap_m2"] == pytest.approx(100.0, abs=0.01)
    assert after["gaps"] == 1 and after["gap_m2"] == pytest.approx(2400.0, abs=0.01)
    assert after["outside_street"] == 1 and after["outside_street_m2"] == pytest.approx(100.0, abs=0.01)
    # areas moved exactly: A lost its notch, C gained the gap, D lost its sliver
    metric = result.communities.to_crs(METRIC).set_index("code").area
    assert metric["420503901901"] == pytest.approx(15_000.0, abs=0.01)
    assert metric["420503902901"] == pytest.approx(15_000.0, abs=0.01)
    assert metric["420503902902"] == pytest.approx(15_000.0, abs=0.01)
    # a threshold of zero changes nothing
    assert clean(communities, streets, max_sliver=0).changed == []


def test_ties_are_left_for_the_planner():
    streets = _in_degrees([box(0, 0, 200, 100)], code=["420503901"], name=["一街道"],
                          district_code=["420503"])
    # a 0.4 m strip between two communities: both share 100 m with it — no rule decides
    communities = _in_degrees([box(0, 0, 100, 100), box(100.4, 0, 200, 100)],
                              code=["420503901901", "420503901902"], name=["甲", "乙"],
                              street_code=["420503901"] * 2, district_code=["420503"] * 2)
    result = clean(communities, streets, max_sliver=50)
    assert result.changed == [] and result.summary()["gaps"] == 1


def _store(engine, communities, streets):
    with engine.begin() as conn:
        write_layer(conn, "streets", streets)
        write_layer(conn, "communities", communities)


def test_clean_stored_keeps_history_and_raises_the_revision(engine):
    communities, streets = constructed()
    _store(engine, communities, streets)
    before = current_revision(engine)
    result = clean_stored(engine, 50)
    assert current_revision(engine) == before + 1
    with engine.connect() as conn:
        kept = sorted(conn.execute(select(CommunityHistory.code)).scalars())
    assert kept == sorted(result.communities["code"])
    stored = read_layer(engine, "communities").set_index("code")
    d = stored.loc[["420503902902"]].to_crs(METRIC).area.iloc[0]
    assert d == pytest.approx(15_000.0, abs=0.05)
    # cleaning again finds nothing small left: nothing written, revision unchanged
    again = clean_stored(engine, 50)
    assert again.changed == [] and current_revision(engine) == before + 1
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(CommunityHistory)).scalar_one() == len(kept)


def test_cli_topology_and_clean_print_one_json_object(db_url, engine):
    communities, streets = constructed()
    _store(engine, communities, streets)
    runner = make_app(db_url).test_cli_runner()
    result = runner.invoke(args=["topology", "communities"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found["overlaps"] == 2 and found["gap_m2"] == pytest.approx(2420.0, abs=0.01)
    result = runner.invoke(args=["clean", "communities", "--max-sliver", "50"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    cleaned = json.loads(result.stdout)
    assert len(cleaned["changed"]) == 3 and cleaned["overlaps"] == 1
    result = runner.invoke(args=["clean", "communities", "--max-sliver", "-1"])
    assert result.exit_code == 2 and "cannot be negative" in result.output
    result = runner.invoke(args=["topology", "streets"])
    assert result.exit_code == 2


def test_topology_api_is_a_geojson_layer(db_url, engine):
    from tests.webhelpers import PASSWORD, sign_in
    from webmap.auth import add_user

    communities, streets = constructed()
    _store(engine, communities, streets)
    app = make_app(db_url)
    with app.app_context():
        add_user("planner", "planner", PASSWORD)
    client = app.test_client()
    assert client.get("/api/topology/communities").status_code == 401
    sign_in(client, "planner")
    answer = client.get("/api/topology/communities")
    assert answer.status_code == 200 and answer.mimetype == "application/geo+json"
    body = answer.get_json()
    assert len(body["features"]) == 6 and body["summary"]["overlaps"] == 2
    kinds = sorted(f["properties"]["kind"] for f in body["features"])
    assert kinds == ["gap", "gap", "outside_street", "outside_street", "overlap", "overlap"]
    assert client.get("/api/topology/communities?street=12").status_code == 400
    assert np.isfinite(body["features"][0]["properties"]["area_m2"])
