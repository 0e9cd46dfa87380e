"""Names beside codes and the interface's words: plan and layer exports carry community and
street names (read back with pyogrio), the rates CSV names its rows, proposed sites name their
community and nearest road, the settings form speaks in labels and units and keeps refusing bad
values, and the audit log reads as sentences — on SpatiaLite and PostGIS."""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile

import pyogrio
import pytest
from sqlalchemy import text

from geodata.db import get_engine
from geodata.settings import get_value
from tests.conftest import demo_site
from tests.webhelpers import csrf_token, sign_in


@pytest.fixture
def site(db_url, small_demo, monkeypatch):
    """The small demo, one account per role, one plan of the first street whose first community
    the planner renamed; messages in Chinese (what a 街道 office reads)."""
    from layers.plans.documents import name_community
    from layers.plans.memory import PlanMemory
    from layers.plans.workflow import auto_plan

    monkeypatch.delenv("GRIDPLAN_LOCALE", raising=False)
    engine = get_engine(db_url)
    app, secrets = demo_site(db_url, small_demo, BASEMAP="none")
    street = sorted(small_demo.layers["streets"]["code"])[0]
    memory = PlanMemory(engine)
    plan_id, _result = auto_plan(memory, "东区调整", "planner", street=street)
    with engine.connect() as conn:
        version, = conn.execute(text("SELECT version FROM plans WHERE id = :p"), {"p": plan_id}).one()
        street_name = conn.execute(text("SELECT name FROM streets WHERE code = :c"),
                                   {"c": street}).scalar_one()
    code = sorted(memory.plan(plan_id).partition.communities)[0]
    name_community(memory, plan_id, code, "新名社区", version, "planner")
    yield {"app": app, "engine": engine, "plan": plan_id, "community": code, "street": street,
           "street_name": street_name, "secrets": secrets}
    engine.dispose()


def _client(app, who: str, lang: str = "zh-CN"):
    client = app.test_client()
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = lang
    assert sign_in(client, who).status_code == 302
    return client


def test_plan_exports_carry_community_and_street_names(site, tmp_path):
    client = _client(site["app"], "planner")
    for fmt in ("gpkg", "shp"):
        answer = client.get(f"/api/plans/{site['plan']}/export?format={fmt}")
        assert answer.status_code == 200, answer.get_data(as_text=True)[:300]
        path = tmp_path / f"plan.{'gpkg' if fmt == 'gpkg' else 'zip'}"
        path.write_bytes(answer.data)
        if fmt == "gpkg":
            communities = pyogrio.read_dataframe(path, layer="communities")
            assignment = pyogrio.read_dataframe(path, layer="assignment")
            name, street_name, unit_name = "name", "street_name", "community_name"
        else:
            with zipfile.ZipFile(path) as zf:
                zf.extractall(tmp_path / "shp")
            communities = pyogrio.read_dataframe(next((tmp_path / "shp").rglob("communities.shp")))
            assignment = pyogrio.read_dataframe(next((tmp_path / "shp").rglob("assignment.shp")))
            name, street_name, unit_name = "name", "strt_name", "comm_name"
        row = communities[communities[communities.columns[0]] == site["community"]]
        assert list(row[name]) == ["新名社区"], f"{fmt}: {communities.columns.tolist()}"
        assert set(communities[street_name]) == {site["street_name"]}
        assert communities[name].notna().all()  # every community named, the kept ones by their current name
        assert "新名社区" in set(assignment[unit_name])


def test_layer_exports_carry_names(site, tmp_path):
    client = _client(site["app"], "planner")
    answer = client.get("/api/layers/units/export?format=gpkg")
    assert answer.status_code == 200, answer.get_data(as_text=True)[:300]
    path = tmp_path / "units.gpkg"
    path.write_bytes(answer.data)
    units = pyogrio.read_dataframe(path)
    with site["engine"].connect() as conn:
        names = dict(conn.execute(text("SELECT code, name FROM communities")).all())
    assigned = units[units["community_code"].notna()]
    assert len(assigned) and (assigned["community_name"] == assigned["community_code"].map(names)).all()
    assert units["street_name"].notna().all()


