"""Bad files (issue 12): the corpus of hostile layer files (tests/hostile_files.py) through every
import path — ``flask import`` and the layers page's upload (preview, then the import job the
worker runs) — on both databases. Each is refused (a non-zero exit, a 4xx, or a preview that is
not ok and a job that ends refused; never a 5xx, a crash or a failed job) with a message naming
its problem; afterwards every table is byte for byte what it was and no upload is left behind.

``make test`` runs one case of each kind of defect (about 80, layer and format varying with the
seed) on SpatiaLite and 15 of them on PostGIS; ``scripts/bench_hardening.py --parts files`` runs the
whole corpus (650 files) on both, as separate processes with limited memory.
"""

from __future__ import annotations

import io
import random
import shutil

import pytest

from geodata.db import get_engine
from geodata.store import layer_counts
from layers.sample_data.demo import generate, write_demo
from layers.worker import run_one
from tests.conftest import make_app
from tests.hostile_files import BOMB_LIMIT_MB, Case, corpus, fresh, import_in_process, million, undamaged
from tests.webhelpers import csrf_token, make_accounts, sign_in, snapshot

SEED = 12
#: Tables a refused upload may rightly touch: the job that ran it, the audit log, sign-in counts.
TOUCHED = ("jobs", "audit_log", "rate_limits")
#: A case that takes longer than this is taken for a hang (a guard, not a performance figure).
HANG_S = 120
POSTGIS_SAMPLE = 15


@pytest.fixture(scope="module")
def hostile():
    demo = generate(units=200, seed=SEED)
    return demo, corpus(SEED, demo, big=False)


def stratified(cases: list[Case], seed: int = SEED) -> list[Case]:
    """One case of each kind of defect, the layer and format chosen by the seed."""
    rng = random.Random(seed)
    groups: dict[str, list[Case]] = {}
    for case in cases:
        _layer, _fmt, defect = case.name.split("/")
        groups.setdefault(defect, []).append(case)
    return [rng.choice(group) for _key, group in sorted(groups.items())]


@pytest.fixture(scope="module", params=["spatialite", "postgis"])
def site(request, hostile, tmp_path_factory):
    """An app on a database holding the demo the corpus was made from, planners signed in."""
    demo, _cases = hostile
    folder = tmp_path_factory.mktemp(f"hostile-{request.param}")
    if request.param == "spatialite":
        template = request.getfixturevalue("spatialite_template")
        shutil.copy(template, folder / "gridplan.sqlite")
        url = f"sqlite:///{folder / 'gridplan.sqlite'}"
    else:
        server = request.getfixturevalue("postgis_server")
        admin = get_engine(server.url.rsplit("/", 1)[0] + "/postgres")
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("CREATE DATABASE test_hostile TEMPLATE template_gridplan")
        url = server.url.rsplit("/", 1)[0] + "/test_hostile"
    engine = get_engine(url)
    write_demo(engine, demo)
    app = make_app(url, BASEMAP="none", UPLOAD_FOLDER=str(folder / "uploads"),
                   MAX_UNZIPPED_BYTES=BOMB_LIMIT_MB * 1024 * 1024)
    make_accounts(app, demo)
    yield {"app": app, "url": url, "engine": engine, "kind": request.param, "folder": folder}
    engine.dispose()


def chosen(site, cases: list[Case]) -> list[Case]:
    sample = stratified(cases)
    if site["kind"] == "postgis":
        sample = random.Random(SEED).sample(sample, POSTGIS_SAMPLE)
    return sample


def test_the_corpus_is_large_and_each_file_is_damaged_once(hostile):
    _demo, cases = hostile
    assert len(cases) >= 200
    families = {c.family for c in cases}
    assert families >= {"shapefile", "features", "values", "zip", "text", "csv", "gpkg"}
    assert len({c.layer for c in cases}) >= 7
    # the same seed, the same cases (text files byte for byte; zips and GeoPackages hold the time)
    again = corpus(SEED, _demo, big=False, layers=("units",))
    first = cases[: len(again)]
    assert [(c.name, c.expect) for c in again] == [(c.name, c.expect) for c in first]
    text = [i for i, c in enumerate(first) if c.main.endswith((".geojson", ".csv"))]
    assert len(text) > 10 and all(again[i].files == first[i].files for i in text)


