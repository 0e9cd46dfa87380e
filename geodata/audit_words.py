"""The audit log read as sentences: each action by its name ("adopted a plan", not
``plan:adopt``) and each row's detail as words ("plan #3 “东区调整”, 4 streets, version 7"), in
the interface's language. The stored rows keep their keys (the CSV export and the API give them
as stored: they are for programs); this is what the audit page and the plan timeline show.
"""

from __future__ import annotations

from geodata.accounts import ROLE_WORDS
from geodata.i18n import N_, _

#: Each action as the audit page names it (past tense: what the user did).
ACTIONS: dict[str, str] = {
    "sign-in": N_("signed in"), "sign-in:refused": N_("sign-in refused"), "sign-out": N_("signed out"),
    "user:create": N_("created a user"), "user:update": N_("changed a user"),
    "user:disable": N_("disabled a user"), "user:enable": N_("enabled a user"),
    "token:create": N_("created an API token"), "token:update": N_("changed an API token"),
    "token:revoke": N_("revoked an API token"), "setting:update": N_("changed a setting"),
    "plan:create": N_("created a plan"), "plan:edit": N_("edited a plan"),
    "plan:name": N_("named a community of a plan"), "plan:rename": N_("renamed a plan"),
    "plan:duplicate": N_("duplicated a plan"), "plan:delete": N_("deleted a plan"),
    "plan:undo": N_("undid an edit of a plan"), "plan:redo": N_("redid an edit of a plan"),
    "plan:rebase": N_("moved a plan onto the current boundaries"), "plan:submitted": N_("submitted a plan"),
    "plan:approved": N_("approved a plan"), "plan:rejected": N_("rejected a plan"),
    "plan:draft": N_("returned a plan to draft"), "plan:adopt": N_("adopted a plan"),
    "plan:adopted": N_("adopted a plan"), "plan:merge": N_("merged communities of a plan"),
    "plan:split": N_("split a community of a plan"),
    "import:append": N_("imported (added to the layer)"),
    "import:replace": N_("imported (replaced the layer)"),
    "import:update": N_("imported (updated the layer)"), "export": N_("exported"),
    "codes:apply": N_("applied a code table"), "units:build": N_("built planning units"),
    "clean:communities": N_("cleaned community boundaries"), "grid:assign": N_("assigned grid cells"),
    "grid:unassign": N_("took grid cells back"),
    "department:create": N_("added a department"), "department:update": N_("changed a department"),
    "plan:regenerate": N_("regenerated the grid cells after an adoption"),
    "plan:discard": N_("discarded a plan that failed"),
}

#: The steps of a plan's timeline (its audit actions without ``plan:``), as the plan page names them.
STEPS: dict[str, str] = {
    "create": N_("created"), "edit": N_("edited"), "rename": N_("renamed"), "name": N_("named a community"),
    "duplicate": N_("duplicated"), "submitted": N_("submitted"), "approved": N_("approved"),
    "rejected": N_("rejected"), "adopted": N_("adopted"), "adopt": N_("adopted"),
    "draft": N_("back to draft"),
    "rebase": N_("moved onto the current boundaries"), "undo": N_("undid an edit"),
    "redo": N_("redid an edit"), "regenerate": N_("grid cells regenerated"),
    "discard": N_("discarded"),
    "delete": N_("deleted"), "merge": N_("merged communities"), "split": N_("split a community"),
}

#: The tables and layers an audit row names, as people call them.
LAYERS: dict[str, str] = {
    "districts": N_("districts"), "streets": N_("streets"), "communities": N_("communities"),
    "units": N_("planning units"), "buildings": N_("buildings"), "facilities": N_("facilities"),
    "grid_cells": N_("grid cells"), "incidents": N_("cases"), "roads": N_("roads"), "water": N_("water"),
    "plans": N_("plans"), "users": N_("users"), "api_tokens": N_("API tokens"), "settings": N_("settings"),
    "departments": N_("departments"),
}

#: The fields of a row's detail, as the sentence names them.
FIELDS: dict[str, str] = {
    "name": N_("name"), "role": N_("role"), "scope_code": N_("scope"), "password": N_("password"),
    "disabled": N_("disabled"), "expires_at": N_("expires"), "units": N_("units"), "version": N_("version"),
    "comment": N_("comment"), "streets": N_("streets"), "communities": N_("communities"),
    "revision": N_("boundary revision"), "step": N_("step"), "kind": N_("kind"), "copy": N_("copy"),
    "duplicate_of": N_("copy of plan"), "status": N_("status"), "format": N_("format"),
    "encoding": N_("encoding"), "crs": N_("coordinate system"), "street": N_("street"),
    "community": N_("community"), "features": N_("features"), "source": N_("source"),
    "written": N_("features written"), "repaired": N_("geometries repaired"),
    "exported_at": N_("exported at"), "forced": N_("forced"), "user": N_("user"), "cells": N_("grid cells"),
    "address": N_("from"), "reason": N_("reason"), "key": N_("setting"), "before": N_("before"),
    "after": N_("after"), "locale": N_("language"),
    "code": N_("code"), "categories": N_("categories"), "contact": N_("contact"),
    "limits": N_("own time limits"), "default_for": N_("default for"), "department_code": N_("department"),
    "removed": N_("cells removed"), "cases": N_("cases placed again"),
}

