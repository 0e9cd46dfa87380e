"""Sample data: ``demo`` (a generated district: roads, households, communities, facilities, grid
cells, a year of incidents) and ``demo-accounts`` (one account of each role to try it with)."""

from __future__ import annotations

import secrets
from collections import Counter
from datetime import date
from pathlib import Path

import click
from flask import current_app

from geodata import incident_rows
from geodata.accounts import Account, find_user
from geodata.i18n import N_, _, speaks_english
from geodata.store import count_layer, read_layer
from layers.incidents.loop import OPEN, assign_cells
from layers.sample_data.demo import generate, seed_departments, write_demo
from webmap.auth import add_user
from webmap.commands import command, ready
from webmap.i18n import role_names


@command("demo", help=N_(
    "Replace every layer with a generated demo district."))
@click.option("--units", default=4000, show_default=True, help=N_("planning units (200000 ≈ a city)"))
@click.option("--seed", default=1, show_default=True, help=N_("random seed"))
@click.option("--reference", type=click.DateTime(["%Y-%m-%d"]), default="2026-11-01",
              show_default=True, help=N_("last day of the year of incidents"))
@click.option("--if-empty", is_flag=True, help=N_("only when the database holds no units yet"))
def demo(units: int, seed: int, reference, if_empty: bool) -> None:
    eng = ready()
    if if_empty:
        if count_layer(eng, "units"):
            click.echo(_("demo data already present"))
            return
    steps = ["road network and blocks", "river", "households", "blind spot", "communities",
             "streets, communities, district", "facilities", "grid cells", "roads", "incidents"]
    with click.progressbar(length=len(steps), label=_("generating")) as bar:
        data = generate(units, seed, reference.date() if reference else date(2026, 11, 1),
                        progress=lambda _msg: bar.update(1))
    total = sum(len(v) for v in data.layers.values())
    with click.progressbar(length=total, label=_("writing")) as bar:
        last: dict[str, int] = {}

        def tick(layer: str, done: int, _total: int) -> None:
            bar.update(done - last.get(layer, 0))
            last[layer] = done

        write_demo(eng, data, progress=tick)
    counts = (", " if speaks_english() else "、").join(
        _(LAYER_COUNTS.get(k, "{n} " + k), n=f"{len(v):,}") for k, v in data.layers.items())
    click.echo(_("demo written: {counts}", counts=counts))


#: how many features of a layer the demo wrote, as a person reads it
LAYER_COUNTS = {"districts": N_("{n} districts"), "streets": N_("{n} streets"),
                "communities": N_("{n} communities"), "units": N_("{n} units"),
                "buildings": N_("{n} buildings"), "facilities": N_("{n} facilities"),
                "grid_cells": N_("{n} grid_cells"), "roads": N_("{n} roads"),
                "incidents": N_("{n} incidents")}


@command("demo-accounts", help=N_(
    "Create one demo account per role (once) and print their logins."))
def demo_accounts() -> None:
    eng = ready()
    departments = seed_departments(eng)
    logins = Path(current_app.instance_path) / "demo_accounts.txt"
    listed = [line.split()[0] for line in logins.read_text(encoding="utf-8").splitlines()] \
        if logins.exists() else []
    scope = _demo_community(eng)
    cell = _demo_cell(eng, scope)
    codes = {d["code"] for d in departments}
    # one account of each kind that the data allows (no cells yet: no supervisor)
    wanted = [(name, role, kind) for name, role, kind in DEMO_ACCOUNTS
              if not (role == "supervisor" and {"community": scope, "cell": cell}.get(kind) is None)
              and not (role == "handler" and kind not in codes)]
    if not listed or any(n not in listed for n, *_rest in wanted) \
            or any(find_user(eng, name=n) is None for n in listed):
        lines = []
        place = _place_names(eng, scope, cell)
        department_names = {d["code"]: d["name"] for d in departments}
        for name, role, kind in wanted:
            own = {"community": scope, "cell": cell}.get(kind)
            department = kind if role == "handler" else None
            password = secrets.token_urlsafe(9)
            add_user(name, role, password, own, department=department)
            # names beside codes: 青年社区 (420103003002), 区环境卫生管理站 (HW)
            where = _(", community {name} ({code})", name=place.get(own) or "—", code=own) \
                if kind == "community" \
                else _(", cell {name} ({code})", name=place.get(own) or "—", code=own) if kind == "cell" \
                else _(", department {name} ({code})", name=department_names.get(department) or "—",
                       code=department) if department else ""
            named = role if speaks_english() else role_names().get(role, role)
            lines.append(f"{name:<11} {password}  {_(DEMO_KINDS[name])} ({named}{where})")
        logins.write_text("\n".join(lines) + "\n", encoding="utf-8")
        logins.chmod(0o600)
    held = _demo_supervisor_cells(eng)
    click.echo(_("demo accounts (name, password):"))
    click.echo(logins.read_text(encoding="utf-8"), nl=False)
    click.echo(_("departments:"))
    categories = _category_names(eng)
    for d in departments:
        handled = ", ".join(f"{c} {categories.get(c) or ''}".strip() for c in d["categories"])
        click.echo(f"  {d['code']:<4} {d['name']}  {handled}")
    if held:
        click.echo(_("supervisor holds cells {cells}", cells=", ".join(held)))


