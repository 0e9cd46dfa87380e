"""Running the service: ``init-db``, ``backup``, ``restore``, ``worker``, and the accounts and API
tokens (``user add|disable|enable``, ``token add|revoke``)."""

from __future__ import annotations

from pathlib import Path

import click
from flask import current_app

from geodata.accounts import ROLES, parse_expiry
from geodata.backup import backup, restore
from geodata.i18n import N_, _, speaks_english
from layers import administration
from webmap.auth import add_token, add_user
from webmap.commands import command, group, ready
from webmap.extensions import engine
from webmap.i18n import role_names


@command("init-db", help=N_(
    "Create or upgrade the database schema and seed the default settings."),
    refused=N_("init-db refused: {reason}"))
@click.option("--partition-by-district", "partition", is_flag=True, help=N_(
    "PostgreSQL: make the large tables partitioned by district (a fresh database; see docs/scale.md)"))
@click.option("--distribute-by-district", "distribute", is_flag=True, help=N_(
    "Citus coordinator: distribute the large tables by district over its workers (a fresh database; "
    "see docs/scale.md)"))
def init_db(partition: bool, distribute: bool) -> None:
    from geodata.citus import distribute_by_district
    from geodata.errors import Refused
    from geodata.partitions import partition_by_district, refuse_sqlite

    if partition and distribute:
        raise Refused(_("--partition-by-district and --distribute-by-district are two ways of splitting by "
                        "district: choose one (on Citus, the shards split it)"))
    if partition or distribute:
        refuse_sqlite(engine())  # before anything is made
    eng = ready()
    if partition:
        done = partition_by_district(eng)
        click.echo(_("{tables} tables partitioned by district ({districts} districts with their own "
                     "partition)", tables=done["tables"], districts=len(done["districts"])))
    if distribute:
        done = distribute_by_district(eng)
        click.echo(_("{tables} tables distributed by district and {reference} reference tables over "
                     "{workers} Citus workers", tables=len(done["tables"]), reference=len(done["reference"]),
                     workers=len(done["workers"])))
    click.echo(_("database ready"))


@command("partition-districts", help=N_(
    "PostgreSQL partitioned by district: give every district (of the code table, or with rows in the DEFAULT "
    "partitions) its own partition, moving its rows there."), refused=N_("partitioning refused: {reason}"))
def partition_districts() -> None:
    from geodata.partitions import split_districts

    done = split_districts(ready())
    click.echo(_("districts given their own partitions: {codes}", codes=", ".join(done) or "-"))


@command("backup", help=N_(
    "Back up the whole database (every layer, plan, case, history row, account and setting) while the app"
    " keeps serving."), refused=N_("backup failed: {reason}"))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help=N_("the backup file (SpatiaLite: a SQLite file; PostGIS: a pg_dump -Fc archive)"))
def backup_command(output: Path) -> None:
    done = backup(current_app.config["DATABASE_URL"], output)
    click.echo(_("{kind} backup written to {path} ({bytes} bytes)", kind=done["kind"], path=done["path"],
                 bytes=f"{done['bytes']:,}"))


@command("restore", help=N_(
    "Restore the database from the backup PATH (made by ``backup`` from a database of the same kind). A "
    "damaged file, a file of the other kind, one whose schema is not gridplan's (a function, trigger, "
    "view, rule or policy of someone else's), or a database in use without --replace is refused and "
    "nothing is written."), refused=N_("restore refused: {reason}"))
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--replace", is_flag=True, help=N_("replace a database that holds data already"))
@click.option("--role", help=N_("PostGIS: create everything as this role (no superuser rights), not as "
                                "the user of DATABASE_URL"))
def restore_command(path: Path, replace: bool, role: str | None) -> None:
    done = restore(path, current_app.config["DATABASE_URL"], replace=replace, role=role)
    ready()  # a backup from an older version gets the newer migrations
    click.echo(_("{kind} database restored from {path}", kind=done["kind"], path=done["path"]))


@command("worker", help=N_(
    "Run background jobs (city-wide plans) as they are queued."))
@click.option("--once", is_flag=True, help=N_("run the queued jobs, then stop"))
def worker_command(once: bool) -> None:
    from layers.worker import work

    eng = ready()
    click.echo(_("worker: waiting for jobs") if not once else _("worker: running queued jobs"))
    work(eng, once=once)


user = group("user", help=N_("Accounts: admin, planner, supervisor (scoped), viewer, dispatcher, handler "
                             "(of a department)."))
token = group("token", help=N_("API tokens for other departments' systems."))
ROLE = click.Choice(ROLES)


@command("add", help=N_(
    "Add the account NAME, or change its role, scope and password."), group=user, also=(ValueError,))
@click.argument("name")
@click.option("--role", type=ROLE, required=True)
@click.option("--scope", help=N_("supervisors: their grid cell, community or street code"))
@click.option("--password", help=N_("asked for when not given"))
@click.option("--department", help=N_("handlers: the code of their department"))
def user_add(name: str, role: str, scope: str | None, password: str | None, department: str | None) -> None:
    ready()
    if password is None:
        password = click.prompt(_("password"), hide_input=True, confirmation_prompt=True)
    if len(password) < 8:
        raise click.ClickException(_("a password needs at least {n} characters", n=8))
    account = add_user(name, role, password, scope, department=department)
    # the role by its key in English (what --role takes), by its name in Chinese
    named = account.role if speaks_english() else role_names().get(account.role, account.role)
    click.echo(_("account {name}: {role}, scope {scope}", name=account.name, role=named, scope=scope)
               if scope else _("account {name}: {role}", name=account.name, role=named))


@command("add", help=N_(
    "Create an API token NAME and print it (it is shown only this once)."), group=token, also=(ValueError,))
@click.argument("name")
@click.option("--role", type=ROLE, default="viewer", show_default=True)
@click.option("--scope", help=N_("limit the token to this grid cell, community or street"))
@click.option("--expires", help=N_("valid through this day (YYYY-MM-DD) or until this time "
                                   "(YYYY-MM-DDTHH:MM); default: until revoked"))
def token_add(name: str, role: str, scope: str | None, expires: str | None) -> None:
    ready()
    click.echo(add_token(name, role, scope, expires_at=parse_expiry(expires)))


def _set_disabled(name: str, disabled: bool) -> None:
    ready()
    account = administration.update_user(engine(), actor="cli", name=name, disabled=disabled)
    click.echo(_("account {name}: disabled", name=account["name"]) if account["disabled"]
               else _("account {name}: enabled", name=account["name"]))


@command("disable", help=N_(
    "Disable the account NAME: it cannot sign in, and its sessions stop working."),
         group=user, also=(ValueError,))
@click.argument("name")
def user_disable(name: str) -> None:
    _set_disabled(name, True)


@command("enable", help=N_(
    "Enable the account NAME again."), group=user, also=(ValueError,))
@click.argument("name")
def user_enable(name: str) -> None:
    _set_disabled(name, False)


@command("revoke", help=N_(
    "Revoke the API token NAME: it stops working at once."), group=token, also=(ValueError,))
@click.argument("name")
def token_revoke(name: str) -> None:
    ready()
    revoked = administration.revoke_token(engine(), actor="cli", name=name)
    click.echo(_("token {name} revoked", name=revoked["name"]))


COMMANDS = (init_db, partition_districts, backup_command, restore_command, worker_command, user, token)
