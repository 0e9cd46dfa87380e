"""Which districts a code names, so that a statement on a table split by district names them
too: on PostgreSQL partitioned by district it then reads those districts' partitions alone, and
on a sharded store (Citus) it goes to their shards alone (docs/scale.md).

A row lies in its street's district (the importer refuses a unit, community or cell whose
``district_code`` is not its street's), and a street's district is the streets table's — not
always the district its code begins with: a provisional street code (sequence 700–999) was given
under whatever district the import named. So the districts under a code are looked up in the
streets table (small, and whole on every node), with the district the code's first six digits
name beside them for a street the table lacks.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, and_, literal, select

from geodata.db import BATCH
from geodata.models import District, Street


def starting(column, prefix: str):
    """``column`` starts with ``prefix`` (codes are digits), as a range an index can serve."""
    return and_(column >= prefix, column < prefix[:-1] + chr(ord(prefix[-1]) + 1))


def districts_under(conn: Connection, prefix: str | None) -> list[str] | None:
    """The districts whose rows a code ``prefix`` (of a district, street, community or cell, or
    the start of one) can cover: those of the stored streets under it, the district its first six
    digits name, and for a prefix shorter than a district's the stored districts under it.
    ``None`` (name none: every district is read) without a prefix, or when nothing under a short
    one is known."""
    if not prefix:
        return None
    found = set(conn.execute(select(Street.district_code).distinct()
                             .where(starting(Street.code, prefix[:9]), Street.district_code.is_not(None)))
                .scalars())
    if len(prefix) >= 6:
        found.add(prefix[:6])
    else:
        found.update(conn.execute(select(District.code).where(starting(District.code, prefix))).scalars())
    return sorted(found) or None


def districts_of_codes(conn: Connection, codes: Iterable[str]) -> list[str] | None:
    """The districts the rows of ``codes`` (communities' or cells' codes, 12 or 15 digits, or
    streets') lie in: their streets' districts, and the districts their first six digits name.
    ``None`` when a code is too short to name a street (every district is read)."""
    codes = {str(c) for c in codes if c}
    if any(len(c) < 9 for c in codes):
        return None
    streets = sorted({c[:9] for c in codes})
    found = {s[:6] for s in streets}
    for start in range(0, len(streets), BATCH):
        found.update(conn.execute(select(Street.district_code).distinct()
                                  .where(Street.code.in_(streets[start:start + BATCH]),
                                         Street.district_code.is_not(None))).scalars())
    return sorted(found)


def in_districts(table, districts: list[str] | None):
    """``table``'s rows of ``districts``, or every row for None."""
    return literal(True) if districts is None else table.c.district_code.in_(districts)
