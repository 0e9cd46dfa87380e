"""Command line: ``flask --app webmap init-db | demo | import | export``.

Each command shows a progress bar on long work and exits non-zero with a one-line message
naming the problem when it fails.
"""

from __future__ import annotations

import functools
import json
import secrets
import sys
from collections import Counter
from collections.abc import Callable
from datetime import date
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext

from geodata import incident_rows
from geodata.accounts import ROLES, Account, find_user, parse_expiry, revoke_token, update_user
from geodata.backup import BackupRefused, backup, restore
from geodata.catalog import LAYERS
from geodata.db import DATABASE_ERRORS, database_trouble
from geodata.errors import GridplanError, NotFound
from geodata.exporter import ENCODINGS, FORMATS, ExportError, export_layer
from geodata.i18n import N_, _
from geodata.migrate import upgrade
from geodata.standards import seed_settings
from geodata.store import community_codes_ever, count_layer, read_layer
from layers.incidents.loop import OPEN, assign_cells
from layers.onboarding.boundaries import stored_topology
from layers.onboarding.imports import MODES, UNMAPPED, ImportRefused, import_layer, parse_values
from layers.plans.communities import Bounds, bounds
from layers.plans.engine import Rules, make_plan
from layers.plans.files import export_plan, units_from_database, units_from_file
from layers.plans.partition import UnitGraph
from layers.sample_data.demo import generate, seed_departments, write_demo
from webmap.auth import add_token, add_user
from webmap.extensions import engine

LAYER = click.Choice(list(LAYERS))


def database_errors(command: Callable) -> Callable:
    """The database down, busy, its disk full: the command ends with one line saying which and
    a non-zero exit, not a traceback (the transaction was rolled back)."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except DATABASE_ERRORS as exc:
            raise click.ClickException(str(database_trouble(exc))) from None

    return run


def _ready():
    """The app's engine with the newest schema and default settings (idempotent, fast)."""
    eng = engine()
    upgrade(eng)
    with eng.begin() as conn:
        seed_settings(conn)
    return eng


@click.command("init-db")
@with_appcontext
@database_errors
def init_db() -> None:
    """Create or upgrade the database schema and seed the default settings."""
    _ready()
    click.echo(_("database ready"))


@click.command("demo")
@with_appcontext
@click.option("--units", default=4000, show_default=True, help="planning units (200000 ≈ a city)")
@click.option("--seed", default=1, show_default=True, help="random seed")
@click.option("--reference", type=click.DateTime(["%Y-%m-%d"]), default="2026-11-01",
              show_default=True, help="last day of the year of incidents")
@click.option("--if-empty", is_flag=True, help="only when the database holds no units yet")
@database_errors
def demo(units: int, seed: int, reference, if_empty: bool) -> None:
    """Replace every layer with a generated demo district."""
    eng = _ready()
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
    counts = ", ".join(f"{len(v):,} {k}" for k, v in data.layers.items())
    click.echo(_("demo written: {counts}", counts=counts))


