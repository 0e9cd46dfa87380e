"""Shared fixtures: both databases, the demo district, real data.

Storage tests take the ``engine`` fixture, which runs each test on SpatiaLite and on PostGIS
(a throwaway PostgreSQL 15 cluster started once per session). With ``CI=true`` a missing
PostGIS, Chromium or ``tests/data`` fails the run instead of skipping.

``--postgis-only`` keeps the tests that touch PostGIS (:func:`touches_postgis`); ``make test``
runs the whole suite, then those again with ``GRIDPLAN_TEST_PARTITIONED=1`` (docs/scale.md).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
from pathlib import Path

import pytest

from geodata.db import dispose_engines, get_engine
from geodata.migrate import upgrade
from geodata.standards import seed_settings
from tests import pgcluster

ROOT = Path(__file__).resolve().parent.parent

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
#: GRIDPLAN_TEST_PARTITIONED=1: the PostGIS databases are made with ``init-db --partition-by-district``
PARTITIONED = os.environ.get("GRIDPLAN_TEST_PARTITIONED", "").lower() in ("1", "true", "yes")
#: the PostGIS test server's template databases: the tests' (partitioned or not, as above), and one
#: always plain (made only when the first is partitioned)
TEMPLATE, PLAIN_TEMPLATE = "template_gridplan", "template_plain"

# The tests that read messages read them in English: their apps and command lines speak English
# when the request names no language (GRIDPLAN_LOCALE), and their browsers ask for English.
# tests/test_i18n.py proves that with no preference at all gridplan speaks Chinese.
os.environ["GRIDPLAN_LOCALE"] = "en"
# A background job run in the test process (``worker.run_one``) is forked from it, and this
# process may hold dask's threads (a LocalCluster fixture): a LocalCluster started in such a
# fork can hang on a lock a thread held. In-process jobs run their districts in the job's own
# process; the test of the machine's cores runs a real ``flask worker`` (tests/test_plan_scale.py).
os.environ.setdefault("GRIDPLAN_JOB_WORKERS", "1")


def _compile_catalogues() -> None:
    """The .mo of each message catalogue, compiled when missing or older than its .po (``make
    setup`` does the same), so that ``pytest`` alone runs on a fresh clone."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    for po in (ROOT / "webmap" / "translations").glob("*/LC_MESSAGES/messages.po"):
        mo = po.with_suffix(".mo")
        if not mo.exists() or mo.stat().st_mtime < po.stat().st_mtime:
            with po.open("rb") as fh:
                catalog = read_po(fh, locale=po.parent.parent.name)
            with mo.open("wb") as fh:
                write_mo(fh, catalog)


_compile_catalogues()
TEST_DATA = ROOT / "tests" / "data"
CHROMIUM = Path("/usr/bin/chromium")


