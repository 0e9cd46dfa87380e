"""Open311 GeoReport v2 on the loop: services, requests (GET with the spec's filters, POST with a
token), single requests, XML as well as JSON, errors as the spec shapes them; the Boston and New
York 311 samples imported through the mapping."""

from __future__ import annotations

from datetime import datetime
from xml.etree import ElementTree

import pytest

from geodata.settings import save_setting
from layers.incidents import loop as incidents
from layers.incidents import open311
from layers.sample_data.demo import write_demo
from tests.conftest import make_app
from tests.webhelpers import make_accounts

# the keys of a request in the spec's example answer to GET requests.json
SPEC_REQUEST_KEYS = {
    "service_request_id",
    "status",
    "status_notes",
    "service_name",
    "service_code",
    "description",
    "agency_responsible",
    "service_notice",
    "requested_datetime",
    "updated_datetime",
    "expected_datetime",
    "address",
    "address_id",
    "zipcode",
    "lat",
    "long",
    "media_url",
}


@pytest.fixture
def site(db_url, engine, small_demo):
    write_demo(engine, small_demo)
    # one supervisor takes every step here: the separated loop is tests/test_departments.py's
    save_setting(engine, "incident_separation", False, actor="test")
    app = make_app(db_url, BASEMAP="none")
    secrets = make_accounts(app, small_demo)
    cells = small_demo.layers["grid_cells"]
    here = cells[cells["code"].str.startswith(secrets["scope"])].iloc[0].geometry.representative_point()
    return {"app": app, "engine": engine, "here": here, **secrets}


def test_services_and_definitions(site):
    client = site["app"].test_client()
    auth = {"Authorization": f"Bearer {site['token']}"}
    services = client.get("/open311/v2/services.json", headers=auth).json
    codes = {s["service_code"] for s in services}
    assert "E01-01" in codes and all(
        {"service_code", "service_name", "description", "metadata", "type", "keywords", "group"} <= set(s)
        for s in services
    )
    xml = ElementTree.fromstring(client.get("/open311/v2/services.xml", headers=auth).data)
    assert xml.tag == "services" and len(xml.findall("service")) == len(services)
    assert client.get("/open311/v2/services/E01-01.json", headers=auth).json["service_code"] == "E01-01"
    missing = client.get("/open311/v2/services/NOPE.json", headers=auth)
    assert missing.status_code == 404 and missing.json[0]["code"] == 404
    assert client.get("/open311/v2/services.json").status_code == 401


def test_post_get_and_the_loop_mapping(site):
    client = site["app"].test_client()
    here = site["here"]
    # the spec's POST: form-encoded, with an api_key
    posted = client.post(
        "/open311/v2/requests.json",
        data={
            "api_key": site["supervisor_token"],
            "service_code": "E01-01",
            "lat": str(here.y),
            "long": str(here.x),
            "description": "Trash left on the pavement",
        },
    )
    assert posted.status_code == 201, posted.data
    code = posted.json[0]["service_request_id"]
    assert set(posted.json[0]) == {"service_request_id", "service_notice", "account_id"}
    auth = {"Authorization": f"Bearer {site['supervisor_token']}"}
    one = client.get(f"/open311/v2/requests/{code}.json", headers=auth).json
    assert len(one) == 1 and set(one[0]) == SPEC_REQUEST_KEYS
    assert one[0]["status"] == "open" and one[0]["expected_datetime"] is None
    assert one[0]["requested_datetime"].endswith("+08:00")
    # through the loop: dispatched sets expected_datetime; closed is closed with the note
    case = incidents.act(site["engine"], _supervisor(site), code, {"action": "file", "version": 1})
    case = incidents.act(site["engine"], _supervisor(site), code, {"action": "dispatch", "version": 2})
    due = one_request(client, code, auth)["expected_datetime"]
    assert due == case["due_at"].strftime("%Y-%m-%dT%H:%M:%S") + "+08:00"
    incidents.act(site["engine"], _supervisor(site), code, {"action": "handle", "version": 3})
    incidents.act(
        site["engine"], _supervisor(site), code, {"action": "close", "version": 4, "note": "已清理 cleared"}
    )
    closed = one_request(client, code, auth)
    assert closed["status"] == "closed" and closed["status_notes"] == "已清理 cleared"
    # filters: status, service_code, dates, ids; XML too
    listed = client.get("/open311/v2/requests.json?status=closed&service_code=E01-01", headers=auth).json
    assert code in [r["service_request_id"] for r in listed] and all(r["status"] == "closed" for r in listed)
    assert code not in [
        r["service_request_id"]
        for r in client.get("/open311/v2/requests.json?status=open", headers=auth).json
    ]
    assert (
        client.get(
            "/open311/v2/requests.json?start_date=2001-01-01T00:00:00Z&end_date=2001-02-01T00:00:00Z",
            headers=auth,
        ).json
        == []
    )
    ids = client.get(f"/open311/v2/requests.json?service_request_id={code}", headers=auth).json
    assert [r["service_request_id"] for r in ids] == [code]
    xml = ElementTree.fromstring(client.get(f"/open311/v2/requests/{code}.xml", headers=auth).data)
    assert xml.tag == "service_requests" and xml.find("request/status").text == "closed"


