"""The official code table (统计用区划代码) replaces provisional codes, in one transaction.

The statistics bureau publishes, per district, one row per street (9 digits) and community
(12 digits): the code, the name, and the parent's code or name. :func:`apply_code_table` matches
the *provisional* streets and communities (:mod:`geodata.naming`) to those rows by name — exact,
then without the suffix, a community only among the rows of its street — and rewrites every code
that changes everywhere it appears: streets, communities (and their history), units (their street
and community, and unit codes, which start with the street's code), unit adjacency, buildings,
grid cells (codes start with the community's), incidents, facilities, plans (their assignments and
streets), and the scopes of accounts and tokens. A provisional community whose street received its
official code but which has no row of its own keeps a provisional sequence under the new street
code. Nothing is guessed: names matching more than one row are ambiguous and reported, rows and
provisional codes left without a partner are listed, and a code already used by another feature
refuses the whole table. The boundary revision is raised in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd
from sqlalchemy import Connection, Engine, String, bindparam, func, insert, select, update

from geodata import naming
from geodata.catalog import as_text, is_code
from geodata.errors import Refused
from geodata.i18n import _
from geodata.models import (
    ApiToken,
    AuditLog,
    Building,
    Community,
    CommunityHistory,
    Facility,
    GridCell,
    Incident,
    Plan,
    PlanAssignment,
    Street,
    Unit,
    UnitAdjacency,
    User,
)
from geodata.revisions import lock_revision, raise_revision
from geodata.text_tables import read_text_table

CODE_NAMES = ("code", "统计用区划代码", "区划代码", "代码", "编码")
NAME_NAMES = ("name", "名称", "单位名称", "区划名称")
PARENT_NAMES = ("parent", "parent_code", "parent_name", "上级代码", "上级", "上级名称", "所属街道", "street")


class CodeTableRefused(Refused):
    """The code table cannot be applied; ``problems`` lists every reason."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems[:20]) + (
            f"; … and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""))


@dataclass
class CodeTableResult:
    """What a code table matched, left unmatched and found ambiguous; the codes it changed."""

    streets: dict[str, str] = field(default_factory=dict)  # provisional → official
    communities: dict[str, str] = field(default_factory=dict)  # old → new (official or re-parented)
    matched: list[dict] = field(default_factory=list)
    unmatched_rows: list[dict] = field(default_factory=list)
    unmatched_provisional: list[dict] = field(default_factory=list)
    ambiguous: list[dict] = field(default_factory=list)
    already_official: int = 0
    revision: int | None = None

    def summary(self) -> dict:
        return {"matched": self.matched, "unmatched_rows": self.unmatched_rows,
                "unmatched_provisional": self.unmatched_provisional, "ambiguous": self.ambiguous,
                "already_official": self.already_official, "streets_changed": len(self.streets),
                "communities_changed": len(self.communities), "revision": self.revision}


def _pick(columns: list[str], names: tuple[str, ...]) -> str | None:
    lower = {str(c).strip().lower(): c for c in columns}
    return next((lower[n.lower()] for n in names if n.lower() in lower), None)


def read_code_table(path: str | Path) -> pd.DataFrame:
    """The table as ``code``, ``name``, ``parent`` (text); refused with every problem named."""
    path = Path(path)
    frame = read_text_table(path, CodeTableRefused, missing="code table")
    code, name = _pick(list(frame.columns), CODE_NAMES), _pick(list(frame.columns), NAME_NAMES)
    parent = _pick(list(frame.columns), PARENT_NAMES)
    if code is None or name is None:
        raise CodeTableRefused(_("{name} needs a code column ({p2}) and a name column ({p3}); it has {p4}",
                                 name=path.name, p2=' / '.join(CODE_NAMES[:3]), p3=' / '.join(NAME_NAMES[:3]),
                                 p4=', '.join(frame.columns)))
    out = pd.DataFrame({"code": as_text(frame[code].str.strip()), "name": as_text(frame[name]),
                        "parent": as_text(frame[parent]) if parent else None})
    problems = []
    for r, (c, n, p) in enumerate(zip(out["code"], out["name"], out["parent"], strict=True), start=2):
        if c is None or not (is_code(c, 9) or is_code(c, 12)):
            problems.append(f"line {r}: code {c!r} is not a 9-digit street or 12-digit community code")
        elif n is None:
            problems.append(f"line {r}: code {c} has no name")
        elif p is not None and p.isdigit() and not c.startswith(p):
            problems.append(f"line {r}: code {c} does not lie under its parent {p}")
    repeated = out["code"][out["code"].notna() & out["code"].duplicated()]
    if len(repeated):
        problems.append("codes repeated in the table: " + ", ".join(sorted(set(repeated))[:20]))
    if problems:
        raise CodeTableRefused(problems)
    return out