#: the demo's accounts: name, role, and their community, cell or department (one of each kind)
DEMO_ACCOUNTS = (
    ("admin", "admin", None),
    ("planner", "planner", None),
    ("supervisor", "supervisor", "community"),
    ("inspector", "supervisor", "cell"),
    ("dispatcher", "dispatcher", None),
    ("handler", "handler", "HW"),
    ("viewer", "viewer", None),
)
DEMO_KINDS = {"admin": N_("administrator"), "planner": N_("planner"),
              "supervisor": N_("grid leader: reports, verifies, evaluates, chases up"),
              "inspector": N_("inspector: reports and verifies in one cell"),
              "dispatcher": N_("command centre: files, dispatches, chases up"),
              "handler": N_("department: handles the sanitation station's cases"),
              "viewer": N_("viewer")}


def _place_names(eng, community: str | None, cell: str | None) -> dict[str, str]:
    """The names of the demo supervisor's community and the demo inspector's cell (a cell: its
    community's name and its number), by code."""
    import pandas as pd

    from geodata.plan_rows import place_names
    from layers.incidents.rates import with_names

    names = dict(place_names(eng, [], [community] if community else [])[1])
    if cell:
        named = with_names(eng, "cell", pd.DataFrame({"code": [cell]}))
        names.update({c: n for c, n in zip(named["code"], named["name"], strict=True) if n})
    return names


def _category_names(eng) -> dict[str, str]:
    """The case categories' names in the command line's language, by code."""
    from geodata.i18n import in_language
    from layers.incidents.loop import categories

    return {k: in_language(v.get("name") or k) for k, v in categories(eng).items()}


def _demo_cell(eng, community: str | None) -> str | None:
    """A cell of the demo community for the demo 监督员."""
    if community is None:
        return None
    cells = read_layer(eng, "grid_cells", community=community)["code"].sort_values().tolist()
    return cells[0] if cells else None


def _demo_community(eng) -> str | None:
    """The community the demo supervisor looks after: the one whose cells hold the most open
    cases (so that ``/cases`` has work to show), else the first cell's; None without cells."""
    cells = read_layer(eng, "grid_cells", limit=1)
    if not len(cells):
        return None
    open_cases = incident_rows.list_incidents(eng, statuses=OPEN)
    counts = Counter(c["grid_code"][:12] for c in open_cases if c["grid_code"])
    return counts.most_common(1)[0][0] if counts else cells["code"].iloc[0][:12]


def _demo_supervisor_cells(eng) -> list[str]:
    """The demo supervisor holds the grid cells of their community, so that their map and
    ``/cases`` open on cells of their own. Only while they hold none: cells an administrator
    has since assigned or taken away are left as they are. Returns the cells they hold."""
    supervisor = find_user(eng, name="supervisor")
    if supervisor is None or supervisor.role != "supervisor" or not supervisor.scope_code:
        return []
    held = [a["cell_code"] for a in incident_rows.assignments(eng, user=supervisor.name)]
    if held:
        return held
    cells = read_layer(eng, "grid_cells", community=supervisor.scope_code)["code"].sort_values().tolist()
    if not cells:
        return []
    demo_admin = Account(id=0, name="demo-accounts", role="admin", scope_code=None)
    return [a["cell_code"] for a in assign_cells(eng, demo_admin, supervisor.name, cells)]


COMMANDS = (demo, demo_accounts)
