"""The grid page as a tester walking issue 17 found it: the 网格员 named on each cell shown (not
only accounts assigned through the grid API), the 指派 list offering only supervisors who can take
the cell, and a demo whose generated cells never overlap. On SpatiaLite and PostGIS."""

from __future__ import annotations

import pytest

from geodata.db import get_engine
from geodata.store import read_layer
from tests.conftest import demo_site, streets_of
from tests.webhelpers import signed_in


@pytest.fixture
def site(db_url, small_demo):
    app, secrets = demo_site(db_url, small_demo)
    return {"app": app, "engine": get_engine(db_url), **secrets}


def test_every_street_shows_the_supervisors_named_on_its_cells(site, small_demo):
    client, _ = signed_in(site["app"], "planner")
    named = read_layer(site["engine"], "grid_cells")
    named = dict(zip(named["code"], named["supervisor"], strict=True))
    assert sum(isinstance(n, str) and bool(n) for n in named.values()) > 0.9 * len(named)
    seen = 0
    for street in streets_of(small_demo):
        answer = client.get(f"/api/grid/cells?street={street}").get_json()
        for feature in answer["features"]:
            p = feature["properties"]
            if named.get(p["code"]):
                assert p["supervisors"][0] == named[p["code"]], p["code"]
                seen += 1
            assert "supervisor" not in p  # one list, the page's
    assert seen == sum(bool(n) for n in named.values())