#: Stored words inside details that have names of their own.
VALUES: dict[str, str] = {
    "set": N_("set"), "wrong password": N_("wrong password"), "unknown name": N_("unknown user name"),
    "disabled": N_("account disabled"), **ROLE_WORDS, "draft": N_("draft"),
    "submitted": N_("submitted"), "approved": N_("approved"), "rejected": N_("rejected"),
    "adopted": N_("adopted"), "edit": N_("edit"), "move": N_("move"), "paint": N_("paint stroke"),
    "merge": N_("merge"), "split": N_("split"), "new": N_("new community"),
}

#: The kinds of a plan's edit steps (``kind`` of an undo or redo), as the plan page names them.
KINDS: dict[str, str] = {
    "move": N_("move"), "edit": N_("edit"), "paint": N_("paint stroke"), "merge": N_("merge"),
    "split": N_("split"), "new": N_("new community"), "name": N_("naming a community"),
}

#: The actors that are no one's account: what the server's commands record as having acted.
ACTORS: dict[str, str] = {
    "cli": N_("server command line"), "demo-accounts": N_("demo accounts setup"),
    "demo": N_("demo data"), "onboard": N_("data folder onboarding"),
}

MAX_LISTED = 10

#: The fields whose values are codes of something with a name, and which table of ``names`` (see
#: :func:`describe`) names them: a category code reads "市容环境 E01-01", a scope its place.
NAMED_FIELDS: dict[str, str] = {
    "categories": "categories", "default_for": "categories", "scope_code": "places",
    "department_code": "departments",
}

#: The settings whose values are codes of something with a name (a list of case categories), and
#: which table of ``names`` names them: their change reads "道路破损 C02-01 …", not bare codes.
NAMED_SETTINGS: dict[str, str] = {"incident_after_photo": "categories"}


def action_name(action: str) -> str:
    """An audit action in the interface's language (an action this module does not know is
    named by its kind: "import: …" keeps the stored word after the colon)."""
    if action in ACTIONS:
        return _(ACTIONS[action])
    head, _sep, tail = action.partition(":")
    if head == "import":
        return _("imported ({mode})", mode=tail)
    return action


def actor_name(actor: str | None) -> str:
    """Who acted, as the audit page names them: an account by its name, a server command in words
    ("cli" is the server's command line)."""
    if not actor:
        return ""
    return _(ACTORS[actor]) if actor in ACTORS else actor


def step_name(step: str) -> str:
    """A step of a plan's timeline in the interface's language."""
    return _(STEPS[step]) if step in STEPS else _("changed")


def layer_name(layer: str | None) -> str:
    """A layer or table an audit row names, as people call it."""
    if not layer:
        return ""
    return _(LAYERS[layer]) if layer in LAYERS else layer