def test_the_undamaged_files_are_accepted(site, hostile):
    """The control: each file the corpus damages is taken as it is, so each refusal is its defect's."""
    demo, _cases = hostile
    client = planner(site["app"])
    controls = undamaged(SEED, demo)
    rng = random.Random(SEED)
    by_layer = {}
    for case in controls:
        by_layer.setdefault(case.layer, []).append(case)
    for case in [rng.choice(group) for group in by_layer.values()]:
        name, data = case.upload()
        answer = preview(client, case.layer, name, data)
        assert answer.status_code == 200, (case.name, answer.get_data(as_text=True)[:300])
        assert answer.json["ok"], (case.name, answer.json["problems"])
        # not imported: the page forgets the upload when another file is chosen
        assert client.delete(f"/api/layers/uploads/{answer.json['upload']}").status_code == 200


def test_the_command_line_refuses_every_hostile_file(site, hostile, tmp_path):
    _demo, cases = hostile
    runner = site["app"].test_cli_runner()
    before = snapshot(site["url"])
    counts = layer_counts(site["engine"])
    for case in chosen(site, cases):
        path = case.write(tmp_path / case.name.replace("/", "_"))
        result = runner.invoke(args=["import", case.layer, str(path)])
        assert result.exit_code not in (0, None), (case.name, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit), \
            (case.name, repr(result.exception))
        assert case.named(result.output), (case.name, case.expect, result.output)
        assert layer_counts(site["engine"]) == counts, case.name
    assert snapshot(site["url"]) == before


def planner(app):
    client = app.test_client()
    assert sign_in(client, "planner").status_code == 302
    client.environ_base["HTTP_X_CSRFTOKEN"] = csrf_token(client.get("/layers").get_data(as_text=True))
    return client


def preview(client, layer: str, name: str, data: bytes):
    return client.post(f"/api/layers/{layer}/preview", data={"file": (io.BytesIO(data), name)},
                       content_type="multipart/form-data")


def test_the_browser_upload_refuses_every_hostile_file(site, hostile):
    """Preview, then (for a file that can be read) the import anyway: the job ends refused."""
    _demo, cases = hostile
    client = planner(site["app"])
    engine = site["engine"]
    before = snapshot(site["url"], leave_out=TOUCHED)
    counts = layer_counts(engine)
    for case in chosen(site, cases):
        name, data = case.upload()
        answer = preview(client, case.layer, name, data)
        assert answer.status_code < 500, (case.name, answer.get_data(as_text=True)[:500])
        body = answer.json
        if 400 <= answer.status_code < 500:
            said = " ".join([body.get("detail", "")] + list(body.get("problems", [])))
            assert case.named(said), (case.name, case.expect, said)
            continue
        assert answer.status_code == 200 and not body["ok"], (case.name, body)
        assert case.named(" ".join(body["problems"])), (case.name, case.expect, body["problems"])
        queued = client.post(f"/api/layers/{case.layer}/import", json={"upload": body["upload"]})
        assert queued.status_code == 202, (case.name, queued.get_data(as_text=True))
        job = run_one(engine)
        assert job["status"] == "done" and job["result"]["refused"], (case.name, job)
        assert case.named(" ".join(job["result"]["problems"])), (case.name, job["result"])
        status = client.get(queued.json["url"])
        assert status.status_code == 200 and status.json["result"]["refused"]
        assert layer_counts(engine) == counts, case.name
    assert snapshot(site["url"], leave_out=TOUCHED) == before
    assert not any((site["folder"] / "uploads").iterdir()), "an upload was left behind"
    assert run_one(engine) is None  # nothing queued or half done


@pytest.mark.parametrize("site", ["spatialite"], indirect=True)  # the refusal comes before any write
def test_a_million_vertices_are_refused_in_bounded_memory(site, hostile, tmp_path):
    """The big one as ``flask import`` in its own process under RLIMIT_AS: refused, not killed."""
    demo, _cases = hostile
    big = [c for c in million(fresh(demo, "units"), "units") if c.main.endswith(".geojson")]  # the heavier
    before = snapshot(site["url"])
    for case in big:
        outcome = import_in_process(case, tmp_path / case.name.replace("/", "_"), site["url"],
                                    memory_mb=1536, timeout_s=HANG_S)
        assert outcome.exit_code not in (0, None), (case.name, outcome)
        assert case.named(outcome.output) and "MemoryError" not in outcome.output, (case.name, outcome.output)
    assert snapshot(site["url"]) == before