def _match(result: CodeTableResult, level: str, provisional: pd.DataFrame, rows: pd.DataFrame,
           suffixes: tuple[str, ...]) -> dict[str, str]:
    """Provisional ``code name group`` to table ``code name group`` by name within the group."""
    found = naming.match_names(provisional["name"], rows[["code", "name", "group"]], suffixes,
                               group=provisional["group"])
    out: dict[str, str] = {}
    for code, name, group, hit in zip(provisional["code"], provisional["name"], provisional["group"],
                                      found.codes, strict=True):
        if hit is not None:
            out[code] = hit
            continue
        key = naming.normalise(name)
        if key in found.ambiguous:
            result.ambiguous.append({"level": level, "code": code, "name": name,
                                     "candidates": found.ambiguous[key]})
        else:
            result.unmatched_provisional.append({"level": level, "code": code, "name": name, "parent": group})
    # one table row may not take two provisional features
    taken = pd.Series(list(out.values()), dtype=object)
    twice = set(taken[taken.duplicated()])
    for old in [o for o, n in out.items() if n in twice]:
        result.ambiguous.append({"level": level, "code": old, "candidates": [out.pop(old)],
                                 "name": provisional.set_index("code").loc[old, "name"],
                                 "reason": "another provisional feature has the same name"})
    name_of = dict(zip(rows["code"], rows["name"], strict=True))
    for old, new in out.items():
        result.matched.append({"level": level, "old": old, "new": new, "name": name_of[new]})
    return out


def plan_code_table(conn: Connection, table: pd.DataFrame) -> CodeTableResult:
    """Work out, without writing, what applying ``table`` would change."""
    result = CodeTableResult()
    streets = pd.DataFrame(conn.execute(select(Street.code, Street.name, Street.district_code,
                                               Street.provisional)).all(),
                           columns=["code", "name", "district_code", "provisional"])
    communities = pd.DataFrame(conn.execute(select(Community.code, Community.name, Community.street_code,
                                                   Community.provisional)).all(),
                               columns=["code", "name", "street_code", "provisional"])
    stored = set(streets["code"]) | set(communities["code"])
    rows = table[~table["code"].isin(stored)]
    result.already_official = int(table["code"].isin(stored).sum())
    street_rows = rows[rows["code"].str.len() == 9].assign(group=lambda f: f["code"].str[:6])
    provisional_streets = streets[streets["provisional"].astype(bool)]
    provisional_streets = provisional_streets.assign(group=provisional_streets["district_code"])
    result.streets = _match(result, "street", provisional_streets, street_rows, naming.STREET_SUFFIXES)
    community_rows = rows[rows["code"].str.len() == 12].assign(group=lambda f: f["code"].str[:9])
    mine = communities[communities["provisional"].astype(bool)]
    mine = mine.assign(group=[result.streets.get(s, s) for s in mine["street_code"]])
    matched = _match(result, "community", mine, community_rows, naming.COMMUNITY_SUFFIXES)
    result.communities = dict(matched)
    # provisional communities of a street that got its code keep their sequence under it
    for code, street in zip(communities["code"], communities["street_code"], strict=True):
        if street in result.streets and code not in result.communities:
            result.communities[code] = result.streets[street] + code[9:]
    used = set(result.streets.values()) | set(result.communities.values())
    result.unmatched_rows = [{"code": c, "name": n} for c, n in zip(rows["code"], rows["name"], strict=True)
                             if c not in used]
    return result


def _check(conn: Connection, result: CodeTableResult) -> None:
    problems = []
    for model, mapping in ((Street, result.streets), (Community, result.communities)):
        new, old = set(mapping.values()), set(mapping)
        if new & old:
            problems.append(f"codes {', '.join(sorted(new & old)[:10])} would be both given and taken away: "
                            "apply the table in two steps")
        clash = set(conn.execute(select(model.code).where(model.code.in_(sorted(new)))).scalars()) - old
        if clash:
            problems.append(f"codes {', '.join(sorted(clash)[:10])} already belong to other features")
    history = set(conn.execute(select(CommunityHistory.code).where(
        CommunityHistory.code.in_(sorted(result.communities.values())))).scalars())
    retired = history - set(result.communities)
    if retired:
        problems.append(f"codes {', '.join(sorted(retired)[:10])} were used by communities now retired")
    if problems:
        raise CodeTableRefused(problems)


