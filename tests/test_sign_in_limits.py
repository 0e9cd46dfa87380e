"""Guessing passwords: failed sign-ins are counted per account and address and per address, then refused
with a 429 that says when to come back; the count is kept in the database, so every gunicorn
process sees it; an unknown name costs the same scrypt as a known one; passwords are scrypt
hashes and tokens only their SHA-256, and a revoked token stops working."""

from __future__ import annotations

import hashlib
import re

import pytest
import requests
import werkzeug.security
from sqlalchemy import text

from geodata.db import get_engine
from layers.sample_data.demo import write_demo
from tests.conftest import make_app
from tests.test_processes import every_process
from tests.webhelpers import PASSWORD, csrf_token, gunicorn_app, make_accounts


@pytest.fixture
def site(db_url, small_demo):
    write_demo(get_engine(db_url), small_demo)
    app = make_app(db_url, LOGIN_LIMIT_PER_ACCOUNT="3 per minute",
                   LOGIN_LIMIT_PER_ADDRESS="6 per minute; 8 per hour")
    secrets = make_accounts(app, small_demo)
    return app, secrets


def attempt(client, name: str, password: str = "wrong", address: str = "10.0.0.1"):
    token = csrf_token(client.get("/login", environ_base={"REMOTE_ADDR": address}).get_data(as_text=True))
    return client.post("/login", data={"name": name, "password": password, "csrf_token": token},
                       environ_base={"REMOTE_ADDR": address})


def flashed(answer) -> str:
    return " ".join(re.findall(r'class="flash"[^>]*>([^<]*)', answer.get_data(as_text=True)))


def test_an_account_is_slowed_after_its_failed_sign_ins_even_with_the_right_password(site):
    app, _ = site
    client = app.test_client()
    assert [attempt(client, "planner").status_code for _ in range(3)] == [401, 401, 401]
    refused = attempt(client, "planner", PASSWORD)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert "Too many failed sign-ins: try again in 1 min" in flashed(refused)
    # the refusal is about that account: others sign in from the same address
    assert attempt(client, "viewer", PASSWORD).status_code == 302


def test_wrong_passwords_from_elsewhere_do_not_lock_the_real_person_out(site):
    """Issue 20: five wrong passwords for the administrator locked the administrator out. The
    failures count per account *and address*: the guesser's address is refused, the real
    administrator at another address signs in."""
    app, _ = site
    guesser, admin = app.test_client(), app.test_client()
    assert [attempt(guesser, "admin", address="203.0.113.7").status_code for _ in range(3)] == [401] * 3
    assert attempt(guesser, "admin", PASSWORD, address="203.0.113.7").status_code == 429
    assert attempt(admin, "admin", PASSWORD, address="10.0.0.9").status_code == 302
    # an IPv6 guesser cannot walk round it through the addresses of its /64
    assert [attempt(guesser, "viewer", address=f"2001:db8::{i}").status_code for i in range(1, 5)] \
        == [401, 401, 401, 429]


def test_an_address_is_refused_after_failed_sign_ins_under_many_names(site):
    app, _ = site
    client = app.test_client()
    answers = [attempt(client, f"guess{i}").status_code for i in range(6)]
    assert answers == [401] * 6
    assert attempt(client, "admin", PASSWORD).status_code == 429  # this address is refused …
    assert attempt(client, "admin", PASSWORD, address="10.0.0.2").status_code == 302  # … not others


def test_the_hourly_limit_refuses_for_the_rest_of_the_hour(site):
    app, _ = site
    engine = get_engine(app.config["DATABASE_URL"])
    client = app.test_client()
    for i in range(6):
        attempt(client, f"guess{i}")
    # the minute is over: its counter is gone, the hour's stays
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM rate_limits WHERE key LIKE '%/minute'"))
    assert [attempt(client, f"more{i}").status_code for i in range(3)] == [401, 401, 429]
    refused = attempt(client, "admin", PASSWORD)
    assert refused.status_code == 429
    assert 60 < int(refused.headers["Retry-After"]) <= 3600
    assert re.search(r"try again in (5[0-9]|60) min", flashed(refused))  # the rest of the hour


def test_successful_sign_ins_are_not_counted(site):
    app, _ = site
    for _ in range(8):
        client = app.test_client()
        assert attempt(client, "planner", PASSWORD).status_code == 302


def test_an_unknown_name_costs_the_same_scrypt_as_a_known_one(site, monkeypatch):
    app, _ = site
    work: list[tuple[int, int, int]] = []
    real = werkzeug.security.hashlib.scrypt

    def counted(password, *, salt, n, r, p, maxmem=0, dklen=64):
        work.append((n, r, p))
        return real(password, salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=dklen)

    monkeypatch.setattr(werkzeug.security.hashlib, "scrypt", counted)
    client = app.test_client()
    assert attempt(client, "planner", address="10.0.0.3").status_code == 401
    known = list(work)
    work.clear()
    assert attempt(client, "nobody-by-this-name", address="10.0.0.4").status_code == 401
    assert work == known and len(known) == 1  # one scrypt of the same cost each


def test_passwords_are_scrypt_hashes_and_tokens_only_their_sha256(site):
    app, secrets = site
    engine = get_engine(app.config["DATABASE_URL"])
    with engine.connect() as conn:
        hashes = conn.execute(text("SELECT password_hash FROM users")).scalars().all()
        tokens = conn.execute(text("SELECT token_sha256 FROM api_tokens")).scalars().all()
    assert hashes and all(h.startswith("scrypt:") for h in hashes)
    assert PASSWORD not in " ".join(hashes)
    assert hashlib.sha256(secrets["token"].encode()).hexdigest() in tokens
    assert secrets["token"] not in tokens
    # a revoked token stops working with the next request
    client = app.test_client()
    bearer = {"Authorization": f"Bearer {secrets['token']}"}
    assert client.get("/api/layers", headers=bearer).status_code == 200
    from geodata.accounts import revoke_token

    revoke_token(engine, actor="test", name="police")
    assert client.get("/api/layers", headers=bearer).status_code == 401


def test_every_gunicorn_process_sees_the_same_count(db_url, small_demo, tmp_path):
    """``make run``'s two processes: four failures in all, wherever they landed, and then every
    process refuses (counters kept in one process's memory would let more through)."""
    write_demo(get_engine(db_url), small_demo)
    make_accounts(make_app(db_url), small_demo)
    with gunicorn_app(db_url, tmp_path, GRIDPLAN_LOGIN_LIMIT_PER_ACCOUNT="4 per minute",
                      GRIDPLAN_WARM_PLANS="0") as (base, _env):
        browser = requests.Session()
        token = csrf_token(browser.get(f"{base}/login", timeout=30).text)

        def guess():
            answer = browser.post(f"{base}/login", data={"name": "planner", "password": "wrong",
                                                         "csrf_token": token}, timeout=30)
            return answer, answer.status_code

        statuses = [guess()[1] for _ in range(5)]
        assert statuses == [401, 401, 401, 401, 429]
        assert set(every_process(guess).values()) == {429}