def _mapping(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        src, sep, dst = pair.partition("=")
        if not sep or not src or not dst:
            raise click.BadParameter(_("{pair} is not src=dst", pair=repr(pair)), param_hint="--map")
        out[src] = dst
    return out


@click.command("import")
@with_appcontext
@click.argument("layer", type=LAYER)
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--mode", type=click.Choice(MODES), default="append", show_default=True)
@click.option("--crs", help="source CRS over the file's own: EPSG:4490, EPSG:4326, GCJ02 …")
@click.option("--map", "mapping", multiple=True, metavar="SRC=DST", help="rename a source field")
@click.option("--district", help="streets and communities without codes lie in this district (6 digits): "
              "they get provisional codes under it")
@click.option("--values", "values", multiple=True, metavar="FIELD:SRC=DST,…|FIELD=TABLE.csv",
              help="map the source's values of a field to gridplan's (e.g. 'kind:幼儿园=kindergarten')")
@click.option("--unmapped", type=click.Choice(UNMAPPED), default="refuse", show_default=True,
              help="rows whose value has no mapping: refuse the file, or leave them out")
@click.option("--layer", "source_layer", metavar="NAME",
              help="the layer of a GeoPackage holding several to import (without it such a file is "
                   "refused, its layers listed)")
@click.option("--force", is_flag=True,
              help="import units exported before later boundary changes (an adoption) although the file "
                   "would undo them")
@database_errors
def import_command(layer: str, path: Path, mode: str, crs: str | None, mapping: tuple[str, ...],
                   district: str | None, values: tuple[str, ...], unmapped: str, source_layer: str | None,
                   force: bool) -> None:
    """Import LAYER from PATH (shapefile zip, .gpkg, .geojson or .csv with lon/lat)."""
    eng = _ready()
    with click.progressbar(length=1, label=_("importing {layer}", layer=layer)) as bar:

        def tick(done: int, total: int) -> None:
            bar.length = total  # known once the file has been read and checked
            bar.update(done - bar.pos)

        try:
            report = import_layer(eng, layer, path, mode=mode, crs=crs, mapping=_mapping(mapping),
                                  progress=tick, district=district, values=parse_values(values),
                                  unmapped=unmapped, source_layer=source_layer, force=force,
                                  max_unzipped_bytes=current_app.config["MAX_UNZIPPED_BYTES"])
        except ImportRefused as exc:
            raise click.ClickException(_("import refused, nothing written: {reason}", reason=exc)) from None
    click.echo(report.summary())
    if layer == "communities":  # boundaries as they are: reported, not refused
        found = stored_topology(eng).summary()
        click.echo("  " + _("topology: {overlaps} overlaps ({overlap_m2} m²), {gaps} gaps inside streets "
                             "({gap_m2} m²), {outside} parts outside their street ({outside_m2} m²) — "
                             "`topology communities` lists them, `clean communities` resolves the small ones",
                             overlaps=found["overlaps"], overlap_m2=f"{found['overlap_m2']:,.0f}",
                             gaps=found["gaps"],
                             gap_m2=f"{found['gap_m2']:,.0f}", outside=found["outside_street"],
                             outside_m2=f"{found['outside_street_m2']:,.0f}"))


@click.command("export")
@with_appcontext
@click.argument("layer", type=LAYER)
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True)
@click.option("--encoding", type=click.Choice(list(ENCODINGS)), default="utf-8", show_default=True,
              help="text encoding of shapefile and CSV")
@click.option("--crs", help="EPSG:4326 (default), EPSG:4490 or a projected EPSG code")
@click.option("--street", help="only this street (9-digit code)")
@click.option("--community", help="only this community (12-digit code)")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
def export_command(layer: str, fmt: str, encoding: str, crs: str | None, street: str | None,
                   community: str | None, output: Path) -> None:
    """Export LAYER as a shapefile zip, GeoPackage, GeoJSON or CSV."""
    eng = _ready()
    try:
        report = export_layer(eng, layer, fmt, output, encoding=encoding, crs=crs, street=street,
                              community=community)
    except (ExportError, ValueError) as exc:
        raise click.ClickException(_("export failed: {reason}", reason=exc)) from None
    click.echo(report.summary())


@click.command("backup")
@with_appcontext
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="the backup file (SpatiaLite: a SQLite file; PostGIS: a pg_dump -Fc archive)")
def backup_command(output: Path) -> None:
    """Back up the whole database (every layer, plan, case, history row, account and setting)
    while the app keeps serving."""
    try:
        done = backup(current_app.config["DATABASE_URL"], output)
    except BackupRefused as exc:
        raise click.ClickException(f"backup failed: {exc}") from None
    click.echo(f"{done['kind']} backup written to {done['path']} ({done['bytes']:,} bytes)")


@click.command("restore")
@with_appcontext
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--replace", is_flag=True, help="replace a database that holds data already")
@click.option("--role", help="PostGIS: create everything as this role (no superuser rights), "
              "not as the user of DATABASE_URL")
@database_errors
def restore_command(path: Path, replace: bool, role: str | None) -> None:
    """Restore the database from the backup PATH (made by ``backup`` from a database of the same
    kind). A damaged file, a file of the other kind, one whose schema is not gridplan's (a
    function, trigger, view, rule or policy of someone else's), or a database in use without
    --replace is refused and nothing is written."""
    try:
        done = restore(path, current_app.config["DATABASE_URL"], replace=replace, role=role)
    except BackupRefused as exc:
        raise click.ClickException(f"restore refused: {exc}") from None
    _ready()  # a backup from an older version gets the newer migrations
    click.echo(f"{done['kind']} database restored from {done['path']}")