def test_rates_csv_names_its_rows(site):
    client = _client(site["app"], "viewer")
    answer = client.get("/api/rates?format=csv&by=community&from=2020-01-01")
    assert answer.status_code == 200
    rows = list(csv.reader(io.StringIO(answer.get_data(as_text=True).lstrip("\ufeff"))))
    assert rows[0][:3] == ["代码", "名称", "街道"]
    with site["engine"].connect() as conn:
        names = dict(conn.execute(text("SELECT code, name FROM communities")).all())
    body = [r for r in rows[1:] if r[0]]
    assert body and all(r[1] == names[r[0]] for r in body)
    assert rows[-1][:2] == ["", "合计"]  # the total by its name, not "total"
    answer = client.get("/api/rates?by=street&from=2020-01-01").get_json()
    assert all(r["name"] for r in answer["rows"]) and answer["total"]["name"] == "合计"


def test_proposed_sites_name_their_community_and_road(site):
    client = _client(site["app"], "planner")
    answer = client.post("/api/coverage/sites", json={"kind": "service_station", "k": 2},
                         headers={"X-CSRFToken": csrf_token(client.get("/coverage").get_data(as_text=True))})
    assert answer.status_code == 200, answer.get_data(as_text=True)[:300]
    sites = [f["properties"] for f in answer.get_json()["features"]]
    assert sites and all(s["street_name"] for s in sites)
    assert any(s["community_name"] for s in sites)  # a site in a blind spot lies in no community
    assert any(s["road_name"] for s in sites)  # the demo's roads have names


def test_settings_form_speaks_labels_saves_and_refuses(site):
    client = _client(site["app"], "admin")
    headers = {"X-CSRFToken": csrf_token(client.get("/admin/settings").get_data(as_text=True))}
    listed = {s["key"]: s for s in client.get("/api/admin/settings").get_json()["settings"]}
    assert listed["households_min"]["label"] == "社区户数下限" and listed["households_min"]["unit"] == "户数"
    assert listed["working_calendar"]["label"] == "工作日历"
    source = listed["households_min"]["source_text"]
    assert "临发" in source and "says" not in source
    saved = client.put("/api/admin/settings/households_min", json={"value": 900}, headers=headers)
    assert saved.status_code == 200 and saved.get_json()["label"] == "社区户数下限"
    assert get_value(site["engine"], "households_min") == 900
    refused = client.put("/api/admin/settings/households_min", json={"value": "many"}, headers=headers)
    assert refused.status_code == 400 and get_value(site["engine"], "households_min") == 900
    # the audit log says it in words, not as keys and JSON
    page = client.get("/admin/audit").get_data(as_text=True)
    assert "修改设置" in page and "社区户数下限：1,000 → 900" in page
    shown = re.sub(r"<[^>]+>", " ", page.split("<tbody>")[1])  # the text a person reads
    assert "setting:update" not in shown and '{"key"' not in shown and "sign-in" not in shown
    assert "登录" in page  # the sign-in, in words
    english = _client(site["app"], "admin", "en").get("/admin/audit").get_data(as_text=True)
    assert "changed a setting" in english and "Fewest households per community: 1,000 → 900" in english


def test_steps_and_categories_in_the_pages_language(site):
    from layers.plans.documents import timeline
    from layers.plans.memory import PlanMemory

    with site["app"].test_request_context(headers={"Accept-Language": "zh-CN"}):
        steps = timeline(PlanMemory(site["engine"]), site["plan"])
        labels = [s["label"] for s in steps]
        assert labels[0] == "创建" and "命名社区" in labels

    def categories(lang):
        page = _client(site["app"], "supervisor", lang).get("/cases/new").get_data(as_text=True)
        config = re.search(r'id="gridplan-config">(.*?)</script>', page, re.S).group(1)
        return json.loads(config)["categories"]

    assert categories("zh-CN")["E05-01"] == "路面积水"
    assert categories("en")["E05-01"] == "flooded road"


def test_a_missing_page_speaks_the_pages_language(site):
    client = _client(site["app"], "viewer")
    answer = client.get("/no/such/page")
    assert answer.status_code == 404 and "没有" in answer.get_data(as_text=True)
    assert "Not Found" not in answer.get_data(as_text=True)
    english = _client(site["app"], "viewer", "en").get("/no/such/page").get_data(as_text=True)
    assert "There is nothing at this address." in english
