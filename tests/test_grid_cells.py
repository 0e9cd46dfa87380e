"""Grid cells: generated from whole units on the partition core, tiling their community, within
the household range, coded west to east and north to south, stable when regenerated; and the
validation that finds gaps, overlaps and households in no cell."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from geodata.catalog import is_code
from geodata.sources import read_source
from geodata.store import read_layer
from layers.grid.cells import (
    CellRules,
    cell_polygons,
    generate_grid,
    grid_rules,
    merge_cells,
    move_to_cell,
    plan_cells,
    split_cell,
    validate_cells,
)
from layers.plans.engine import Rules, make_plan
from layers.plans.partition import Partition, UnitGraph, is_contiguous, single_parent
from layers.sample_data.demo import generate, write_demo
from tests.conftest import demo_site
from tests.webhelpers import csrf_token, sign_in


def check_cells(graph: UnitGraph, units, plan, rules: CellRules) -> None:
    """Cells nest in their community, are contiguous, tile it exactly, and carry valid codes."""
    labels = plan.cell_of_unit.reindex(graph.codes).to_numpy(dtype=object)
    placed = pd.notna(labels)
    assert (placed == pd.notna(graph.current)).all()  # every unit of a community, and no other
    partition = Partition(graph, labels)
    for cell in plan.cells["code"]:
        assert is_code(cell, 15) and single_parent(partition, cell, graph.current)
        assert cell.startswith(graph.current[partition.members(cell)[0]])
        assert is_contiguous(partition, cell), f"{cell} is not contiguous"
    polygons = cell_polygons(plan, units)
    assert shapely.coverage_is_valid(polygons.geometry.values)  # no overlaps
    communities = units[pd.notna(units["community_code"])].dissolve("community_code").geometry
    cells = polygons.dissolve("community_code").geometry
    for code, outline in communities.items():
        assert abs(cells[code].area - outline.area) < 1e-9 * max(outline.area, 1)  # no gaps


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000))
def test_generated_grids_tile_their_communities_within_the_range(seed):
    demo = generate(units=600, seed=seed)
    units = demo.layers["units"]
    graph = UnitGraph.from_units(units, demo.adjacency)
    rules = CellRules()
    plan = plan_cells(graph, rules)
    check_cells(graph, units, plan, rules)
    # a community whose households can make cells of 300–500 gets only such cells
    totals = units.groupby("community_code")["households"].sum()
    divisible = [c for c, h in totals.items() if Rules(300, 500).parts(int(h)) is not None and h >= 600]
    fine = plan.cells[plan.cells["community_code"].isin(divisible)]
    assert fine["in_range"].mean() >= 0.8  # the rest: pieces the river cuts off, units too big


def test_the_demo_district_grid_meets_the_range(district_demo):
    units = district_demo.layers["units"]
    plan = plan_cells(UnitGraph.from_units(units, district_demo.adjacency), CellRules())
    assert plan.in_range_share >= 0.95 and len(plan.cells) > 500


def test_grid_on_the_providence_blocks(providence_zip):
    with tempfile.TemporaryDirectory() as tmp:
        blocks = read_source(providence_zip, workdir=Path(tmp)).to_crs(4326)
    units = blocks[["GEOID10", "geometry"]].rename(columns={"GEOID10": "code"})
    units["households"] = np.round(blocks["TOTPOP"] / 2.62).astype(int)
    units["street_code"] = [f"999000{int(w):03d}" for w in blocks["WARD"]]
    plan = make_plan(UnitGraph.from_units(units), Rules())
    units["community_code"] = plan.assignment.reindex(units["code"]).to_numpy()
    graph = UnitGraph.from_units(units)
    cells = plan_cells(graph, CellRules())
    check_cells(graph, units, cells, CellRules())
    assert cells.in_range_share >= 0.9
    assert cells.cells.groupby("community_code")["households"].sum().sum() == units["households"].sum()


def test_cells_are_numbered_west_to_east_then_north_to_south(small_demo):
    units = small_demo.layers["units"]
    graph = UnitGraph.from_units(units, small_demo.adjacency)
    plan = plan_cells(graph, CellRules(100, 200))
    polygons = cell_polygons(plan, units).to_crs(3857)
    community = polygons["community_code"].value_counts().index[0]  # the one with most cells
    mine = polygons[polygons["community_code"] == community].sort_values("code")
    assert [c[-3:] for c in mine["code"]] == [f"{i:03d}" for i in range(1, len(mine) + 1)]
    points = mine.geometry.centroid
    first, last = points.iloc[0], points.iloc[-1]
    assert first.y > last.y  # the first row is the northernmost
    assert mine["code"].iloc[0] == mine.loc[points.y.sort_values(ascending=False).index[:3], "code"].min()


def test_validation_finds_gaps_overlaps_and_households_in_no_cell(small_demo):
    units = small_demo.layers["units"]
    communities = small_demo.layers["communities"]
    graph = UnitGraph.from_units(units, small_demo.adjacency)
    cells = cell_polygons(plan_cells(graph, CellRules()), units)
    clean = validate_cells(communities, cells, units)
    blind = units[units["community_code"].isna()]["households"].sum()
    assert clean["overlaps"] == 0 and clean["outside_community"] == 0
    assert clean["households_in_no_cell"] == blind  # only the blind spots
    # take one cell out (a gap, its households in no cell) and repeat another, shifted (an overlap)
    gone = cells.iloc[0]
    shifted = cells.iloc[[5]].copy()
    shifted["code"] = shifted["code"].str[:-3] + "999"
    shifted["geometry"] = shifted.geometry.translate(0.0003, 0)
    broken = pd.concat([cells.iloc[1:], shifted], ignore_index=True)
    found = validate_cells(communities, broken, units)
    assert found["gaps"] >= 1 and found["overlaps"] >= 1
    assert found["households_in_no_cell"] >= blind + 0.9 * gone["households"]
    kinds = {f["kind"] for f in found["findings"]}
    assert {"gap", "overlap", "household_in_no_cell"} <= kinds
    assert all(-180 <= f["lon"] <= 180 and -90 <= f["lat"] <= 90 for f in found["findings"])


def test_stored_grid_regenerates_keeping_codes(engine, small_demo):
    write_demo(engine, small_demo)
    first = generate_grid(engine, grid_rules(engine))
    assert first["gaps"] == 0 and first["overlaps"] == 0 and first["outside_community"] == 0
    stored = read_layer(engine, "grid_cells")
    assert len(stored) == first["cells"] and stored["code"].map(lambda c: is_code(c, 15)).all()
    assert (stored["code"].str[:12] == stored["community_code"]).all()
    again = generate_grid(engine, grid_rules(engine))
    assert again["kept"] == again["cells"] == first["cells"]
    assert set(read_layer(engine, "grid_cells")["code"]) == set(stored["code"])
    # one community with another range: only its cells change
    community = stored["community_code"].value_counts().index[0]
    others = stored[stored["community_code"] != community].set_index("code").geometry
    generate_grid(engine, grid_rules(engine, 150, 250), community=community)
    after = read_layer(engine, "grid_cells")
    kept = after[after["community_code"] != community].set_index("code").geometry
    assert set(kept.index) == set(others.index)
    smaller = after[after["community_code"] == community]["code"].nunique()
    assert smaller > (stored["community_code"] == community).sum()


def test_grid_command_and_api(db_url, engine, small_demo, tmp_path):
    app = demo_site(db_url, small_demo, BASEMAP="none")[0]
    runner = app.test_cli_runner()
    street = small_demo.layers["streets"]["code"].iloc[0]
    result = runner.invoke(args=["grid", "--street", street, "--min", "300", "--max", "500"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert {"cells", "in_range_share", "gaps", "overlaps", "households_in_no_cell"} <= set(answer)
    assert answer["gaps"] == 0 and answer["overlaps"] == 0
    bad = runner.invoke(args=["grid", "--street", "12"])
    assert bad.exit_code != 0 and "9-digit" in bad.output
    bad = runner.invoke(args=["grid", "--min", "600", "--max", "500"])
    assert bad.exit_code != 0 and "minimum" in bad.output

    planner = app.test_client()
    sign_in(planner, "planner")
    headers = {"X-CSRFToken": csrf_token(planner.get("/plans").get_data(as_text=True))}
    community = small_demo.layers["communities"]["code"].iloc[0]
    made = planner.post("/api/grid", json={"community": community}, headers=headers)
    assert made.status_code == 200 and made.json["communities"] == 1
    assert planner.post("/api/grid", json={"community": "420103999999"}, headers=headers).status_code == 404
    assert planner.post("/api/grid", json={"minimum": "many"}, headers=headers).status_code == 400
    assert planner.post("/api/grid", json={"community": community}).status_code == 400  # no CSRF token
    problems = planner.get(f"/api/grid/problems?street={street}")
    assert problems.status_code == 200 and problems.json["gaps"] == 0
    viewer = app.test_client()
    sign_in(viewer, "viewer")
    headers = {"X-CSRFToken": csrf_token(viewer.get("/plans").get_data(as_text=True))}
    assert viewer.post("/api/grid", json={"community": community}, headers=headers).status_code == 403


def test_area_grids_aim_at_the_target_area(small_demo):
    units = small_demo.layers["units"]
    graph = UnitGraph.from_units(units, small_demo.adjacency)
    plan = plan_cells(graph, CellRules(area_m2=60_000))
    check_cells(graph, units, plan, CellRules(area_m2=60_000))
    assert plan.in_range_share >= 0.8
    assert 30_000 <= plan.cells["area_m2"].median() <= 90_000


@pytest.mark.parametrize("minimum,maximum", [(0, 500), (600, 500)])
def test_impossible_ranges_are_refused(engine, small_demo, minimum, maximum):
    with pytest.raises(ValueError):
        generate_grid(engine, CellRules(minimum, maximum))


def test_cells_edited_by_hand(engine, small_demo):
    write_demo(engine, small_demo)
    generate_grid(engine, grid_rules(engine))
    cells = read_layer(engine, "grid_cells")
    community = cells["community_code"].value_counts().index[0]
    mine = cells[cells["community_code"] == community].sort_values("code")
    keep, merge = mine["code"].iloc[0], mine["code"].iloc[1]
    merged = merge_cells(engine, keep, merge, grid_rules(engine))
    codes = {c["code"]: c for c in merged["cells"]}
    assert merge not in codes and keep in codes
    after = read_layer(engine, "grid_cells", community=community)
    assert set(after["code"]) == set(codes) and shapely.coverage_is_valid(after.geometry.values)
    split = split_cell(engine, keep, grid_rules(engine))
    new = set(c["code"] for c in split["cells"]) - set(codes)
    assert len(new) == 1 and all(is_code(c, 15) and c.startswith(community) for c in new)
    assert all(c["contiguous"] for c in split["cells"])
    units = read_layer(engine, "units", community=community)
    unit = units["code"].iloc[0]
    moved = move_to_cell(engine, [unit], "new", grid_rules(engine))
    rules = grid_rules(engine)
    before = {c["code"] for c in split["cells"]}
    lone = next(c for c in moved["cells"] if c["code"] not in before)  # the new cell of one unit
    assert lone["units"] == 1
    assert {"rule": "below_minimum", "cell_code": lone["code"], "limit": rules.minimum,
            "value": lone["households"]} in lone["violations"]
    assert all(v["rule"] in ("below_minimum", "above_maximum", "not_contiguous")
               for c in moved["cells"] for v in c["violations"])
    other = small_demo.layers["units"].query("community_code != @community and community_code.notna()")
    with pytest.raises(ValueError, match="one community"):
        move_to_cell(engine, [unit, other["code"].iloc[0]], keep, grid_rules(engine))
    with pytest.raises(ValueError, match="no cell"):
        move_to_cell(engine, [unit], f"{community}998", grid_rules(engine))
    total = read_layer(engine, "grid_cells", community=community)
    report = validate_cells(read_layer(engine, "communities", community=community), total, units)
    assert report["gaps"] == 0 and report["overlaps"] == 0 and report["households_in_no_cell"] == 0


def test_a_cells_grid_supervisors_keep_its_ground_through_hand_edits(engine, small_demo):
    """A 网格员 holding a cell (assigned, and named on it) still holds all of its ground after a
    planner edits the cells: both halves of a split cell, and the cell a held one was merged into
    — so no household drops out of "my cells" without anyone deciding it."""
    from geodata import incident_rows

    write_demo(engine, small_demo)
    generate_grid(engine, grid_rules(engine))
    cells = read_layer(engine, "grid_cells")
    community = cells["community_code"].value_counts().index[0]
    first, second = cells[cells["community_code"] == community].sort_values("code")["code"].iloc[:2]
    with engine.begin() as conn:
        incident_rows.assign(conn, "wang", first, "admin")
        incident_rows.assign(conn, "li", second, "admin")
        conn.execute(text("UPDATE grid_cells SET supervisor = '王网格员' WHERE code = :c"), {"c": first})

    def held(user: str) -> set[str]:
        with engine.connect() as conn:
            return {r["cell_code"] for r in incident_rows.assignments(conn, user=user)}

    split = split_cell(engine, first, grid_rules(engine), "planner")
    new = ({c["code"] for c in split["cells"]} - set(cells["code"])).pop()
    assert held("wang") == {first, new} and held("li") == {second}
    stored = read_layer(engine, "grid_cells", community=community).set_index("code")["supervisor"]
    assert stored[new] == stored[first] == "王网格员"  # the name on the map, as on the cell it was cut from
    merge_cells(engine, first, second, grid_rules(engine), "planner")
    assert held("li") == {first} and held("wang") == {first, new}


def test_a_part_of_the_cells_measures_as_the_whole_in_the_whole_ones_crs(small_demo):
    """A report made district by district measures each district's cells in the report's CRS:
    measured in the zone of its own extent, a district east of 115.5°E (the 117°E Gauss–Krüger
    zone) gave other areas and points than the whole country centred in the 114°E zone (found at
    1.6 M units, docs/scale.md)."""
    from geodata.crs import metric_crs

    units, communities = small_demo.layers["units"], small_demo.layers["communities"]
    graph = UnitGraph.from_units(units, small_demo.adjacency)
    cells = cell_polygons(plan_cells(graph, CellRules()), units)
    shifted = cells.iloc[[5]].copy()  # an overlap, to be measured
    shifted["code"] = shifted["code"].str[:-3] + "999"
    shifted["geometry"] = shifted.geometry.translate(0.0003, 0)
    east = 1.35  # degrees: the demo (≈ 114.27°E) moved to ≈ 115.6°E

    def elsewhere(frame):  # moved east, under other codes (another district's)
        out = frame.assign(geometry=frame.geometry.translate(east, 0))
        for column in ("code", "community_code", "street_code"):
            if column in out:
                out[column] = out[column].astype(object).where(
                    out[column].isna(), "9" + out[column].astype(str).str[1:])
        return out

    far = [elsewhere(f) for f in (communities, pd.concat([cells, shifted], ignore_index=True), units)]
    whole = metric_crs(114.9, 30.6)  # the centre of both: the 114°E zone
    assert whole.to_epsg() == 4547 and metric_crs(115.6, 30.6).to_epsg() != 4547

    def overlaps(report):
        return [f for f in report["findings"] if f["kind"] == "overlap"]

    alone, as_whole = validate_cells(*far), validate_cells(*far, crs=whole)
    assert overlaps(as_whole) and len(overlaps(alone)) == len(overlaps(as_whole))
    assert overlaps(alone) != overlaps(as_whole)  # measured in another zone: other areas and points
    both = [pd.concat([a, b], ignore_index=True)
            for a, b in zip((communities, cells, units), far, strict=True)]
    assert overlaps(validate_cells(*both)) == overlaps(as_whole)  # the whole measures it so
