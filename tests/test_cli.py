"""The command line, as a user types it: exit codes and what it prints."""

from __future__ import annotations

import re
import zipfile

import pyogrio
import pytest

from geodata.store import layer_counts, read_layer
from tests.conftest import make_app


@pytest.fixture
def run(db_url):
    app = make_app(db_url)
    runner = app.test_cli_runner()

    def invoke(*args: str):
        return runner.invoke(args=list(args), catch_exceptions=False)

    return invoke


def test_init_demo_export_import(run, engine, tmp_path):
    assert run("init-db").exit_code == 0
    result = run("demo", "--units", "300", "--seed", "5")
    assert result.exit_code == 0, result.output
    assert "demo written" in result.output
    counts = layer_counts(engine)
    assert counts["units"] > 250 and counts["communities"] > 0 and counts["incidents"] > 0
    again = run("demo", "--if-empty")
    assert "already present" in again.output and layer_counts(engine) == counts

    street = read_layer(engine, "streets")["code"].iloc[0]
    out = tmp_path / "units.zip"
    result = run("export", "units", "--format", "shp", "--street", street, "-o", str(out))
    assert result.exit_code == 0, result.output
    exported = pyogrio.read_dataframe(f"/vsizip/{out}/units.shp")
    assert (exported["strt_code"] == street).all()
    with zipfile.ZipFile(out) as zf:
        assert "units.cpg" in zf.namelist()
    # recorded as the page's exports are: who took which part of which layer, in what format
    from geodata.audit import AuditFilter, search
    rows, total = search(engine, AuditFilter(action="export"))
    assert total == 1 and rows[0]["actor"] == "cli" and rows[0]["object_code"] == street
    assert rows[0]["detail"]["format"] == "shp" and rows[0]["detail"]["features"] == len(exported)

    result = run("import", "units", str(out), "--mode", "update")
    assert result.exit_code == 0, result.output
    # the street's units as they are stored: nothing to write, nothing raised
    assert "0 features written (update)" in result.output


def test_bad_input_exits_non_zero_with_a_message(run, engine, tmp_path):
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"not a zip")
    result = run("import", "units", str(broken))
    assert result.exit_code != 0
    assert "import refused, nothing written" in result.output and "broken.zip" in result.output

    result = run("import", "parcels", str(broken))
    assert result.exit_code == 2 and "parcels" in result.output

    result = run("import", "units", str(broken), "--map", "households")
    assert result.exit_code == 2 and "is not src=dst" in result.output

    result = run("import", "units", str(tmp_path / "missing.gpkg"))
    assert result.exit_code == 1 and "does not exist" in result.output

    result = run("import", "units", str(broken), "--crs", "EPSG:nonsense")
    assert result.exit_code == 1 and "unknown CRS" in result.output

    result = run("export", "units", "--format", "geojson", "--crs", "EPSG:4547",
                 "-o", str(tmp_path / "u.json"))
    assert result.exit_code == 1 and "GeoJSON is always WGS 84" in result.output
    assert layer_counts(engine)["units"] == 0


def test_import_with_mapping_and_declared_crs(run, engine, small_demo, tmp_path):
    facilities = small_demo.layers["facilities"].iloc[:12].rename(columns={"kind": "TYPE", "name": "MC"})
    path = tmp_path / "facilities.gpkg"
    pyogrio.write_dataframe(facilities.to_crs(4490).set_crs(None, allow_override=True), path)
    result = run("import", "facilities", str(path), "--map", "TYPE=kind", "--map", "MC=name",
                 "--crs", "EPSG:4490")
    assert result.exit_code == 0, result.output
    stored = read_layer(engine, "facilities")
    assert sorted(stored["name"]) == sorted(facilities["MC"])


def test_accounts_and_tokens_from_the_command_line(run, engine, db_url, tmp_path):
    from geodata.accounts import find_token, find_user
    from webmap.auth import hash_token

    result = run("user", "add", "li", "--role", "supervisor", "--scope", "420103001001",
                 "--password", "a long password")
    assert result.exit_code == 0, result.output
    account = find_user(engine, name="li")
    assert account.role == "supervisor" and account.scope_code == "420103001001"
    assert account.password_hash and "a long password" not in account.password_hash

    assert run("user", "add", "wang", "--role", "supervisor", "--password", "a long password").exit_code == 1
    assert run("user", "add", "wang", "--role", "king", "--password", "a long password").exit_code == 2
    assert run("user", "add", "wang", "--role", "viewer", "--password", "short").exit_code == 1

    result = run("token", "add", "police", "--role", "viewer")
    token = result.output.strip()
    assert result.exit_code == 0 and len(token) > 30
    assert find_token(engine, hash_token(token)).name == "police"
    assert run("token", "add", "police").exit_code == 1  # names are unique

    app = make_app(db_url)
    app.instance_path = str(tmp_path)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["demo-accounts"])
    assert result.exit_code == 0
    accounts = result.output.split("departments:")[0]
    logins = dict(line.split()[:2] for line in accounts.splitlines()[1:])
    # no grid cells yet: no supervisor; the 指挥中心 and a department's handler
    assert set(logins) == {"admin", "planner", "viewer", "dispatcher", "handler"}
    assert "HW" in result.output and "区环境卫生管理站" in result.output  # the demo's departments
    # names beside codes: the handler's department, the categories it handles
    assert "department 区环境卫生管理站 (HW)" in next(line for line in accounts.splitlines()
                                                 if line.startswith("handler "))
    assert "E01-01 exposed rubbish" in result.output
    again = runner.invoke(args=["demo-accounts"])
    assert again.output == result.output  # created once, then only shown


