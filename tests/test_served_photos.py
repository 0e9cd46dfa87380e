"""A case photo uploaded to the app as ``make run`` serves it (gunicorn, ``webmap.wsgi:app``) is
kept and shown back: decoding it (rasterio, whose wheel bundles its own GDAL and PROJ) in a
server process that has the SpatiaLite database (linked to the system PROJ) open must not kill
the worker."""

from __future__ import annotations

import pytest
import requests

from geodata.db import get_engine
from layers.sample_data.demo import write_demo
from tests.conftest import make_app
from tests.images import decode, encode, picture
from tests.webhelpers import PASSWORD, csrf_token, gunicorn_app, make_accounts


@pytest.fixture
def served(db_url, small_demo, tmp_path):
    """gunicorn (2 workers) on a demo database with an account of each role; its address, a
    point in the supervisor's community and the photo folder."""
    write_demo(get_engine(db_url), small_demo)
    secrets = make_accounts(make_app(db_url), small_demo)
    cells = small_demo.layers["grid_cells"]
    here = cells[cells["code"].str.startswith(secrets["scope"])].geometry.iloc[0].representative_point()
    photos = tmp_path / "photos"
    with gunicorn_app(db_url, tmp_path, GRIDPLAN_PHOTO_DIR=str(photos)) as (base, _env):
        yield base, here, photos, tmp_path / "gunicorn.log"


def test_a_served_app_keeps_and_shows_uploaded_photos(served):
    base, here, photos, log = served
    session = requests.Session()
    signed = session.post(f"{base}/login", allow_redirects=False, timeout=30, data={
        "name": "supervisor", "password": PASSWORD,
        "csrf_token": csrf_token(session.get(f"{base}/login", timeout=30).text)})
    assert signed.status_code == 302
    headers = {"X-CSRFToken": csrf_token(session.get(f"{base}/login", timeout=30).text)}
    uploads = [("scene.jpg", encode(picture(640, 480)), (640, 480)),
               ("scene.png", encode(picture(300, 200), "PNG"), (300, 200)),
               ("scene.webp", encode(picture(200, 300), "WEBP"), (200, 300)),
               ("again.jpg", encode(picture(320, 240)), (320, 240))]
    name, data, _size = uploads[0]
    report = session.post(f"{base}/api/incidents", headers=headers, timeout=60, data={
        "lon": str(here.x), "lat": str(here.y), "category": "E01-01", "description": "井盖破损"},
        files={"photo": (name, data)})
    assert report.status_code == 201, report.text[:500]
    code = report.json()["code"]
    for name, data, _size in uploads[1:]:
        added = session.post(f"{base}/api/incidents/{code}/photos", headers=headers, timeout=60,
                             files={"photo": (name, data)})
        assert added.status_code == 201, (name, added.status_code, added.text[:500])
    case = session.get(f"{base}/api/incidents/{code}", timeout=30).json()
    assert len(case["photos"]) == len(uploads) == len(list(photos.iterdir()))
    for photo, (name, _data, (width, height)) in zip(case["photos"], uploads, strict=True):
        got = session.get(base + photo["url"], timeout=30)
        assert got.status_code == 200 and got.headers["Content-Type"] == "image/jpeg", name
        pixels, _tags = decode(got.content)
        assert pixels.shape == (3, height, width), name  # kept at its size, as a colour JPEG
    assert "SIGSEGV" not in log.read_text()  # no worker died along the way