user = AppGroup("user", help="Accounts: admin, planner, supervisor (scoped), viewer, dispatcher, handler "
                                  "(of a department).")
token = AppGroup("token", help="API tokens for other departments' systems.")
ROLE = click.Choice(ROLES)


@user.command("add")
@click.argument("name")
@click.option("--role", type=ROLE, required=True)
@click.option("--scope", help="supervisors: their grid cell, community or street code")
@click.option("--password", help="asked for when not given")
@click.option("--department", help="handlers: the code of their department")
def user_add(name: str, role: str, scope: str | None, password: str | None, department: str | None) -> None:
    """Add the account NAME, or change its role, scope and password."""
    _ready()
    if password is None:
        password = click.prompt(_("password"), hide_input=True, confirmation_prompt=True)
    if len(password) < 8:
        raise click.ClickException(_("a password needs at least {n} characters", n=8))
    try:
        account = add_user(name, role, password, scope, department=department)
    except (ValueError, GridplanError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(_("account {name}: {role}, scope {scope}",
                 name=account.name, role=account.role, scope=scope) if scope
               else _("account {name}: {role}", name=account.name, role=account.role))


@token.command("add")
@click.argument("name")
@click.option("--role", type=ROLE, default="viewer", show_default=True)
@click.option("--scope", help="limit the token to this grid cell, community or street")
@click.option("--expires", help="valid through this day (YYYY-MM-DD) or until this time (YYYY-MM-DDTHH:MM); "
                                "default: until revoked")
def token_add(name: str, role: str, scope: str | None, expires: str | None) -> None:
    """Create an API token NAME and print it (it is shown only this once)."""
    _ready()
    try:
        click.echo(add_token(name, role, scope, expires_at=parse_expiry(expires)))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


def _set_disabled(name: str, disabled: bool) -> None:
    _ready()
    try:
        account = update_user(engine(), actor="cli", name=name, disabled=disabled)
    except (ValueError, NotFound) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(_("account {name}: disabled", name=account["name"]) if account["disabled"]
               else _("account {name}: enabled", name=account["name"]))


@user.command("disable")
@click.argument("name")
def user_disable(name: str) -> None:
    """Disable the account NAME: it cannot sign in, and its sessions stop working."""
    _set_disabled(name, True)


@user.command("enable")
@click.argument("name")
def user_enable(name: str) -> None:
    """Enable the account NAME again."""
    _set_disabled(name, False)


@token.command("revoke")
@click.argument("name")
def token_revoke(name: str) -> None:
    """Revoke the API token NAME: it stops working at once."""
    _ready()
    try:
        revoked = revoke_token(engine(), actor="cli", name=name)
    except (ValueError, NotFound) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(_("token {name} revoked", name=revoked["name"]))


@click.command("demo-accounts")
@with_appcontext
def demo_accounts() -> None:
    """Create one demo account per role (once) and print their logins."""
    eng = _ready()
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
        for name, role, kind in wanted:
            own = {"community": scope, "cell": cell}.get(kind)
            department = kind if role == "handler" else None
            password = secrets.token_urlsafe(9)
            add_user(name, role, password, own, department=department)
            where = f", community {own}" if kind == "community" else f", cell {own}" if kind == "cell" \
                else f", department {department}" if department else ""
            lines.append(f"{name:<11} {password}  {_(DEMO_KINDS[name])} ({role}{where})")
        logins.write_text("\n".join(lines) + "\n", encoding="utf-8")
        logins.chmod(0o600)
    held = _demo_supervisor_cells(eng)
    click.echo(_("demo accounts (name, password):"))
    click.echo(logins.read_text(encoding="utf-8"), nl=False)
    click.echo(_("departments:"))
    for d in departments:
        click.echo(f"  {d['code']:<4} {d['name']}  {', '.join(d['categories'])}")
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


@click.command("plan")
@click.option("--min", "minimum", type=int, default=None, help="households, at least (default: settings)")
@click.option("--max", "maximum", type=int, default=None, help="households, at most (default: settings)")
@click.option("--target", type=int, help="preferred households per community")
@click.option("--street", help="only this street (9-digit code)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--fresh", is_flag=True, help="redraw every community, not only those breaking the rules")
@click.option("--units", "units_path", type=click.Path(path_type=Path),
              help="plan units from this file instead of the database")
@click.option("--map", "mapping", multiple=True, metavar="SRC=DST", help="rename a column of --units")
@click.option("--crs", help="CRS of --units when its file does not say")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help=".gpkg or .zip (shapefiles); needed unless --all")
@click.option("--all", "every_district", is_flag=True,
              help="plan every district of the database, one task per district, into a draft plan")
