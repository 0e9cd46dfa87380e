"""The administrator's desk: users, API tokens, settings and standards, the audit log — pages
and their JSON API, for role admin only (403 for everyone else).

Administration needs a signed-in administrator: API tokens are for other departments' systems
and are refused here whatever their role. Every change goes through :mod:`geodata.accounts` or
:mod:`geodata.settings`, which record it in the audit log on the same transaction; refusals are
raised and answered as problem details by :mod:`webmap.errors`.
"""

from __future__ import annotations

import secrets
from datetime import datetime

from flask import (
    Blueprint,
    Response,
    current_app,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.security import generate_password_hash

from geodata import accounts, audit_words
from geodata import settings as settings_rows
from geodata.audit import AuditFilter, csv_lines, iter_rows, known_values, search
from geodata.errors import Forbidden, Refused
from geodata.i18n import N_, _, in_language
from geodata.standards import DEFAULT_SETTINGS
from layers import administration
from webmap import params
from webmap.auth import current_account, hash_token, require
from webmap.extensions import engine
from webmap.maps import BASEMAPS
from webmap.responses import json_answer as _json

bp = Blueprint("admin", __name__)

MIN_PASSWORD = 8
AUDIT_PAGE = 100
MAX_AUDIT_PAGE = 10_000
MAX_OFFSET = 10**12
BASEMAP_LABELS = {"none": N_("no base map"), "osm": "OpenStreetMap", "tianditu": N_("Tianditu"),
                  "gaode": N_("Gaode (GCJ-02)"), "local": N_("local tiles")}


@bp.before_request
def _signed_in_admin_only():
    """Tokens never administer, whatever their role (``require`` checks the role itself)."""
    account = current_account()
    if account is not None and account.via_token:
        raise Forbidden(_("administration needs a signed-in administrator, not an API token"))


def _text(data: dict, key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise Refused(_("{key} is text", key=key))
    return value.strip()


def _password(data: dict) -> str | None:
    password = data.get("password")
    if password in (None, ""):
        return None
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise Refused(_("a password needs at least {n} characters", n=MIN_PASSWORD))
    return generate_password_hash(password)


def _actor() -> str:
    return current_account().name


# --- pages --------------------------------------------------------------------------------------


def _page(template: str, tab: str, title: str, **context):
    return render_template(template, tab=tab, title=title, roles=accounts.ROLES, **context)


@bp.get("/admin")
@require("admin")
def home():
    return redirect(url_for("admin.users"))


@bp.get("/admin/users")
@require("admin")
def users():
    return _page("admin/users.html", "users", _("Users"))


@bp.get("/admin/tokens")
@require("admin")
def tokens():
    return _page("admin/tokens.html", "tokens", _("API tokens"))


@bp.get("/admin/departments")
@require("admin")
def departments_page():
    """处置部门: the departments cases are dispatched to, and a form to add or change one."""
    from geodata.departments import list_departments
    from layers.incidents.loop import categories

    catalogue = categories(engine())
    return _page("admin/departments.html", "departments", _("Departments"),
                 departments=list_departments(engine()),
                 categories={k: f'{in_language(v.get("name", k))} · {k}' for k, v in catalogue.items()})


@bp.get("/admin/settings")
@require("admin")
def settings():
    return _page("admin/settings.html", "settings", _("Settings and standards"))


@bp.get("/admin/audit")
@require("admin")
def audit_page():
    error = None
    try:
        f = AuditFilter.parse(request.args)
    except Refused as exc:
        error, f = str(exc), AuditFilter()
    offset = _offset(request.args.get("offset"))
    rows, total = search(engine(), f, limit=AUDIT_PAGE, offset=offset)
    query = f.query_string()
    pages = {"prev": max(0, offset - AUDIT_PAGE) if offset > 0 else None,
             "next": offset + AUDIT_PAGE if offset + AUDIT_PAGE < total else None}
    names = _audit_names(rows)
    page = _page("admin/audit.html", "audit", _("Audit log"), rows=rows, total=total, offset=offset,
                 filters=f, query=query, pages=pages, error=error, known=known_values(engine()),
                 show=lambda detail, action="": audit_words.describe(action, detail, names),
                 action_name=audit_words.action_name, actor_name=audit_words.actor_name,
                 layer_name=audit_words.layer_name,
                 object_name=lambda layer, code: _object_name(layer, code, names["users"]))
    return page, 400 if error else 200


def _audit_names(rows) -> dict[str, dict[str, str]]:
    """The names of the codes a page of the audit log shows: case categories, departments, the
    places users are scoped to (a cell as /rates names it) and the users by their number."""
    from geodata.departments import list_departments
    from geodata.plan_rows import place_names
    from layers.incidents.loop import categories

    wanted: dict[str, set[str]] = {"categories": set(), "places": set(), "departments": set()}
    for r in rows:
        for table, codes in audit_words.named_codes(r["detail"]).items():
            wanted[table] |= codes
    names: dict[str, dict[str, str]] = {"categories": {}, "places": {}, "departments": {}, "users": {}}
    eng = engine()
    if wanted["categories"]:
        names["categories"] = {k: in_language(v.get("name", k)) for k, v in categories(eng).items()}
    if wanted["departments"]:
        names["departments"] = {d["code"]: d["name"] for d in list_departments(eng)}
    places = wanted["places"]
    if places:
        streets, communities = place_names(eng, {c for c in places if len(c) == 9},
                                           {c for c in places if len(c) == 12})
        names["places"] = {**streets, **communities}
        cells = [c for c in places if len(c) == 15]
        if cells:
            import pandas as pd

            from layers.incidents.rates import with_names
            named = with_names(eng, "cell", pd.DataFrame({"code": cells}))
            names["places"].update({c: n for c, n in zip(named["code"], named["name"], strict=True) if n})
    if any(r["layer"] == "users" for r in rows):
        names["users"] = {str(u["id"]): u["name"] for u in accounts.list_users(eng)}
    return names


def _object_name(layer: str | None, code: str | None, users: dict[str, str] | None = None) -> str:
    """What an audit row names: a setting by its name, a user by their name beside their number,
    anything else by its code or number."""
    if layer == "settings" and code:
        return settings_rows.setting_label(code)
    if layer == "users" and code and (users or {}).get(code):
        return _("{name} (no. {number})", name=users[code], number=code)
    return code or ""


def _offset(text: str | None) -> int:
    """Where a page of the log starts: a whole number from 0 (anything else starts at 0; past
    ``MAX_OFFSET`` — more than the log will ever hold — the page is empty)."""
    try:
        return min(max(0, int(text or 0)), MAX_OFFSET)
    except ValueError:
        return 0


@bp.get("/admin/audit.csv")
@require("admin")
def audit_csv():
    """The matching rows as CSV (UTF-8 with a byte-order mark, so Excel reads the Chinese)."""
    f = AuditFilter.parse(request.args)
    eng = engine()
    # nothing in the rows needs the request: a plain generator, streamed after the view returns
    body = (line.encode("utf-8") for line in csv_lines(iter_rows(eng, f)))
    stamp = datetime.now().strftime("%Y%m%d-%H%M")
    return Response(body, mimetype="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="audit-{stamp}.csv"'})


# --- users --------------------------------------------------------------------------------------


@bp.get("/api/admin/users")
@require("admin", api=True)
def api_users():
    return _json({"users": accounts.list_users(engine()), "roles": list(accounts.ROLES), "me": _actor(),
                  "places": _places()})


def _places() -> dict:
    """The streets and communities by name, for choosing a user's scope (cells come by community)."""
    from sqlalchemy import select

    from geodata.models import Community, Street
    with engine().connect() as conn:
        streets = conn.execute(select(Street.code, Street.name).order_by(Street.code)).all()
        communities = conn.execute(select(Community.code, Community.name, Community.street_code)
                                   .order_by(Community.code)).all()
    return {"streets": [{"code": c, "name": n} for c, n in streets],
            "communities": [{"code": c, "name": n, "street_code": s} for c, n, s in communities]}


@bp.post("/api/admin/users")
@require("admin", api=True)
def api_create_user():
    """``{name, role, scope_code, department_code, password}`` → 201 and the new account."""
    data = params.body()
    password = _password(data)
    if password is None:
        raise Refused(_("set a first password for the account"))
    user = administration.create_user(engine(), _text(data, "name") or "", _text(data, "role") or "",
                                password, _text(data, "scope_code") or None, actor=_actor(),
                                department_code=_text(data, "department_code") or None)
    return _json(user, 201)


def _grant_changes(data: dict, *fields: str) -> dict:
    """What a change of an account or a token sets among ``fields`` (role, scope, department);
    a scope or department given empty is cleared."""
    return {f: _text(data, f) if f == "role" else (_text(data, f) or None) for f in fields if f in data}


@bp.patch("/api/admin/users/<int:user_id>")
@require("admin", api=True)
def api_update_user(user_id: int):
    """Any of ``role scope_code department_code disabled password``; the rest stays."""
    data = params.body()
    changes = _grant_changes(data, "role", "scope_code", "department_code")
    if "disabled" in data:
        if not isinstance(data["disabled"], bool):
            raise Refused(_("disabled is true or false"))
        changes["disabled"] = data["disabled"]
    password = _password(data)
    if password:
        changes["password_hash"] = password
    return _json(administration.update_user(engine(), actor=_actor(), user_id=user_id, **changes))


# --- tokens -------------------------------------------------------------------------------------


@bp.get("/api/admin/tokens")
@require("admin", api=True)
def api_tokens():
    return _json({"tokens": accounts.list_tokens(engine()), "roles": list(accounts.ROLES),
                  "places": _places()})


@bp.post("/api/admin/tokens")
@require("admin", api=True)
def api_create_token():
    """``{name, role, scope_code, expires_at}`` → 201 with ``token``: shown this once, stored only
    as a hash; ``expires_at`` (optional) is ``YYYY-MM-DD`` (valid through that day) or
    ``YYYY-MM-DDTHH:MM``."""
    data = params.body()
    token = secrets.token_urlsafe(32)
    expires_at = accounts.parse_expiry(_text(data, "expires_at"))
    row = administration.save_token(engine(), _text(data, "name") or "", _text(data, "role") or "viewer",
                              hash_token(token), _text(data, "scope_code") or None, actor=_actor(),
                              expires_at=expires_at)
    response = _json({**row, "token": token}, 201)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.patch("/api/admin/tokens/<int:token_id>")
@require("admin", api=True)
def api_update_token(token_id: int):
    changes = _grant_changes(params.body(), "role", "scope_code")
    return _json(administration.update_token(engine(), actor=_actor(), token_id=token_id, **changes))


@bp.post("/api/admin/tokens/<int:token_id>/revoke")
@require("admin", api=True)
def api_revoke_token(token_id: int):
    return _json(administration.revoke_token(engine(), actor=_actor(), token_id=token_id))


# --- settings -----------------------------------------------------------------------------------


def _fixed_keys() -> dict[str, list[str]]:
    """The standard entries of each table-valued default (they cannot be removed)."""
    return {row["key"]: list(row["value"]) for row in DEFAULT_SETTINGS if isinstance(row["value"], dict)}


@bp.get("/api/admin/settings")
@require("admin", api=True)
def api_settings():
    from layers.incidents.loop import categories

    override = current_app.config.get("BASEMAP")
    # the case categories by name in the reader's language: a list of codes is picked by name,
    # and a bilingual name (井盖破损 (manhole cover damaged)) reads in one language only
    named = {k: in_language(v.get("name") or k) for k, v in sorted(categories(engine()).items())}
    return _json({
        "settings": [settings_rows.setting_texts(row) for row in settings_rows.list_settings(engine())],
        "categories": named,
        "pickers": dict(audit_words.NAMED_SETTINGS),
        "entry_labels": {"incident_categories": _("Code")},
        "shown_names": {"incident_categories": named},
        # what the form calls the fields of records and tables and the names among their values
        "fields": {k: _(v) for k, v in settings_rows.FIELD_LABELS.items()},
        "values": {k: _(v) for k, v in settings_rows.VALUE_LABELS.items()},
        "groups": settings_rows.VALUE_GROUPS,
        "choices": {k: list(v) for k, v in settings_rows.CHOICES.items()},
        "labels": {"basemap": {k: _(BASEMAP_LABELS.get(k, k)) for k in BASEMAPS}},
        "fixed": _fixed_keys(),
        "notes": {"basemap": " · ".join(n for n in (
            # in words: the variables' names are in docs/operations.md, for whoever runs the server
            _("the server's configuration sets the base map to {value}: this setting has no effect "
              "until it is removed there", value=_(BASEMAP_LABELS.get(override, override)))
            if override else "",
            _("Tianditu needs a key, set in the server's configuration")
            if not current_app.config.get("TIANDITU_KEY") else "") if n)},
    })


@bp.put("/api/admin/settings/<key>")
@require("admin", api=True)
def api_save_setting(key: str):
    """``{value, source}``: the value must keep its shape (see :mod:`geodata.settings`)."""
    data = params.body()
    if "value" not in data:
        raise Refused(_("send the new value"))
    source = data.get("source")
    if source is not None and not isinstance(source, str):
        raise Refused(_("source is text"))
    return _json(settings_rows.setting_texts(
        administration.save_setting(engine(), key, data["value"], actor=_actor(), source=source)))


# --- audit log ----------------------------------------------------------------------------------


@bp.get("/api/admin/audit")
@require("admin", api=True)
def api_audit():
    """Search the log: ``actor action layer since until limit offset``; newest first."""
    f = AuditFilter.parse(request.args)
    try:
        limit = int(request.args.get("limit") or AUDIT_PAGE)
    except ValueError:
        raise Refused(_("limit is a whole number")) from None
    if not 1 <= limit <= MAX_AUDIT_PAGE:
        raise Refused(_("limit is a whole number from 1 to {limit}", limit=MAX_AUDIT_PAGE))
    rows, total = search(engine(), f, limit=limit, offset=_offset(request.args.get("offset")))
    return _json({"total": total, "rows": rows})