def one_request(client, code, auth):
    return client.get(f"/open311/v2/requests/{code}.json", headers=auth).json[0]


def _supervisor(site):
    from geodata.accounts import Account

    return Account(id=0, name="supervisor", role="supervisor", scope_code=site["scope"])


def test_refusals_in_the_spec_shape(site):
    client = site["app"].test_client()
    here = site["here"]
    no_key = client.post(
        "/open311/v2/requests.json", data={"service_code": "E01-01", "lat": "1", "long": "1"}
    )
    assert no_key.status_code == 403 and no_key.json[0]["code"] == 403
    bad_key = client.post("/open311/v2/requests.json", data={"api_key": "nope", "service_code": "E01-01"})
    assert bad_key.status_code == 403
    unknown = client.post(
        "/open311/v2/requests.json",
        data={
            "api_key": site["supervisor_token"],
            "service_code": "X",
            "lat": str(here.y),
            "long": str(here.x),
        },
    )
    assert unknown.status_code == 400 and "unknown category" in unknown.json[0]["description"]
    xml = client.post(
        "/open311/v2/requests.xml", data={"api_key": site["supervisor_token"], "service_code": "E01-01"}
    )
    assert xml.status_code == 400 and ElementTree.fromstring(xml.data).find("error/code").text == "400"
    auth = {"Authorization": f"Bearer {site['token']}"}
    assert client.get("/open311/v2/requests.json?status=maybe", headers=auth).status_code == 400
    assert client.get("/open311/v2/requests/none.json", headers=auth).status_code == 404


@pytest.mark.parametrize(("kind", "reader"), [("boston", open311.from_boston), ("nyc", open311.from_nyc)])
def test_real_311_samples_import_through_the_mapping(site, test_data, kind, reader):
    path = test_data / "us311" / f"{kind}311-100.csv"
    requests = reader(path)
    assert len(requests) == 100
    with pytest.raises(Exception, match="default category"):
        open311.import_requests(site["engine"], requests, source=kind)
    result = open311.import_file(site["engine"], path, kind, default_category="E01-01")
    located = [r for r in requests if r["lat"] is not None and r["requested_datetime"] is not None]
    assert result["imported"] == len(located) and result["no_location"] == 100 - len(located)
    assert result["open"] == sum(r["status"] == "open" for r in located)
    assert result["unplaced"] == result["imported"]  # Boston and New York lie outside the demo district
    again = open311.import_file(site["engine"], path, kind, default_category="E01-01")
    assert again["imported"] == 0 and again["skipped"] == len(located)  # no duplicates
    # through GeoReport again: ids, status and due time as the source had them
    client = site["app"].test_client()
    auth = {"Authorization": f"Bearer {site['token']}"}
    sample = next(r for r in located if r["expected_datetime"] is not None)
    got = one_request(client, f"{kind[:3]}-{sample['service_request_id']}", auth)
    assert got["status"] == sample["status"]
    assert got["expected_datetime"] == sample["expected_datetime"].strftime("%Y-%m-%dT%H:%M:%S") + "+08:00"
    assert (
        datetime.fromisoformat(got["requested_datetime"]).replace(tzinfo=None) == sample["requested_datetime"]
    )