@click.option("--cluster", metavar="tcp://HOST:8786",
              help="with --all: the dask scheduler (default GRIDPLAN_DASK_SCHEDULER, else this machine)")
@click.option("--workers", type=click.IntRange(min=1),
              help="with --all and no cluster: processes (default: cores)")
@click.option("--name", "plan_name", help="with --all: the plan's name")
@with_appcontext
def plan_command(minimum, maximum, target, street, seed, fresh, units_path, mapping, crs, output,
                 every_district, cluster, workers, plan_name) -> None:
    """Make an automatic plan; print its scores as one JSON object on stdout."""
    if every_district:
        if street or units_path:
            raise click.ClickException(_("--all plans every district of the database: leave out --street "
                                         "and --units"))
        _plan_every_district(minimum, maximum, target, seed, fresh, cluster, workers, plan_name)
        return
    if output is None:
        raise click.ClickException(_("name the plan's file with -o (.gpkg or .zip), or plan every district "
                                     "into the database with --all"))
    retired: set[str] = set()
    if units_path is None:
        eng = _ready()
        limits = bounds(eng)
        units, adjacency = units_from_database(eng, street)
        retired = community_codes_ever(eng)
    else:
        limits = Bounds()
        try:
            units = units_from_file(units_path, _mapping(mapping), crs)
        except ImportRefused as exc:
            raise click.ClickException(_("cannot read the units: {reason}", reason=exc)) from None
        if street:
            units = units[units["street_code"] == street]
        adjacency = None
    if units.empty:
        raise click.ClickException(_("no units to plan in street {street}", street=street) if street
                                   else _("no units to plan"))
    if output.suffix.lower() not in (".gpkg", ".zip"):
        raise click.ClickException(_("{file}: write the plan to a .gpkg or a .zip", file=output.name))
    try:
        rules = Rules.from_params({"minimum": minimum, "maximum": maximum, "target": target, "fresh": fresh,
                                   "seed": seed}, limits.minimum, limits.maximum)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    graph = UnitGraph.from_units(units, adjacency)
    streets = sorted(set(graph.street))
    with click.progressbar(length=len(streets), label=_("planning"), file=sys.stderr) as bar:
        result = make_plan(graph, rules, retired=retired, progress=lambda done, _total: bar.update(1))
    export_plan(result, units, output)
    click.echo(json.dumps(result.scores(), ensure_ascii=False))


@database_errors
def _plan_every_district(minimum, maximum, target, seed, fresh, cluster, workers, plan_name) -> None:
    """``plan --all``: every district as a task (:mod:`layers.plans.scale`), stored as a draft plan;
    skipped districts named on stderr, the plan's id and scores as JSON on stdout."""
    from layers.plans.scale import ClusterUnavailable, DistrictFailed, plan_all

    eng = _ready()
    name = plan_name or _("plan of every district, {day}", day=date.today().isoformat())
    with click.progressbar(length=1, label=_("planning districts"), file=sys.stderr) as bar:
        def progress(done: int, total: int, outcome) -> None:
            bar.length = total
            bar.update(1)
            if outcome.skipped:
                click.echo(_("district {district} has no units: skipped", district=outcome.district),
                           err=True)

        try:
            made = plan_all(eng, name, "cli", minimum=minimum, maximum=maximum, target=target, fresh=fresh,
                            seed=seed, cluster=cluster, workers=workers, progress=progress)
        except (ClusterUnavailable, DistrictFailed, ValueError, NotFound) as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(made.summary(), ensure_ascii=False))


@click.command("worker")
@click.option("--once", is_flag=True, help="run the queued jobs, then stop")
@with_appcontext
@database_errors
def worker_command(once: bool) -> None:
    """Run background jobs (city-wide plans) as they are queued."""
    from layers.worker import work

    eng = _ready()
    click.echo(_("worker: waiting for jobs") if not once else _("worker: running queued jobs"))
    work(eng, once=once)


def register(app: Flask) -> None:
    for command in (init_db, demo, import_command, export_command, user, token, demo_accounts,
                    plan_command, worker_command, backup_command, restore_command):
        app.cli.add_command(command)
