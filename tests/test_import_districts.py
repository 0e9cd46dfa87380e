"""Import: a unit's, community's or cell's ``district_code`` must be its street's district (the
stored street's; for a street not stored, an official code's first six digits), refused by row with
nothing written — on SpatiaLite and PostGIS, through the import service and the command line."""

from __future__ import annotations

import geopandas as gpd
import pyogrio
import pytest

from geodata.store import layer_counts, read_layer, write_layer
from layers.onboarding.imports import ImportRefused, import_layer
from tests.conftest import make_app

OTHER = "420199"


def units_of_a_street(demo, n: int) -> gpd.GeoDataFrame:
    units = demo.layers["units"]
    street = sorted(units["street_code"].unique())[0]
    return units[units["street_code"] == street].iloc[:n].reset_index(drop=True)


def district_of(demo) -> str:
    return str(demo.layers["districts"]["code"].iloc[0])


def saved(gdf: gpd.GeoDataFrame, path) -> str:
    pyogrio.write_dataframe(gdf, path)
    return str(path)


def said(row: int, code: str, district: str, street: str, street_district: str) -> str:
    """The refusal of a row whose district is not its street's."""
    return f"row {row}: {code} has district_code {district}, but its street {street} lies in district " \
        f"{street_district}"


def store_streets(engine, demo, moved: dict[str, str] | None = None) -> None:
    """The demo's streets stored (``moved``: street → the district it now lies in, its code kept)."""
    streets = demo.layers["streets"].copy()
    for street, district in (moved or {}).items():
        streets.loc[streets["code"] == street, "district_code"] = district
    with engine.begin() as conn:
        write_layer(conn, "streets", streets)


def test_units_in_another_district_than_their_stored_street_are_refused_by_row(engine, small_demo, tmp_path):
    store_streets(engine, small_demo)
    units = units_of_a_street(small_demo, 8)
    street, district = units["street_code"].iloc[0], district_of(small_demo)
    wrong = units.copy()
    wrong.loc[[2, 5], "district_code"] = OTHER
    with pytest.raises(ImportRefused) as refused:
        import_layer(engine, "units", saved(wrong, tmp_path / "wrong.gpkg"))
    named = [p for p in refused.value.problems if "has district_code" in p]
    assert named == [said(r + 1, units["code"].iloc[r], OTHER, street, district) for r in (2, 5)]
    assert layer_counts(engine)["units"] == 0
    report = import_layer(engine, "units", saved(units, tmp_path / "right.gpkg"))
    assert report.written == 8
    assert set(read_layer(engine, "units")["district_code"]) == {district}


def test_a_street_not_stored_places_by_its_official_code_only(engine, small_demo, tmp_path):
    """No streets stored: an official street code's first six digits are its district; a
    provisional one (sequence 700–999) was given under whatever district its import named."""
    units = units_of_a_street(small_demo, 6)
    street, district = units["street_code"].iloc[0], district_of(small_demo)
    wrong = units.assign(district_code=OTHER)
    with pytest.raises(ImportRefused) as refused:
        import_layer(engine, "units", saved(wrong, tmp_path / "wrong.gpkg"))
    assert [p for p in refused.value.problems if "has district_code" in p][0] == \
        said(1, units["code"].iloc[0], OTHER, street, district)
    assert layer_counts(engine)["units"] == 0
    provisional = wrong.assign(street_code=district + "901", community_code=None)
    assert import_layer(engine, "units", saved(provisional, tmp_path / "provisional.gpkg")).written == 6
    assert set(read_layer(engine, "units")["district_code"]) == {OTHER}


def test_a_street_moved_to_another_district_decides_over_its_code(engine, small_demo, tmp_path):
    """A street stored in district 420199 that kept its 420103… code: its units without a
    district take 420199 (not their code's digits); a file saying 420103 is refused."""
    units = units_of_a_street(small_demo, 6)
    street, district = units["street_code"].iloc[0], district_of(small_demo)
    store_streets(engine, small_demo, moved={street: OTHER})
    with pytest.raises(ImportRefused) as refused:
        import_layer(engine, "units", saved(units, tmp_path / "as_coded.gpkg"))
    named = [p for p in refused.value.problems if "has district_code" in p]
    assert len(named) == 6 and named[0] == said(1, units["code"].iloc[0], district, street, OTHER)
    assert layer_counts(engine)["units"] == 0
    unsaid = units.drop(columns="district_code")
    assert import_layer(engine, "units", saved(unsaid, tmp_path / "unsaid.gpkg")).written == 6
    assert set(read_layer(engine, "units")["district_code"]) == {OTHER}


def test_communities_and_cells_are_checked_on_the_command_line(db_url, engine, small_demo, tmp_path):
    """A community and a grid cell filed under another district: `import` exits 1 naming the
    row, nothing written; the files put right import."""
    store_streets(engine, small_demo)
    district = district_of(small_demo)
    runner = make_app(db_url).test_cli_runner()
    # every community (a cell's community must be stored once any is), then a few cells
    for layer, n in (("communities", len(small_demo.layers["communities"])), ("grid_cells", 4)):
        rows = small_demo.layers[layer].iloc[:n].reset_index(drop=True)
        wrong = rows.copy()
        wrong.loc[1, "district_code"] = OTHER
        street = (rows["street_code"] if layer == "communities" else rows["community_code"].str[:9]).iloc[1]
        done = runner.invoke(args=["import", layer, saved(wrong, tmp_path / f"{layer}_wrong.gpkg")])
        assert done.exit_code == 1, done.output
        assert said(2, rows["code"].iloc[1], OTHER, street, district) in done.output
        assert "Traceback" not in done.output and layer_counts(engine)[layer] == 0
        done = runner.invoke(args=["import", layer, saved(rows, tmp_path / f"{layer}.gpkg")])
        assert done.exit_code == 0, done.output
        assert layer_counts(engine)[layer] == n
