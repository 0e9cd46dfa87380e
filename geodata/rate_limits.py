"""Rate-limit counters kept in the database, as a storage for the ``limits`` library (and so
for Flask-Limiter): ``gridplan+db://`` with the option ``url`` (the app's ``DATABASE_URL``).

Why the database and not memory: ``make run`` serves the app from two gunicorn processes (more
on a bigger machine), each with its own memory; counters kept there would let an attacker
spread guesses over the processes and get twice the allowance, and a restart would forget
them. The database is the one thing every process shares (SpatiaLite file or PostGIS), so a
count made by one process is seen by the others at once. Only failed sign-ins are written,
so the extra writes are few.

Fixed windows only (Flask-Limiter's default strategy): a key's ``hits`` count up until
``expires_at`` (seconds since the epoch), then start again from the next hit.
"""

from __future__ import annotations

import time

from limits.storage import Storage
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from geodata.db import get_engine

#: expired counters are deleted at most this often (seconds), by whichever process counts next
CLEANUP_EVERY = 300.0

_INCREMENT = text("""
    INSERT INTO rate_limits (key, hits, expires_at) VALUES (:key, :amount, :now + :expiry)
    ON CONFLICT (key) DO UPDATE SET
      hits = CASE WHEN rate_limits.expires_at <= :now THEN :amount ELSE rate_limits.hits + :amount END,
      expires_at = CASE WHEN rate_limits.expires_at <= :now THEN :now + :expiry
                        ELSE rate_limits.expires_at END
    RETURNING hits""")


class DatabaseStorage(Storage):
    """Counters in the ``rate_limits`` table of the database at ``url``."""

    STORAGE_SCHEME = ["gridplan+db"]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, *, url: str = "",
                 **options) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self.engine = get_engine(url or None)
        self._cleaned = 0.0

    @property
    def base_exceptions(self) -> type[Exception]:
        return SQLAlchemyError

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        with self.engine.begin() as conn:
            if now - self._cleaned > CLEANUP_EVERY:
                conn.execute(text("DELETE FROM rate_limits WHERE expires_at < :now"), {"now": now})
                self._cleaned = now
            return conn.execute(_INCREMENT, {"key": key, "amount": amount, "now": now,
                                             "expiry": float(expiry)}).scalar_one()

    def get(self, key: str) -> int:
        with self.engine.connect() as conn:
            hits = conn.execute(text("SELECT hits FROM rate_limits WHERE key = :key AND expires_at > :now"),
                                {"key": key, "now": time.time()}).scalar_one_or_none()
        return hits or 0

    def get_expiry(self, key: str) -> float:
        now = time.time()
        with self.engine.connect() as conn:
            expires = conn.execute(
                text("SELECT expires_at FROM rate_limits WHERE key = :key AND expires_at > :now"),
                {"key": key, "now": now}).scalar_one_or_none()
        return expires or now

    def check(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1 FROM rate_limits LIMIT 1"))
            return True
        except SQLAlchemyError:
            return False

    def reset(self) -> int | None:
        with self.engine.begin() as conn:
            return conn.execute(text("DELETE FROM rate_limits")).rowcount

    def clear(self, key: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(text("DELETE FROM rate_limits WHERE key = :key"), {"key": key})
