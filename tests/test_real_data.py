"""Real data from tests/data: Providence census blocks as planning units, 311 requests."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyogrio
import pytest
from sqlalchemy import func, select

from geodata.models import UnitAdjacency
from geodata.settings import save_setting
from geodata.store import read_layer
from geodata.topology import rook_pairs
from layers.onboarding.imports import ImportRefused, import_layer, read_source


@pytest.fixture(scope="session")
def providence_units(providence_zip, tmp_path_factory) -> Path:
    """The blocks as units, as the data's README says: households = population / 2.62, wards
    as streets (999000WWW), no community (every block a blind spot)."""
    with tempfile.TemporaryDirectory() as tmp:
        blocks = read_source(providence_zip, workdir=Path(tmp))
    units = blocks[["GEOID10", "TOTPOP", "WARD", "geometry"]].copy()
    units["households"] = np.round(units["TOTPOP"] / 2.62).astype(int)
    units["street"] = [f"999000{int(w):03d}" for w in units["WARD"]]
    path = tmp_path_factory.mktemp("providence") / "providence_units.gpkg"
    pyogrio.write_dataframe(units, path)  # still in EPSG:4269, as the city sent it
    return path


def test_the_blocks_zip_reads_as_it_comes(providence_zip, tmp_path):
    blocks = read_source(providence_zip, workdir=tmp_path)  # __MACOSX/ and .qpj are ignored
    assert len(blocks) == 3014
    assert blocks.crs.to_epsg() == 4269
    assert blocks["TOTPOP"].sum() == 178_040


def test_rook_adjacency_matches_the_published_count(providence_zip, tmp_path):
    blocks = read_source(providence_zip, workdir=tmp_path)
    pairs = rook_pairs(blocks.to_crs(4326))
    assert len(pairs["i"]) == 7438  # the README: 7,438 pairs share an edge (10,217 touch at all)


def test_import_blocks_as_units(engine, providence_units):
    # gridplan takes features in China unless a city's administrator widens the import region
    with pytest.raises(ImportRefused, match="outside the import region"):
        import_layer(engine, "units", providence_units, mapping={"GEOID10": "code", "street": "street_code"})
    region = {"lon_min": -72.0, "lon_max": -71.0, "lat_min": 41.0, "lat_max": 42.5}
    save_setting(engine, "import_region", region, actor="admin")
    report = import_layer(engine, "units", providence_units, mapping={
        "GEOID10": "code", "street": "street_code", "TOTPOP": "population"})
    assert report.written == 3014
    assert report.adjacency_pairs == 7438
    assert set(report.ignored_fields) == {"WARD"}
    units = read_layer(engine, "units")
    assert units["households"].sum() == pytest.approx(178_040 / 2.62, rel=0.01)
    assert units["community_code"].isna().all()
    assert units["street_code"].nunique() == 15 and (units["district_code"] == "999000").all()
    minx, miny, maxx, maxy = units.total_bounds
    assert -71.5 < minx < maxx < -71.3 and 41.7 < miny < maxy < 41.9
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(UnitAdjacency)).scalar_one() == 7438


def test_311_requests_read_as_points_and_rows_without_a_place_are_named(test_data, tmp_path):
    boston = read_source(test_data / "us311" / "boston311-100.csv", workdir=tmp_path)
    assert len(boston) == 100 and boston.geometry.geom_type.eq("Point").all()
    assert boston.crs.to_epsg() == 4326 and boston.geometry.x.between(-71.3, -70.9).all()
    nyc = pd.read_csv(test_data / "us311" / "nyc311-100.csv")
    missing = np.flatnonzero(nyc["Longitude"].isna().to_numpy()) + 1
    with pytest.raises(ImportRefused) as refused:
        read_source(test_data / "us311" / "nyc311-100.csv", workdir=tmp_path)
    assert refused.value.problems == [f"row {r}: no Longitude/Latitude" for r in missing]