def _hostile_311_files(folder, test_data) -> list[tuple[str, str, bytes, str]]:
    """(kind, name, bytes, a word the refusal names) for files a department might really send."""
    boston = (test_data / "us311" / "boston311-100.csv").read_bytes()
    nyc = (test_data / "us311" / "nyc311-100.csv").read_bytes()
    good = b'[{"service_request_id": "1", "service_name": "x", "requested_datetime": "2026-01-02T03:04:05"}]'
    return [
        ("boston", "gbk.csv", boston.decode("utf-8").replace("Street", "街道").encode("gbk"), "UTF-8"),
        ("boston", "nyc-as-boston.csv", nyc, "case_enquiry_id"),
        ("nyc", "boston-as-nyc.csv", boston, "Unique Key"),
        ("boston", "empty.csv", b"", "case_enquiry_id"),
        ("boston", "nul.csv", b"case_enquiry_id,open_dt\n1,\x00\x00\n", "time"),
        ("boston", "bad-time.csv", b"case_enquiry_id,open_dt,latitude,longitude\n1,yesterday,42.3,-71.1\n",
         "yesterday"),
        ("open311", "truncated.json", good[:40], "JSON"),
        ("open311", "not-a-list.json", b'{"service_request_id": "1"}', "list"),
        ("open311", "numbers.json", b"[1, 2, 3]", "list"),
        ("open311", "deep.json", b"[" * 100_000 + b"]" * 100_000, "nested"),
        ("open311", "bad-time.json", good.replace(b"2026-01-02T03:04:05", b"soon"), "ISO 8601"),
        ("open311", "no-id.json", good.replace(b'"service_request_id": "1", ', b""), "service_request_id"),
        ("open311", "latin1.json", good.replace(b'"x"', '"café"'.encode("latin-1")), "UTF-8"),
    ]


def test_hostile_311_files_are_refused_by_the_command_naming_the_problem(site, test_data, tmp_path):
    """Files as other departments send them, damaged: ``flask open311-import`` exits non-zero with
    one line naming the problem (no traceback) and stores nothing."""
    from tests.webhelpers import snapshot

    runner = site["app"].test_cli_runner()
    before = snapshot(site["app"].config["DATABASE_URL"])
    wrong = []
    for kind, name, data, word in _hostile_311_files(tmp_path, test_data):
        path = tmp_path / name
        path.write_bytes(data)
        result = runner.invoke(args=["open311-import", str(path), "--kind", kind,
                                     "--default-category", "E01-01"])
        if result.exit_code == 0 or word not in result.output or "Traceback" in result.output:
            wrong.append(f"{name}: exit {result.exit_code}: {result.output.strip()[-200:]!r}")
    assert wrong == []
    assert snapshot(site["app"].config["DATABASE_URL"]) == before


def kept_sums(engine, recount: bool = False) -> dict[str, list[tuple]]:
    """Every row of the incident sums as stored (``recount``: as a count from the cases gives
    them, on a transaction rolled back after), floats rounded to a millionth."""
    from sqlalchemy import text

    from geodata import incident_rows

    def rows(conn) -> dict[str, list[tuple]]:
        return {t: sorted(tuple(round(v, 6) if isinstance(v, float) else v for v in r)
                          for r in conn.execute(text(f"SELECT * FROM {t}")).all())
                for t in ("incident_days", "incident_months")}

    with engine.connect() as conn:
        if not recount:
            return rows(conn)
        with conn.begin() as transaction:
            incident_rows.recount_sums(conn)
            out = rows(conn)
            transaction.rollback()
        return out


def reported(engine) -> int:
    from sqlalchemy import text

    with engine.connect() as conn:
        return int(conn.execute(text("SELECT coalesce(sum(reported), 0) FROM incident_days")).scalar_one())


def test_a_departments_file_of_cases_is_counted_in_the_sums_once(site, small_demo):
    """An import of a department's cases counts them in the daily and monthly sums once (on
    PostgreSQL paused row by row and counted once at the end; SQLite's triggers count each row):
    the sums equal a count from the cases, open and closed, with and without a due time."""
    cells = small_demo.layers["grid_cells"]
    points = [g.representative_point() for g in cells.geometry.iloc[:12]]
    requests = []
    for i in range(36):
        at = datetime(2026, 11, 3 + i % 20, 8 + i % 9, 15)
        closed = i % 3 != 0
        requests.append({
            "service_request_id": f"B{i}", "service_name": "垃圾", "description": f"第 {i} 件",
            "lat": points[i % 12].y, "long": points[i % 12].x, "requested_datetime": at,
            "status": "closed" if closed else "open",
            "updated_datetime": datetime(2026, 11, 25 + i % 4, 10) if closed else None,
            "expected_datetime": datetime(2026, 11, 28) if i % 2 else None,
        })
    before = reported(site["engine"])
    result = open311.import_requests(site["engine"], requests, source="311", default_category="E01-01")
    assert result["imported"] == 36 and result["unplaced"] == 0
    kept = kept_sums(site["engine"])
    assert reported(site["engine"]) == before + 36  # each case once
    assert kept == kept_sums(site["engine"], recount=True)