def require(condition: bool, what: str) -> None:
    """Skip when ``what`` is missing here — but fail in CI, where nothing may be skipped."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} is missing, and CI=true does not allow skipping", pytrace=False)
    pytest.skip(f"{what} is missing")


def pytest_addoption(parser) -> None:
    parser.addoption("--postgis-only", action="store_true",
                     help="run only the tests that touch PostGIS (with GRIDPLAN_TEST_PARTITIONED=1: the "
                          "partitioned pass of `make test`)")


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "postgis: the test touches PostGIS in a way its fixtures do not "
                                       "show (its own cluster): kept by --postgis-only")


def touches_postgis(item) -> bool:
    """Whether a test touches PostGIS, as ``--postgis-only`` selects: it asks for the test server
    (``postgis_server``, or a fixture depending on it: ``postgis_url``, ``postgis_plain_url``);
    one of its parameters is ``"postgis"`` (``db_url[postgis]``, ``engine``, ``stored``, and the
    module fixtures parametrized ``["spatialite", "postgis"]`` that ask for the server by name);
    or it is marked ``postgis``. :func:`_postgis_use_is_seen` checks the rule on every run."""
    if item.get_closest_marker("postgis"):
        return True
    if "postgis_server" in getattr(item, "fixturenames", ()):
        return True
    callspec = getattr(item, "callspec", None)
    params = callspec.params.values() if callspec is not None else ()
    return any(isinstance(value, str) and value == "postgis" for value in params)


def pytest_collection_modifyitems(config, items) -> None:
    if not config.getoption("--postgis-only"):
        return
    keep = [item for item in items if touches_postgis(item)]
    dropped = [item for item in items if not touches_postgis(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = keep


def pytest_sessionfinish(session, exitstatus) -> None:
    # `make test PYTEST_ARGS=tests/test_i18n.py`: none of those touches PostGIS, so the partitioned
    # pass has nothing to run, which is no failure
    if session.config.getoption("--postgis-only") and exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.OK


@pytest.fixture(autouse=True)
def _postgis_use_is_seen(request):
    """A test that reached the PostGIS test server although :func:`touches_postgis` does not see it
    (``request.getfixturevalue("postgis_server")`` in a fixture not parametrized ``"postgis"``)
    fails: the partitioned pass would leave it out. Mark it ``@pytest.mark.postgis``."""
    yield
    if "postgis_server" in request.fixturenames and not touches_postgis(request.node):
        pytest.fail("this test uses the PostGIS test server, but --postgis-only would not select it: "
                    "mark it @pytest.mark.postgis", pytrace=False)


@pytest.fixture(scope="session")
def postgis_server():
    require(pgcluster.available(), "PostgreSQL 15 with PostGIS (postgresql-15-postgis-3)")
    cluster = pgcluster.PostgisCluster(dbname=TEMPLATE)
    cluster.start()
    engine = get_engine(cluster.url)
    upgrade(engine)
    with engine.begin() as conn:
        seed_settings(conn)
    engine.dispose()
    dispose_engines()
    if PARTITIONED:  # every PostGIS test on tables split by district (docs/scale.md)
        from geodata.partitions import partition_by_district

        create_database(cluster.url, PLAIN_TEMPLATE, TEMPLATE)  # kept plain, for postgis_plain_url
        engine = get_engine(cluster.url)
        partition_by_district(engine)
        engine.dispose()
        dispose_engines()
    yield cluster
    dispose_engines()
    cluster.stop()


@pytest.fixture(scope="session")
def spatialite_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.sqlite"
    engine = get_engine(f"sqlite:///{path}")
    upgrade(engine)
    with engine.begin() as conn:
        seed_settings(conn)
    engine.dispose()
    return path


_counter = itertools.count()


@pytest.fixture
def spatialite_url(spatialite_template, tmp_path) -> str:
    path = tmp_path / "gridplan.sqlite"
    shutil.copy(spatialite_template, path)
    return f"sqlite:///{path}"


def create_database(server_url: str, name: str, template: str) -> str:
    """A new database ``name`` on the test server, copied from ``template``; its URL."""
    server = server_url.rsplit("/", 1)[0]
    admin = get_engine(server + "/postgres")
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name} TEMPLATE {template}")
    return f"{server}/{name}"


@pytest.fixture
def postgis_url(postgis_server) -> str:
    """A fresh, migrated PostGIS database (partitioned by district under GRIDPLAN_TEST_PARTITIONED)."""
    return create_database(postgis_server.url, f"test_{next(_counter)}", TEMPLATE)


@pytest.fixture
def postgis_plain_url(postgis_server) -> str:
    """A fresh, migrated PostGIS database whose tables are never partitioned, whatever
    GRIDPLAN_TEST_PARTITIONED says: for the tests of partitioning a plain database."""
    return create_database(postgis_server.url, f"plain_{next(_counter)}",
                            PLAIN_TEMPLATE if PARTITIONED else TEMPLATE)


@pytest.fixture(params=["spatialite", "postgis"])
def db_url(request) -> str:
    """A fresh, migrated database of each kind."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def engine(db_url):
    eng = get_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def stored(engine, small_demo):
    """The small demo written to a fresh database of each kind; its engine."""
    from layers.sample_data.demo import write_demo

    write_demo(engine, small_demo)
    return engine


