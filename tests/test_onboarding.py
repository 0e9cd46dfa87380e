"""A real city's data as it arrives: names without codes, provisional codes and the official code
table, value mappings, approximate locations, and a whole city onboarded from a folder."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from shapely.geometry import box
from sqlalchemy import func, select, text

from geodata import incident_rows
from geodata.catalog import is_code
from geodata.code_table import CodeTableRefused, apply_code_table
from geodata.db import get_engine
from geodata.models import CommunityHistory, GridCell, Plan, PlanAssignment, User
from geodata.naming import match_names, next_codes, stem
from geodata.revisions import current_revision
from geodata.store import read_layer, write_layer
from layers.incidents import rates
from layers.onboarding.folder import OnboardRefused, onboard
from layers.onboarding.imports import ImportRefused, import_layer, parse_values
from layers.sample_data.sample_city import sample_city, write_folder
from tests.conftest import make_app

DISTRICT = "420503"


# --- names ---------------------------------------------------------------------------------


def test_names_match_with_suffix_variants_and_ambiguity_is_reported():
    streets = pd.DataFrame({"code": ["420503001", "420503002", "420503003", "420503101", "420503102"],
                            "name": ["宝塔河街道", "伍家岗街道", "大公桥街道", "伍家乡", "伍家镇"]})
    names = ["宝塔河街办", "宝塔河街道办事处", " 大公桥 街道", "伍家岗办事处", "伍家", "伍家乡",
             "万寿桥街道", None]
    found = match_names(names, streets)
    assert found.codes == ["420503001", "420503001", "420503003", "420503002", None, "420503101", None, None]
    assert found.ambiguous == {"伍家": ["420503101", "420503102"]}  # 伍家乡 and 伍家镇
    assert found.unmatched == ["万寿桥街道"]
    assert found.by_stem == {"宝塔河街办": "420503001", "宝塔河街道办事处": "420503001",
                             "伍家岗办事处": "420503002"}
    assert stem("宝塔河街办") == stem("宝塔河街道") == "宝塔河" and stem("镇") == "镇"


def test_provisional_codes_are_valid_shaped_unique_and_skip_taken_ones():
    codes = next_codes("420503", {"420503901", "420503903"}, 3)
    assert codes == ["420503902", "420503904", "420503905"]
    assert all(is_code(c, 9) for c in codes)
    many = next_codes("420503001", set(), 250)
    assert len(set(many)) == 250 and all(is_code(c, 12) and c.startswith("420503001") for c in many)
    with pytest.raises(ValueError, match="no provisional codes left"):
        next_codes("420503001", set(many), 51)


def _write(gdf: gpd.GeoDataFrame, path) -> str:
    pyogrio.write_dataframe(gdf, path)
    return str(path)


@pytest.fixture(scope="module")
def city():
    return sample_city(8, seed=3)


def _import_city(engine, city, tmp_path):
    import_layer(engine, "streets", _write(city.streets, tmp_path / "jd.geojson"), district=DISTRICT,
                 mapping={"JDMC": "name"})
    return import_layer(engine, "communities", _write(city.communities, tmp_path / "sq.geojson"),
                        district=DISTRICT, mapping={"SQMC": "name", "SSJD": "street"})


def test_streets_and_communities_by_name_get_provisional_codes(engine, city, tmp_path):
    report = _import_city(engine, city, tmp_path)
    streets = read_layer(engine, "streets")
    communities = read_layer(engine, "communities")
    assert streets["provisional"].all() and communities["provisional"].all()
    assert sorted(streets["code"]) == ["420503901", "420503902"]
    assert all(is_code(c, 12) and c[:9] == s for c, s in zip(communities["code"], communities["street_code"],
                                                              strict=True))
    assert communities["code"].is_unique and len(report.provisional) == len(communities)
    assert report.matched_by_stem  # …街办 matched to …街道
    # each community lies in the street named for it (streets are numbered in file order)
    by_name = dict(zip(city.streets["JDMC"], sorted(streets["code"]), strict=True))
    named = city.communities.set_index("SQMC")["SSJD"]
    for name, street in zip(communities["name"], communities["street_code"], strict=True):
        written = named[name]
        assert by_name.get(written, by_name.get(written.replace("街办", "街道"))) == street
    # importing the same names again (update by name) keeps the codes
    again = import_layer(engine, "communities", str(tmp_path / "sq.geojson"), district=DISTRICT,
                         mode="replace",
                         mapping={"SQMC": "name", "SSJD": "street"})
    assert sorted(read_layer(engine, "communities")["code"]) == sorted(communities["code"])
    assert again.provisional == []
    # exports carry the flag
    from geodata.exporter import export_layer

    export_layer(engine, "communities", "geojson", tmp_path / "out.geojson")
    exported = json.loads((tmp_path / "out.geojson").read_text(encoding="utf-8"))
    assert all(f["properties"]["provisional"] is True for f in exported["features"])
    export_layer(engine, "streets", "shp", tmp_path / "out.zip")
    assert pyogrio.read_dataframe(f"/vsizip/{tmp_path / 'out.zip'}/streets.shp")["provis"].astype(bool).all()


def test_community_without_street_is_placed_by_area_and_ambiguous_names_refuse(engine, city, tmp_path):
    import_layer(engine, "streets", _write(city.streets, tmp_path / "jd.geojson"), district=DISTRICT,
                 mapping={"JDMC": "name"})
    nameless = city.communities.drop(columns=["SSJD"])
    report = import_layer(engine, "communities", _write(nameless, tmp_path / "sq.geojson"), district=DISTRICT,
                          mapping={"SQMC": "name"})
    assert report.placed_by_area == len(nameless)
    stored = read_layer(engine, "communities")
    streets = read_layer(engine, "streets").set_index("code")
    for street, geom in zip(stored["street_code"], stored.geometry, strict=True):
        assert shapely.area(shapely.intersection(geom, streets.geometry[street])) > 0.5 * geom.area
    # two streets whose names differ only by their suffix: a name without it is ambiguous
    extra = city.streets.iloc[[0]].assign(JDMC=city.streets["JDMC"].iloc[0].replace("街道", "镇"))
    import_layer(engine, "streets", _write(extra, tmp_path / "jd2.geojson"), district=DISTRICT,
                 mapping={"JDMC": "name"})
    bad = city.communities.iloc[[0]].assign(SSJD=city.streets["JDMC"].iloc[0].replace("街道", "街办"))
    with pytest.raises(ImportRefused, match="is ambiguous: it matches 420503901 .*, 420503903"):
        import_layer(engine, "communities", _write(bad, tmp_path / "bad.geojson"), district=DISTRICT,
                     mapping={"SQMC": "name", "SSJD": "street"}, mode="append")
    unknown = city.communities.iloc[[0]].assign(SSJD="万寿桥街道")
    with pytest.raises(ImportRefused, match="'万寿桥街道' matches no stored street"):
        import_layer(engine, "communities", _write(unknown, tmp_path / "u.geojson"), district=DISTRICT,
                     mapping={"SQMC": "name", "SSJD": "street"}, mode="append")


def test_bad_district_and_missing_streets_refuse_with_nothing_written(engine, city, tmp_path):
    path = _write(city.streets, tmp_path / "jd.geojson")
    with pytest.raises(ImportRefused, match="not a 6-digit district code"):
        import_layer(engine, "streets", path, district="4205", mapping={"JDMC": "name"})
    with pytest.raises(ImportRefused, match="name the district with --district"):
        import_layer(engine, "streets", path, mapping={"JDMC": "name"})
    with pytest.raises(ImportRefused, match="import the streets first"):
        import_layer(engine, "communities", _write(city.communities, tmp_path / "sq.geojson"),
                     district=DISTRICT,
                     mapping={"SQMC": "name", "SSJD": "street"})
    with engine.begin() as conn:
        write_layer(conn, "districts", gpd.GeoDataFrame({"code": ["420502"], "name": ["西陵区"]},
                                                        geometry=[box(111, 30, 112, 31)], crs=4326))
    with pytest.raises(ImportRefused, match="unknown district 420503: the stored districts are 420502"):
        import_layer(engine, "streets", path, district=DISTRICT, mapping={"JDMC": "name"})
    assert read_layer(engine, "streets").empty and read_layer(engine, "communities").empty


# --- the official code table ------------------------------------------------------------------


def test_code_table_replaces_provisional_codes_everywhere_in_one_transaction(engine, city, tmp_path):
    _import_city(engine, city, tmp_path)
    streets = read_layer(engine, "streets").sort_values("code")
    communities = read_layer(engine, "communities").sort_values("code")
    s1, s2 = streets["code"].tolist()
    c = communities.set_index("code")
    first = communities["code"].iloc[0]  # in s1
    cell = first + "001"
    unit = s1 + "00001"
    with engine.begin() as conn:  # a unit, a cell, an incident, a plan, history, a supervisor's scope
        geom = c.geometry[first]
        write_layer(conn, "units", gpd.GeoDataFrame({"code": [unit], "households": [10], "street_code": [s1],
                                                     "community_code": [first], "district_code": [DISTRICT]},
                                                    geometry=[geom], crs=4326))
        write_layer(conn, "grid_cells", gpd.GeoDataFrame({"code": [cell], "community_code": [first],
                                                          "district_code": [DISTRICT]},
                                                         geometry=[geom], crs=4326))
        conn.execute(text("INSERT INTO plans (name, author, status, version, created_at, updated_at, "
                          "base_revision, "
                          "streets) VALUES ('p', 'a', 'draft', 1, '2026-01-01', '2026-01-01', 0, :s)"),
                     {"s": json.dumps([s1, s2])})
        plan_id = conn.execute(select(func.max(Plan.id))).scalar_one()
        conn.execute(PlanAssignment.__table__.insert().values(plan_id=plan_id, unit_code=unit,
                                                              community_code=first))
        conn.execute(User.__table__.insert().values(name="li", role="supervisor", scope_code=cell,
                                                    created_at=pd.Timestamp("2026-01-01").to_pydatetime()))
        from geodata.store import keep_community_history
        keep_community_history(conn, codes=[first])
    incident = gpd.GeoDataFrame({"code": ["I1"], "category": ["E01-01"], "status": ["reported"],
                                 "reported_at": ["2026-05-01 09:00"], "grid_code": [cell]},
                                geometry=[shapely.point_on_surface(c.geometry[first])], crs=4326)
    import_layer(engine, "incidents", _write(incident, tmp_path / "inc.geojson"))
    # the bureau's table: official codes for s1 and all but one of its communities, by name variants
    s1_name = streets.set_index("code")["name"][s1]
    in_s1 = communities[communities["street_code"] == s1]
    rows = [{"统计用区划代码": "420503005", "名称": s1_name.replace("街道", "街道办事处"), "上级": DISTRICT}]
    official = {}
    for k, (code, name) in enumerate(zip(in_s1["code"].iloc[:-1], in_s1["name"].iloc[:-1], strict=True)):
        official[code] = f"420503005{k + 1:03d}"
        rows.append({"统计用区划代码": official[code], "名称": name.replace("社区", "社区居委会"),
                     "上级": "420503005"})
    rows.append({"统计用区划代码": "420503005199", "名称": "不存在社区", "上级": "420503005"})
    table = tmp_path / "codes.csv"
    pd.DataFrame(rows).to_csv(table, index=False, encoding="gbk")
    before = current_revision(engine)
    result = apply_code_table(engine, table)
    assert result.streets == {s1: "420503005"}
    left = in_s1["code"].iloc[-1]
    assert result.communities == official | {left: "420503005" + left[9:]}
    assert [r["code"] for r in result.unmatched_rows] == ["420503005199"]
    assert {r["code"] for r in result.unmatched_provisional} == {left, s2} | set(
        communities.loc[communities["street_code"] == s2, "code"])
    assert current_revision(engine) == before + 1
    stored = read_layer(engine, "communities").set_index("code")
    assert stored.loc[official[first], "street_code"] == "420503005"
    assert not stored.loc[list(official.values()), "provisional"].any()
    assert stored.loc["420503005" + left[9:], "provisional"]  # no row: still provisional, under the new code
    assert not read_layer(engine, "streets").set_index("code").loc["420503005", "provisional"]
    new_cell = official[first] + "001"
    with engine.connect() as conn:
        cell_row = conn.execute(select(GridCell.code, GridCell.community_code)).one()
        assert cell_row == (new_cell, official[first])
        assert conn.execute(select(PlanAssignment.unit_code, PlanAssignment.community_code)).one() == (
            "420503005" + unit[9:], official[first])
        assert conn.execute(select(Plan.streets)).scalar_one() == ["420503005", s2]
        assert conn.execute(select(CommunityHistory.code)).scalar_one() == official[first]
        assert conn.execute(select(User.scope_code).where(User.name == "li")).scalar_one() == new_cell
    units = read_layer(engine, "units")
    assert units[["code", "street_code", "community_code"]].values.tolist() == [
        ["420503005" + unit[9:], "420503005", official[first]]]
    inc = read_layer(engine, "incidents")
    assert inc["grid_code"].tolist() == [new_cell] and inc["community_code"].tolist() == [official[first]]
    # the rates follow the new codes: the daily sums the database keeps equal a scan of the cases
    since, until = rates.period("2026-01-01", "2026-12-31")
    for by, codes in (("cell", [new_cell]), ("community", [official[first]]), ("street", ["420503005"])):
        days = incident_rows.rate_sums(engine, by, since, until, until)
        assert days == incident_rows.rate_sums_scan(engine, by, since, until, until)
        assert [r["code"] for r in days] == codes and days[0]["reported"] == 1
    # applied again: everything already official, nothing changes
    again = apply_code_table(engine, table)
    assert again.streets == {} and again.communities == {} and current_revision(engine) == before + 1


def test_malformed_or_clashing_code_table_refuses_with_nothing_written(engine, city, tmp_path):
    _import_city(engine, city, tmp_path)
    before = sorted(read_layer(engine, "communities")["code"])
    bad = tmp_path / "bad.csv"
    bad.write_text("code,name,parent\n42050300,甲,420503\n420503005001,乙,420503006\n420503005001,乙,\n",
                   encoding="utf-8")
    with pytest.raises(CodeTableRefused) as refused:
        apply_code_table(engine, bad)
    text_ = str(refused.value)
    assert "'42050300' is not a 9-digit street or 12-digit" in text_
    assert "does not lie under its parent 420503006" in text_ and "codes repeated" in text_
    nameless = tmp_path / "nameless.csv"
    nameless.write_text("代码\n420503005\n", encoding="utf-8")
    with pytest.raises(CodeTableRefused, match="needs a code column .* and a name column"):
        apply_code_table(engine, nameless)
    # two provisional communities of one street with the same name: ambiguous, not guessed
    streets = read_layer(engine, "streets")
    s1 = sorted(streets["code"])[0]
    name = streets.set_index("code")["name"][s1]
    clash = tmp_path / "clash.csv"
    clash.write_text(f"code,name\n420503005,{name}\n420503006,{name}\n", encoding="utf-8")
    result = apply_code_table(engine, clash, dry_run=True)
    assert result.ambiguous and result.ambiguous[0]["code"] == s1
    assert sorted(read_layer(engine, "communities")["code"]) == before


def test_cli_codes_apply_prints_the_result(db_url, engine, city, tmp_path):
    _import_city(engine, city, tmp_path)
    runner = make_app(db_url).test_cli_runner()
    table = tmp_path / "codes.csv"
    name = read_layer(engine, "streets").sort_values("code")["name"].iloc[0]
    table.write_text(f"code,name,parent\n420503005,{name},{DISTRICT}\n", encoding="utf-8")
    result = runner.invoke(args=["codes", "apply", str(table)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["matched"][0]["new"] == "420503005"
    missing = runner.invoke(args=["codes", "apply", str(tmp_path / "none.csv")])
    assert missing.exit_code == 1 and "does not exist" in missing.output


# --- categories as departments write them ------------------------------------------------------


def _facilities(city) -> gpd.GeoDataFrame:
    pois = city.pois.rename(columns={"type": "keyword"})
    pois["precision"] = np.where(np.arange(len(pois)) % 3 == 0, "社区", "门址")
    return pois


def test_value_mapping_lists_unmapped_values_with_counts_and_skips_on_request(engine, city, tmp_path):
    _import_city(engine, city, tmp_path)
    path = _write(_facilities(city), tmp_path / "poi.geojson")
    counts = city.pois["type"].value_counts()
    mapping = {"keyword": "kind"}
    with pytest.raises(ImportRefused) as refused:
        import_layer(engine, "facilities", path, mapping=mapping, number=True,
                     values=parse_values(["keyword:幼儿园=kindergarten,诊所=health_station"]))
    message = str(refused.value)
    assert "2 values of keyword have no mapping" in message
    assert f"住宅小区 ({counts['住宅小区']})" in message and f"居民区 ({counts['居民区']})" in message
    table = tmp_path / "kinds.csv"
    table.write_text("类别,kind\n幼儿园,kindergarten\n诊所,health_station\n", encoding="utf-8")
    report = import_layer(engine, "facilities", path, mapping=mapping, number=True, unmapped="skip",
                          values=parse_values(["kind=" + str(table)]))
    assert report.skipped == {"kind": {"住宅小区": int(counts["住宅小区"]), "居民区": int(counts["居民区"])}}
    stored = read_layer(engine, "facilities")
    assert len(stored) == counts["幼儿园"] + counts["诊所"]
    assert set(stored["kind"]) == {"kindergarten", "health_station"}
    # a mapping to a kind gridplan does not know refuses
    with pytest.raises(ImportRefused, match="kindergarden is not a kind gridplan knows"):
        import_layer(engine, "facilities", path, mapping=mapping, number=True, mode="replace",
                     unmapped="skip",
                     values={"kind": {"幼儿园": "kindergarden"}})
    with pytest.raises(ImportRefused, match="is not SOURCE=KIND"):
        parse_values(["kind:幼儿园"])


def test_approximate_points_are_counted_in_their_community_and_placed_in_no_cell(engine, city, tmp_path):
    _import_city(engine, city, tmp_path)
    path = _write(_facilities(city), tmp_path / "poi.geojson")
    mapping = {"keyword": "kind", "precision": "location_precision"}
    report = import_layer(engine, "facilities", path, mapping=mapping,
                          number=True, unmapped="skip",
                          values={"kind": {"幼儿园": "kindergarten", "诊所": "health_station", "住宅小区": "",
                                           "居民区": ""},
                                  "location_precision": {"社区": "approximate", "门址": "exact"}})
    stored = read_layer(engine, "facilities")
    assert report.approximate == (stored["location_precision"] == "approximate").sum() > 0
    assert stored["community_code"].notna().all()  # by location, where the file named none
    communities = read_layer(engine, "communities").set_index("code")
    for code, point in zip(stored["community_code"], stored.geometry, strict=True):
        assert communities.geometry[code].covers(point)
    # an approximate incident keeps its community and no cell
    incident = gpd.GeoDataFrame({"code": ["I1", "I2"], "category": ["E01-01", "E01-01"],
                                 "status": ["reported", "reported"], "reported_at": ["2026-05-01 09:00"] * 2,
                                 "grid_code": [communities.index[0] + "001"] * 2,
                                 "location_precision": ["approximate", "exact"]},
                                geometry=[shapely.point_on_surface(communities.geometry.iloc[1])] * 2,
                                crs=4326)
    import_layer(engine, "incidents", _write(incident, tmp_path / "inc.geojson"))
    inc = read_layer(engine, "incidents").set_index("code")
    assert pd.isna(inc.loc["I1", "grid_code"]) and inc.loc["I1", "community_code"] == communities.index[1]
    assert inc.loc["I2", "grid_code"] == communities.index[0] + "001"
    bad = incident.assign(location_precision=["roughly", "exact"], code=["I3", "I4"])
    with pytest.raises(ImportRefused, match="location_precision 'roughly' is not exact or approximate"):
        import_layer(engine, "incidents", _write(bad, tmp_path / "bad.geojson"))


def test_cli_import_by_name_with_values(db_url, engine, city, tmp_path):
    runner = make_app(db_url).test_cli_runner()
    jd = _write(city.streets, tmp_path / "jd.geojson")
    sq = _write(city.communities, tmp_path / "sq.geojson")
    result = runner.invoke(args=["import", "streets", jd, "--district", DISTRICT, "--map", "JDMC=name"],
                           catch_exceptions=False)
    assert result.exit_code == 0 and "2 provisional codes given" in result.output, result.output
    result = runner.invoke(args=["import", "communities", sq, "--district", DISTRICT, "--map", "SQMC=name",
                                 "--map", "SSJD=street"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "names matched without their suffix" in result.output and "topology:" in result.output
    numbered = _facilities(city).assign(code=[f"P{i}" for i in range(len(city.pois))])
    poi = _write(numbered, tmp_path / "poi.geojson")
    result = runner.invoke(args=["import", "facilities", poi, "--map", "keyword=kind",
                                 "--values", "kind:幼儿园=kindergarten,诊所=health_station"])
    assert result.exit_code == 1 and "have no mapping" in result.output and "住宅小区 (" in result.output
    result = runner.invoke(args=["import", "facilities", poi, "--map", "keyword=kind", "--unmapped", "skip",
                                 "--values", "kind:幼儿园=kindergarten,诊所=health_station"])
    assert result.exit_code == 0 and "rows left out, kind has no mapping" in result.output, result.output
    result = runner.invoke(args=["import", "streets", jd, "--district", "42", "--map", "JDMC=name"])
    assert result.exit_code == 1 and "not a 6-digit district code" in result.output


# --- a whole city ----------------------------------------------------------------------------


def test_onboard_a_city_from_names_roads_and_a_households_table_then_plan_it(db_url, engine, tmp_path):
    from layers.plans.communities import bounds
    from layers.plans.engine import Rules, make_plan
    from layers.plans.files import units_from_database
    from layers.plans.partition import UnitGraph

    city = sample_city(16, seed=5, blocks_per_side=4, communities_per_street=(2, 2))
    folder = write_folder(city, tmp_path / "city")
    # a report name that is a link out of the folder is replaced, not followed
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("not the report's\n", encoding="utf-8")
    (folder / "onboard-report.html").symlink_to(elsewhere)
    runner = make_app(db_url).test_cli_runner()
    result = runner.invoke(args=["onboard", str(folder), "--district", DISTRICT], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert elsewhere.read_text(encoding="utf-8") == "not the report's\n"
    assert not (folder / "onboard-report.html").is_symlink()
    assert "onboarded 16 communities in 4 streets" in result.output
    report = json.loads((folder / "onboard-report.json").read_text(encoding="utf-8"))
    assert set(report["seconds"]) >= {"streets", "communities", "clean", "roads", "units", "report"}
    figures = report["steps"]["report"]
    assert figures["provisional_communities"] == 16 and figures["provisional_streets"] == 4
    assert figures["households"] == int(city.households["户数"].sum())
    assert report["steps"]["clean"]["changed"] and report["steps"]["clean"]["left_for_planner"]
    html = (folder / "onboard-report.html").read_text(encoding="utf-8")
    assert "Left for the planner" in html and "<script" not in html
    # every community's blocks sum to its total from the table
    units = read_layer(engine, "units")
    communities = read_layer(engine, "communities").set_index("name")
    totals = city.households.set_index("社区")["户数"]
    sums = units.groupby("community_code")["households"].sum()
    for name, total in totals.items():
        assert sums[communities.loc[name, "code"]] == total
    assert set(units["households_source"]) <= {"area+table", "none"}
    # the planner's automatic plan puts every community within the bounds
    limits = bounds(engine)
    graph_units, adjacency = units_from_database(engine)
    graph = UnitGraph.from_units(graph_units, adjacency)
    plan = make_plan(graph, Rules.from_params({}, limits.minimum, limits.maximum))
    table = plan.community_table()
    assert len(table) and table["within_bounds"].all(), table[~table["within_bounds"]]


def test_onboard_refuses_what_is_missing(engine, tmp_path):
    city = sample_city(4, seed=2)
    folder = write_folder(city, tmp_path / "city")
    (folder / "roads.geojson").unlink()
    with pytest.raises(OnboardRefused, match=r"\[roads\] file roads.geojson is not in"):
        onboard(engine, folder, DISTRICT)
    with pytest.raises(OnboardRefused, match="name the district"):
        onboard(engine, folder)
    (folder / "onboard.toml").write_text("[streets\n", encoding="utf-8")
    with pytest.raises(OnboardRefused, match="not valid TOML"):
        onboard(engine, folder, DISTRICT)
    assert read_layer(engine, "streets").empty
    # roads that lie outside every street: the units are a tessellation, and the report says so
    folder = write_folder(city, tmp_path / "city2")
    far = city.roads.iloc[:3].copy()
    far["geometry"] = [shapely.LineString([(100, 20), (100.01, 20)])] * 3
    pyogrio.write_dataframe(far, folder / "roads.geojson")
    with pytest.raises(OnboardRefused, match="roads: all 3 features lie 1,6.. km from the stored streets"):
        onboard(engine, folder, DISTRICT)  # so far away that the import refuses them (a wrong .prj?)
    _minx, miny, maxx, maxy = city.streets.total_bounds
    east = [shapely.LineString([(maxx + 0.2, miny), (maxx + 0.21, maxy)])] * 3  # 20 km east of every street
    far["geometry"] = east
    pyogrio.write_dataframe(far, folder / "roads.geojson")
    report = onboard(engine, folder, DISTRICT)  # no road inside any street: the streets are tessellated
    assert report.steps["units"]["method"] == "tessellation" and report.steps["units"]["units"] > 0



# --- folders stay folders ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_city():
    return sample_city(4, seed=2)


def _secret(tmp_path):
    """A file of the app's own beside the department's folder (as instance/secret_key is)."""
    own = tmp_path / "app" / "instance"
    own.mkdir(parents=True)
    key = own / "secret_key"
    key.write_text("6b1f0c2e9d4a7b3c8e5f1a2d4c6b8e0f\n", encoding="utf-8")
    return key


ESCAPES = [
    # (what onboard.toml says, the entry a refusal names)
    ('[codes]\nfile = "../app/instance/secret_key"\n', '[codes] file = \'../app/instance/secret_key\''),
    ('[codes]\nfile = "{key}"\n', "[codes] file = '{key}'"),
    ('[codes]\nfile = "codes-link.csv"\n',
     "[codes] file = 'codes-link.csv': codes-link.csv is a link pointing out"),
    ('[facilities]\nvalues = {{ kind = "../app/instance/secret_key" }}\n',
     "[facilities] values.kind = '../app/instance/secret_key'"),
    ('[facilities]\nvalues = {{ kind = "{key}" }}\n', "[facilities] values.kind = '{key}'"),
    ('[facilities]\nvalues = {{ kind = "kinds.csv" }}\n',
     "[facilities] values.kind = 'kinds.csv': kinds.csv is a link pointing out"),
    ('[codes]\nfile = "sub/secret_key"\n',
     "[codes] file = 'sub/secret_key': secret_key is a link pointing out"),
    ('[buildings]\ncrs = "+init=/etc/proj/secret:1"\n', "[buildings] crs = '+init=/etc/proj/secret:1'"),
]


def test_onboarding_names_only_files_inside_its_folder(engine, small_city, tmp_path):
    key = _secret(tmp_path)
    for i, (extra, entry) in enumerate(ESCAPES):
        folder = write_folder(small_city, tmp_path / f"city{i}")
        (folder / "codes-link.csv").symlink_to(key)
        (folder / "kinds.csv").symlink_to(key)
        (folder / "sub").symlink_to(key.parent, target_is_directory=True)
        config = folder / "onboard.toml"
        text_ = config.read_text(encoding="utf-8").replace("[clean]", extra.format(key=key) + "[clean]")
        config.write_text(text_, encoding="utf-8")
        with pytest.raises(OnboardRefused) as refused:
            onboard(engine, folder, DISTRICT)
        message = str(refused.value)
        assert entry.format(key=key) in message, (extra, message)
        assert "6b1f0c2e" not in message
    # files found by their name, and the config itself, are no different
    folder = write_folder(small_city, tmp_path / "found")
    (folder / "codes.csv").symlink_to(key)
    with pytest.raises(OnboardRefused, match=r"\[codes\]: codes.csv is a link pointing out of the folder"):
        onboard(engine, folder, DISTRICT)
    (folder / "codes.csv").unlink()
    (folder / "onboard.toml").unlink()
    (folder / "onboard.toml").symlink_to(key)
    with pytest.raises(OnboardRefused, match="onboard.toml: onboard.toml is a link pointing out of the"):
        onboard(engine, folder, DISTRICT)
    # a GDAL virtual file that would read another file is refused, whatever it is called
    folder = write_folder(small_city, tmp_path / "virtual")
    (folder / "roads.geojson").write_text(
        f'<OGRVRTDataSource><OGRVRTLayer name="r"><SrcDataSource>{key}</SrcDataSource></OGRVRTLayer>'
        "</OGRVRTDataSource>", encoding="utf-8")
    with pytest.raises(OnboardRefused, match="roads.geojson is a GDAL virtual file"):
        onboard(engine, folder, DISTRICT)
    assert read_layer(engine, "streets").empty and read_layer(engine, "communities").empty


def test_a_folder_holding_the_apps_own_is_refused(db_url, small_city, tmp_path):
    app = make_app(db_url)
    runner = app.test_cli_runner()
    own = Path(app.instance_path)
    for folder in (own.parent, own):
        if not folder.is_dir():
            continue
        result = runner.invoke(args=["onboard", str(folder), "--district", DISTRICT])
        assert result.exit_code == 1, result.output
        assert "gridplan's own files" in result.output and "Traceback" not in result.output
    if db_url.startswith("sqlite"):  # a folder holding the SpatiaLite database itself
        database = Path(db_url.split(":///", 1)[1])
        write_folder(small_city, database.parent)
        result = runner.invoke(args=["onboard", str(database.parent), "--district", DISTRICT])
        assert result.exit_code == 1 and f"gridplan's own files ({database}:" in result.output, result.output
    # the same refusal from the command line names the entry of an escaping config, in one line
    key = _secret(tmp_path)
    folder = write_folder(small_city, tmp_path / "city")
    config = folder / "onboard.toml"
    config.write_text(config.read_text(encoding="utf-8") + f'[codes]\nfile = "{key}"\n', encoding="utf-8")
    result = runner.invoke(args=["onboard", str(folder), "--district", DISTRICT])
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert result.exit_code == 1 and len(errors) == 1, result.output
    assert f"[codes] file = '{key}'" in errors[0]
    assert "6b1f0c2e" not in result.output
    assert read_layer(get_engine(db_url), "streets").empty


def test_a_refusal_quotes_a_short_printable_excerpt_of_the_file(engine, small_city, tmp_path):
    folder = write_folder(small_city, tmp_path / "city")
    # the streets as a CSV whose header is a megabyte of terminal escape codes and no JDMC column
    junk = ",".join(f"\x1b[2J\x07col{i}" for i in range(60000))
    (folder / "streets.geojson").unlink()
    (folder / "streets.csv").write_text(f"lon,lat,{junk}\n111.3,30.7,{','.join('x' * 60000)}\n",
                                        encoding="utf-8")
    config = folder / "onboard.toml"
    config.write_text(config.read_text(encoding="utf-8").replace('file = "streets.geojson"',
                                                                 'file = "streets.csv"'), encoding="utf-8")
    with pytest.raises(OnboardRefused) as refused:
        onboard(engine, folder, DISTRICT)
    message = str(refused.value)
    assert "field 'JDMC' named in --map is not in the file" in message
    assert len(message) < 400 and "\x1b" not in message and "\x07" not in message
    assert message.isprintable() and "\\x1b" in message  # shown, escaped, not sent to the terminal
    assert read_layer(engine, "streets").empty