def test_demo_supervisor_holds_the_cells_of_their_community(db_url, engine, tmp_path):
    """After ``demo`` and ``demo-accounts`` the demo supervisor holds the cells of their
    community, and ``/cases`` (its list: ``/api/incidents?mine=1``) shows open cases in them.
    Run again, nothing changes."""
    from tests.webhelpers import sign_in

    app = make_app(db_url, BASEMAP="none")
    app.instance_path = str(tmp_path)
    runner = app.test_cli_runner()
    assert runner.invoke(args=["demo", "--units", "800", "--seed", "7"]).exit_code == 0
    result = runner.invoke(args=["demo-accounts"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    password = next(line.split()[1] for line in lines if line.startswith("supervisor "))
    held = lines[-1].removeprefix("supervisor holds cells ").split(", ")
    said = next(line for line in lines if line.startswith("supervisor "))
    scope = re.search(r"community (\S+) \((\d{12})\)\)$", said)  # its name beside its code
    assert scope, said
    name, scope = scope.groups()
    assert read_layer(engine, "communities", isin={"code": [scope]})["name"].tolist() == [name]
    cells = read_layer(engine, "grid_cells", community=scope)["code"]
    assert sorted(held) == sorted(cells) and len(held) >= 1
    again = runner.invoke(args=["demo-accounts"])
    assert again.output == result.output
    client = app.test_client()
    assert sign_in(client, "supervisor", password).status_code == 302
    assert client.get("/cases").status_code == 200
    listed = client.get("/api/incidents?status=open&limit=500&mine=1").json
    assert listed["cells"] == held
    assert listed["incidents"] and all(c["grid_code"] in held for c in listed["incidents"])


def test_plan_from_the_database_and_from_a_file(run, engine, small_demo, tmp_path):
    import json

    from layers.sample_data.demo import write_demo

    write_demo(engine, small_demo)
    out = tmp_path / "plan.gpkg"
    result = run("plan", "-o", str(out))
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output.strip().splitlines()[-1])
    assert scores["non_contiguous"] == 0 and scores["crossing_street"] == 0
    # the demo's river cuts small pieces off some streets: each is explained
    assert scores["outside_bounds"] == len(scores["infeasible"])
    assert all(p["kind"] == "cut_off" and "cut off" in p["reason"] for p in scores["infeasible"])
    communities = pyogrio.read_dataframe(out, layer="communities")
    assignment = pyogrio.read_dataframe(out, layer="assignment")
    assert len(communities) == scores["communities"]
    assert len(assignment) == len(small_demo.layers["units"])
    fine = communities["within_bounds"] == "yes"
    assert communities.loc[fine, "households"].between(1000, 3000).all()
    assert (~fine).sum() == scores["outside_bounds"]
    # dissolved from their units: no gaps and no overlaps inside a street
    import shapely

    for _street, group in communities.groupby("street_code"):
        assert shapely.coverage_is_valid(group.geometry.values)
    streets = small_demo.layers["streets"].set_index("code")
    for street, group in communities.groupby("street_code"):
        assert abs(shapely.union_all(group.geometry.values).area - streets.geometry[street].area) < 1e-9

    units = small_demo.layers["units"][["code", "households", "street_code", "geometry"]].rename(
        columns={"households": "HH", "street_code": "JD", "code": "ID"})
    path = tmp_path / "units.gpkg"
    pyogrio.write_dataframe(units, path)
    zipped = tmp_path / "plan.zip"
    result = run("plan", "--units", str(path), "--map", "HH=households", "--map", "JD=street",
                 "--map", "ID=code", "--min", "800", "--max", "2500", "-o", str(zipped))
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output.strip().splitlines()[-1])
    assert scores["bounds"] == [800, 2500] and scores["outside_bounds"] == len(scores["infeasible"])
    with zipfile.ZipFile(zipped) as zf:
        assert {"communities.shp", "communities.cpg", "assignment.dbf", "scores.json"} <= set(zf.namelist())


def test_plan_refuses_bad_input(run, tmp_path):
    result = run("plan", "--units", str(tmp_path / "nothing.gpkg"), "-o", str(tmp_path / "p.gpkg"))
    assert result.exit_code == 1 and "does not exist" in result.output
    result = run("plan", "--min", "3000", "--max", "1000", "--units", str(tmp_path / "x.gpkg"),
                 "-o", str(tmp_path / "p.gpkg"))
    assert result.exit_code == 1