def make_app(database_url: str, **config):
    """The app the tests run: ``create_app`` on ``database_url`` with ``TESTING`` on and ``config``
    (upper-case Flask settings: ``BASEMAP="none"``, ``PHOTO_DIR=…``) over the defaults — the one
    way a test builds an app."""
    from webmap import create_app

    return create_app({"DATABASE_URL": database_url, "TESTING": True, **config})


def demo_site(database_url: str, demo, **config):
    """The usual site of a web test: ``demo`` written to the database at ``database_url``, an app
    on it (:func:`make_app`) and one account of each kind (:func:`tests.webhelpers.make_accounts`);
    returns the app and the accounts' secrets."""
    from layers.sample_data.demo import write_demo
    from tests.webhelpers import make_accounts

    write_demo(get_engine(database_url), demo)
    app = make_app(database_url, **config)
    return app, make_accounts(app, demo)


def streets_of(demo) -> list[str]:
    """A demo's street codes, in order."""
    return sorted(demo.layers["streets"]["code"])


@pytest.fixture(scope="session")
def small_demo():
    """A small generated district (about 800 units) shared by the tests that only read it."""
    from layers.sample_data.demo import generate

    return generate(units=800, seed=7)


@pytest.fixture(scope="session")
def district_demo():
    """The default demo district (4,000 units), as ``make run`` builds it."""
    from layers.sample_data.demo import generate

    return generate(units=4000, seed=1)


@pytest.fixture(scope="session")
def test_data() -> Path:
    require(TEST_DATA.is_dir(), f"real data folder {TEST_DATA}")
    return TEST_DATA


@pytest.fixture(scope="session")
def providence_zip(test_data) -> Path:
    path = test_data / "providence" / "Providence_blocks.zip"
    require(path.exists(), str(path))
    return path


@pytest.fixture(scope="session")
def chromium_path() -> str:
    require(CHROMIUM.exists(), "Chromium (Debian package chromium)")
    return str(CHROMIUM)


@pytest.fixture(scope="module")
def browser(chromium_path):
    """Debian's Chromium, headless, driven by Playwright (never a downloaded browser); one per
    test module, each test opening its own context."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run"])
        yield browser
        browser.close()


#: a supervisor's phone: 360 px wide, twice as dense, touch
PHONE = {"viewport": {"width": 360, "height": 740}, "device_scale_factor": 2, "is_mobile": True,
         "has_touch": True}


@pytest.fixture
def chromium_page(browser):
    """Chromium pages for one test, each in its own context, closed after the test — the one way a
    test opens a page: ``chromium_page(phone=False, dialogs=None, requests=False, no_tiles=False,
    console=False, init_script=None, **context_options)``.
    Each page records its script errors in ``page.errors`` (``console``: the console's errors
    too); ``phone`` starts from :data:`PHONE`; ``dialogs="dismiss"`` records dialogs in
    ``page.dialogs`` and dismisses them, ``"accept"`` accepts them; ``requests`` records the URLs
    asked for in ``page.requests``; ``no_tiles`` fails every tile request, as on an intranet with
    no way out; ``init_script`` runs in every document before the page's own scripts. The
    page's context is ``page.context`` (to go offline, or open a second page in it)."""
    contexts = []

    def open_page(*, phone: bool = False, dialogs: str | None = None, requests: bool = False,
                  no_tiles: bool = False, console: bool = False, init_script: str | None = None,
                  **options):
        context = browser.new_context(**((PHONE if phone else {}) | options))
        contexts.append(context)
        if init_script:
            context.add_init_script(init_script)
        page = context.new_page()
        page.errors = []
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        if console:
            page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
        if dialogs == "dismiss":
            page.dialogs = []
            page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
        elif dialogs == "accept":
            page.on("dialog", lambda d: d.accept())
        if requests:
            page.requests = []
            page.on("request", lambda r: page.requests.append(r.url))
        if no_tiles:
            page.route("**/tile.openstreetmap.org/**", lambda route: route.abort())
        return page

    yield open_page
    for context in contexts:
        context.close()


@contextlib.contextmanager
def recorded(engine):
    """Every statement SQLAlchemy sends on ``engine`` meanwhile, as a list filled as they go."""
    from sqlalchemy import event

    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)