def _value(value, setting_words=None) -> str:
    """One value of a detail as words: yes/no, lists (at most ten, then how many more), named
    values translated, mappings as ``name value`` pairs."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return _("yes") if value else _("no")
    if isinstance(value, int | float):
        return f"{value:,}" if isinstance(value, int) else f"{value:,.6g}"
    if isinstance(value, str):
        return _(VALUES[value]) if value in VALUES else value
    if isinstance(value, list | tuple | set):
        items = [_value(v, setting_words) for v in list(value)[:MAX_LISTED]]
        more = len(value) - MAX_LISTED
        return _(", ").join(items) + (_(" and {n} more", n=more) if more > 0 else "") if items else "—"
    if isinstance(value, dict):
        name = setting_words or _field
        pairs = list(value.items())[:MAX_LISTED]
        return _("; ").join(f"{name(k)} {_value(v, setting_words)}" for k, v in pairs)
    return str(value)


def _field(key) -> str:
    return _(FIELDS[key]) if key in FIELDS else str(key)


def _named(value, table: dict[str, str]):
    """A code (or a list of codes) with its name before it, where ``table`` knows the name."""
    if isinstance(value, list | tuple):
        return [_named(v, table) for v in value]
    if isinstance(value, str) and table.get(value):
        return f"{table[value]} {value}"
    return value


def rule_sentence(rule) -> str:
    """One rule a plan breaks (an entry of ``broken_rules``, as :func:`layers.plans.adoption.broken_rules`
    stores it) as the plan page words it: the community by its name beside its code, the rule in
    words, the households and the limit as numbers."""
    if not isinstance(rule, dict):
        return _value(rule)
    code, name = rule.get("community_code") or rule.get("cell_code") or "", rule.get("community_name")
    who = f"{name} · {code}" if name else str(code)

    def number(key: str) -> str:
        value = rule.get(key)
        return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else "—"

    kind = rule.get("rule")
    if kind == "not_contiguous":
        return _("{community} is not contiguous ({pieces} separate pieces)", community=who,
                 pieces=number("value"))
    if kind == "below_minimum":
        return _("{community} holds {households} households, below the minimum of {limit}", community=who,
                 households=number("value"), limit=number("limit"))
    if kind == "above_maximum":
        return _("{community} holds {households} households, above the maximum of {limit}", community=who,
                 households=number("value"), limit=number("limit"))
    if kind == "crosses_street":
        return _("{community} lies in {streets} streets", community=who, streets=number("value"))
    return _("{community} breaks a rule", community=who)


def named_codes(detail) -> dict[str, set[str]]:
    """The codes a row's detail holds that have names (table → codes), so that a page names only
    those it shows."""
    found: dict[str, set[str]] = {}
    if isinstance(detail, dict):
        if detail.get("key") in NAMED_SETTINGS:
            codes = [v for side in ("before", "after") if isinstance(detail.get(side), list)
                     for v in detail[side]]
            found.setdefault(NAMED_SETTINGS[detail["key"]], set()).update(
                str(v) for v in codes if isinstance(v, str) and v)
        for key, table in NAMED_FIELDS.items():
            value = detail.get(key)
            values = value if isinstance(value, list | tuple) else [value]
            found.setdefault(table, set()).update(str(v) for v in values if isinstance(v, str) and v)
    return found


def describe(action: str, detail, names: dict[str, dict[str, str]] | None = None) -> str:
    """A row's detail as a sentence in the interface's language: its fields by name and their
    values in words (a setting's change as "setting: before → after"); codes ``names`` knows
    (``{"categories"|"places"|"departments": {code: name}}``) with their names beside them."""
    if detail is None or detail == {}:
        return ""
    if not isinstance(detail, dict):
        return _value(detail)
    if action == "setting:update" and "key" in detail:
        from geodata.settings import FIELD_LABELS, VALUE_LABELS, setting_label

        def words(k):
            k = str(k)
            return _(FIELD_LABELS[k]) if k in FIELD_LABELS else _(VALUE_LABELS[k]) if k in VALUE_LABELS else k

        before, after = detail.get("before"), detail.get("after")
        if detail["key"] in NAMED_SETTINGS and names:
            table = names.get(NAMED_SETTINGS[detail["key"]]) or {}
            before, after = _named(before, table), _named(after, table)
        text = _("{setting}: {before} → {after}", setting=setting_label(detail["key"]),
                 before=_value(before, words), after=_value(after, words))
        if detail.get("source"):
            text += _("; ") + _("source: {source}", source=detail["source"])
        return text
    if action in ("sign-in", "sign-in:refused", "sign-out"):
        words = [_("from {address}", address=detail.get("address") or "?")]
        if detail.get("reason"):
            words.append(_value(detail["reason"]))
        return _("; ").join(words)
    parts = []
    for key, value in detail.items():
        if value is None or value == "" or value == [] or value == {}:
            continue
        if key == "name" and action.startswith(("plan:", "user:", "token:")):
            parts.append(f"“{value}”")
            continue
        if key == "broken_rules" and isinstance(value, list):
            shown = [rule_sentence(r) for r in value[:MAX_LISTED]]
            if len(value) > MAX_LISTED:
                shown.append(_("and {n} more", n=len(value) - MAX_LISTED))
            parts.append(_("rules broken: {rules}", rules=_("; ").join(shown)))
            continue
        if key == "kind" and isinstance(value, str):
            parts.append(f"{_field(key)} {_(KINDS[value]) if value in KINDS else value}")
            continue
        if key in NAMED_FIELDS and names:
            value = _named(value, names.get(NAMED_FIELDS[key]) or {})
        parts.append(f"{_field(key)} {_value(value)}")
    return _("; ").join(parts)


__all__ = ["ACTIONS", "ACTORS", "KINDS", "LAYERS", "STEPS", "action_name", "actor_name", "describe",
           "layer_name", "named_codes", "rule_sentence", "step_name"]