def _rename(conn: Connection, column, mapping: dict[str, str], **also) -> None:
    """``column = new where column = old`` for every pair of ``mapping`` (executemany)."""
    if not mapping:
        return
    table = column.table
    stmt = update(table).where(column == bindparam("old_value")).values(
        {column.key: bindparam("new_value"), **{k: bindparam(k) for k in also}})
    conn.execute(stmt, [{"old_value": o, "new_value": n, **{k: f(o, n) for k, f in also.items()}}
                        for o, n in mapping.items()])


def _reprefix(conn: Connection, column, mapping: dict[str, str]) -> None:
    """Codes that start with an old prefix start with the new one (a unit's with its street's)."""
    if not mapping:
        return
    width = len(next(iter(mapping)))
    table = column.table
    stmt = update(table).where(column.like(bindparam("pattern"))).values(
        {column.key: bindparam("prefix", type_=String) + func.substr(column, width + 1)})
    conn.execute(stmt, [{"pattern": f"{o}%", "prefix": n} for o, n in mapping.items()])


def _write(conn: Connection, result: CodeTableResult) -> None:
    streets, communities = result.streets, result.communities
    official = {m["old"] for m in result.matched if m["level"] == "community"}
    _rename(conn, Street.__table__.c.code, streets, provisional=lambda o, n: False)
    _rename(conn, Community.__table__.c.code, communities, street_code=lambda o, n: n[:9],
            provisional=lambda o, n: o not in official)
    _rename(conn, CommunityHistory.__table__.c.code, communities, street_code=lambda o, n: n[:9])
    unit = Unit.__table__
    _rename(conn, unit.c.community_code, communities)
    _rename(conn, unit.c.street_code, streets)
    _reprefix(conn, unit.c.code, streets)
    adjacency = UnitAdjacency.__table__
    _reprefix(conn, adjacency.c.unit_a, streets)
    _reprefix(conn, adjacency.c.unit_b, streets)
    if streets:  # pairs are kept with unit_a < unit_b
        conn.execute(update(adjacency).where(adjacency.c.unit_a > adjacency.c.unit_b)
                     .values(unit_a=adjacency.c.unit_b, unit_b=adjacency.c.unit_a))
    _reprefix(conn, Building.__table__.c.unit_code, streets)
    _reprefix(conn, PlanAssignment.__table__.c.unit_code, streets)
    _rename(conn, PlanAssignment.__table__.c.community_code, communities)
    _reprefix(conn, GridCell.__table__.c.code, communities)
    _rename(conn, GridCell.__table__.c.community_code, communities)
    incident = Incident.__table__
    _reprefix(conn, incident.c.grid_code, communities)
    if "community_code" in incident.c:
        _rename(conn, incident.c.community_code, communities)
        _rename(conn, incident.c.street_code, streets)
    _rename(conn, Facility.__table__.c.community_code, communities)
    for model in (User, ApiToken):  # scopes are cell, community or street codes
        _reprefix(conn, model.__table__.c.scope_code, communities)
        _reprefix(conn, model.__table__.c.scope_code, streets)
    plans = Plan.__table__
    stored = conn.execute(select(plans.c.id, plans.c.streets).where(plans.c.streets.isnot(None))).all()
    for plan_id, listed in stored:
        renamed = [streets.get(s, s) for s in listed or []]
        if renamed != listed:
            conn.execute(update(plans).where(plans.c.id == plan_id).values(streets=renamed))


def apply_code_table(engine: Engine, path: str | Path, *, actor: str = "cli",
                     dry_run: bool = False) -> CodeTableResult:
    """Replace provisional codes by the official ones of the table at ``path``, everywhere, in one
    transaction (nothing when ``dry_run``). Raises :class:`CodeTableRefused` on a malformed table or
    a code that is already taken."""
    table = read_code_table(path)
    with engine.begin() as conn:
        # the boundary counters' lock first, as every boundary writer takes it (one lock order)
        lock_revision(conn)
        result = plan_code_table(conn, table)
        _check(conn, result)
        if dry_run or not (result.streets or result.communities):
            return result
        _write(conn, result)
        result.revision = raise_revision(
            conn, "codes:apply", actor=actor,
            streets=set(result.streets) | set(result.streets.values())
            | {c[:9] for c in result.communities} | {c[:9] for c in result.communities.values()},
            communities=set(result.communities) | set(result.communities.values()))
        conn.execute(insert(AuditLog.__table__).values(
            at=datetime.now(), actor=actor, action="codes:apply", layer="communities",
            detail={"source": Path(path).name, "streets": result.streets,
                    "communities": result.communities}))
    return result


__all__ = ["CodeTableRefused", "CodeTableResult", "apply_code_table", "plan_code_table", "read_code_table"]
