"""Open311 GeoReport v2 onto the incident loop, both ways, and 311 open data imported through it.

The loop's cases are GeoReport *service requests* and its catalogue the *services*:

- ``status``: ``open`` while the case is in the loop (reported … handled), ``closed`` once it is
  closed, evaluated or cancelled; ``status_notes`` is the note of its latest step (or the step);
- ``requested_datetime`` = reported, ``updated_datetime`` = its latest step, ``expected_datetime``
  = its due time (dispatch + the category's limit on the working calendar);
- ``service_code`` = category code, ``service_name`` = its name, ``group`` = 部件 / 事件.

Real 311 data (Boston's and New York's open data, ``tests/data/us311``) is first read into
GeoReport requests (:func:`from_boston`, :func:`from_nyc`), then stored through the same mapping
(:func:`import_requests`): service names are mapped onto the catalogue by keywords (unknown ones
take ``default_category`` or are refused), open requests enter the loop as dispatched with their
target as due time, closed ones as closed; the cell, community and street are found from the
location where the district has one, and a request outside every area is kept in no cell.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
from sqlalchemy import Engine

from geodata import incident_rows as rows
from geodata.db import pause_for_fault_tests
from geodata.errors import Refused
from geodata.i18n import _
from layers.incidents import loop as incidents
from layers.incidents.working_time import WorkingCalendar

#: Keywords of 311 service names → catalogue codes (first match wins).
KEYWORDS = [
    ("street light", "C01-02"),
    ("streetlight", "C01-02"),
    ("manhole", "C01-01"),
    ("sewer", "C01-01"),
    ("pothole", "C02-01"),
    ("sidewalk", "C02-01"),
    ("street condition", "C02-01"),
    ("pavement", "C02-01"),
    ("trash can", "C03-01"),
    ("recycling", "C03-01"),
    ("tree", "C04-01"),
    ("park", "C04-01"),
    ("graffiti", "E02-01"),
    ("poster", "E02-01"),
    ("needle", "E01-01"),
    ("litter", "E01-01"),
    ("trash", "E01-01"),
    ("garbage", "E01-01"),
    ("dirty", "E01-01"),
    ("sanitation", "E01-01"),
    ("missed", "E01-01"),
    ("rodent", "E01-01"),
    ("bulk item", "E01-02"),
    ("dump", "E01-02"),
    ("construction", "E03-01"),
    ("noise", "E03-01"),
    ("building", "E03-02"),
    ("vendor", "E04-01"),
    ("vending", "E04-01"),
    ("flood", "E05-01"),
    ("water", "E05-01"),
    ("snow", "E05-01"),
]
REQUEST_KEYS = (
    "service_request_id",
    "status",
    "status_notes",
    "service_name",
    "service_code",
    "description",
    "agency_responsible",
    "service_notice",
    "requested_datetime",
    "updated_datetime",
    "expected_datetime",
    "address",
    "address_id",
    "zipcode",
    "lat",
    "long",
    "media_url",
)


def w3c(value: datetime | None, tz: str) -> str | None:
    """A W3C datetime with the city's UTC offset (times are stored in local time)."""
    return value.strftime("%Y-%m-%dT%H:%M:%S") + tz if value else None


# --- the loop as GeoReport ---------------------------------------------------------------------


def services(catalogue: dict) -> list[dict]:
    """GeoReport services from the incident catalogue."""
    return [
        {
            "service_code": code,
            "service_name": c.get("name", code),
            "description": f"{c.get('name', code)}; 时限 limit {c.get('limit_days', '')}"
            + (" working days" if c.get("limit_days") else f"{c.get('limit_hours')} working hours"),
            "metadata": False,
            "type": "realtime",
            "keywords": c.get("kind", ""),
            "group": "部件 component" if c.get("kind") == "component" else "事件 event",
        }
        for code, c in sorted(catalogue.items())
    ]


def service_definition(code: str, catalogue: dict) -> dict:
    if code not in catalogue:
        raise KeyError(code)
    return {"service_code": code, "attributes": []}


def to_request(
    case: dict, catalogue: dict, last_step: dict | None, tz: str, departments: dict | None = None
) -> dict:
    """A case as a GeoReport service request: the agency responsible is the department the case
    was dispatched to (``departments``: code → department), before that its cell or area."""
    department = (departments or {}).get(case.get("department_code") or "")
    closed = case["status"] in incidents.CLOSED
    updated = max(
        t
        for t in (
            case["reported_at"],
            case["filed_at"],
            case["dispatched_at"],
            case["handled_at"],
            case["closed_at"],
            case["evaluated_at"],
        )
        if t
    )
    note = (last_step or {}).get("note") or _(incidents.STATUS_LABELS.get(case["status"], case["status"]))
    return {
        "service_request_id": case["code"],
        "status": "closed" if closed else "open",
        "status_notes": note,
        "service_name": (catalogue.get(case["category"]) or {}).get("name", case["category"]),
        "service_code": case["category"],
        "description": case["description"] or "",
        "agency_responsible": department["name"] if department
        else case["grid_code"] or case["community_code"] or case["street_code"] or "",
        "service_notice": "",
        "requested_datetime": w3c(case["reported_at"], tz),
        "updated_datetime": w3c(updated, tz),
        "expected_datetime": w3c(case["due_at"], tz),
        "address": "",
        "address_id": case["grid_code"] or "",
        "zipcode": "",
        "lat": case["lat"],
        "long": case["lon"],
        "media_url": "",
    }


def from_post(form: dict) -> dict:
    """The loop's report from a GeoReport POST (``service_code``, ``lat``, ``long``,
    ``description``; an address alone is not enough here)."""
    if not form.get("service_code"):
        raise Refused("service_code is required")
    if form.get("lat") in (None, "") or form.get("long") in (None, ""):
        raise Refused("lat and long are required (address_string and address_id are not geocoded here)")
    return {
        "category": form["service_code"],
        "lon": form["long"],
        "lat": form["lat"],
        "description": form.get("description") or None,
        "source": "open311",
    }


def to_xml(root: str, item: str, records: list[dict]) -> bytes:
    """GeoReport's XML: ``<root><item><key>value</key>…</item>…</root>``."""
    top = ElementTree.Element(root)
    for record in records:
        node = ElementTree.SubElement(top, item)
        for key, value in record.items():
            child = ElementTree.SubElement(node, key)
            if isinstance(value, list):
                for v in value:
                    ElementTree.SubElement(child, "value").text = incidents.plain_text(str(v))
            elif value is not None:
                # what XML forbids is left out, so a text stored before (or a category's name)
                # cannot make the whole feed ill-formed
                shown = str(value).lower() if isinstance(value, bool) else str(value)
                child.text = incidents.plain_text(shown)
    return b'<?xml version="1.0" encoding="utf-8"?>' + ElementTree.tostring(top, encoding="utf-8")


# --- 311 open data as GeoReport ------------------------------------------------------------------


def _time(text: str | None, formats: tuple[str, ...]) -> datetime | None:
    text = (text or "").strip()
    if not text:
        return None
    for fmt in formats:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    raise Refused(_("cannot read the time {text}", text=repr(text)))


def _float(text) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) and value != 0 else None


def from_boston(path: Path) -> list[dict]:
    """Boston 311 cases (City of Boston open data) as GeoReport requests (local times)."""
    fmts = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M")
    out = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        for r in csv.DictReader(f):
            closed = _time(r.get("closed_dt"), fmts)
            out.append(
                {
                    "service_request_id": r["case_enquiry_id"],
                    "status": "closed" if r.get("case_status", "").lower() == "closed" else "open",
                    "status_notes": (r.get("closure_reason") or "").strip(),
                    "service_name": r.get("type") or r.get("reason") or "",
                    "description": (r.get("case_title") or "").strip(),
                    "agency_responsible": r.get("department") or "",
                    "requested_datetime": _time(r.get("open_dt"), fmts),
                    "updated_datetime": closed,
                    "expected_datetime": _time(r.get("target_dt"), fmts),
                    "lat": _float(r.get("latitude")),
                    "long": _float(r.get("longitude")),
                    "source": (r.get("source") or "").strip(),
                }
            )
    return out


def from_nyc(path: Path) -> list[dict]:
    """New York City 311 requests (NYC Open Data) as GeoReport requests (local times)."""
    fmts = ("%m/%d/%Y %I:%M:%S %p", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S")
    out = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        for r in csv.DictReader(f):
            out.append(
                {
                    "service_request_id": r["Unique Key"],
                    "status": "closed" if r.get("Status", "").lower() == "closed" else "open",
                    "status_notes": (r.get("Resolution Description") or "").strip(),
                    "service_name": r.get("Complaint Type") or "",
                    "description": (r.get("Descriptor") or "").strip(),
                    "agency_responsible": r.get("Agency") or "",
                    "requested_datetime": _time(r.get("Created Date"), fmts),
                    "updated_datetime": _time(r.get("Closed Date"), fmts),
                    "expected_datetime": _time(r.get("Due Date"), fmts),
                    "lat": _float(r.get("Latitude")),
                    "long": _float(r.get("Longitude")),
                    "source": (r.get("Open Data Channel Type") or "").strip(),
                }
            )
    return out


def category_for(service_name: str, catalogue: dict, default: str | None) -> str | None:
    name = (service_name or "").lower()
    for keyword, code in KEYWORDS:
        if keyword in name and code in catalogue:
            return code
    return default


def import_requests(
    engine: Engine,
    requests: list[dict],
    *,
    source: str,
    default_category: str | None = None,
    district: str = "000000",
    cal: WorkingCalendar | None = None,
) -> dict:
    """Store GeoReport requests as cases (code ``<source>-<id>``; ones already stored are skipped).
    Returns counts: imported, skipped (already there), unplaced (outside every cell), by status
    and by category, and the service names mapped to the default."""
    catalogue = incidents.categories(engine)
    if default_category is not None and default_category not in catalogue:
        raise Refused(_("unknown default category {category}", category=repr(default_category)))
    cal = cal or incidents.calendar(engine)
    unknown = sorted(
        {r["service_name"] for r in requests if category_for(r["service_name"], catalogue, None) is None}
    )
    if unknown and default_category is None:
        raise Refused(
            f"{len(unknown)} service types have no category: {', '.join(unknown[:10])}; "
            "give a default category",
            unmapped=unknown,
        )
    counts = {
        "imported": 0,
        "skipped": 0,
        "unplaced": 0,
        "no_location": 0,
        "open": 0,
        "closed": 0,
        "categories": {},
        "defaulted": unknown,
    }
    actor = f"open311:{source}"[:50]
    written: list[int] = []  # the cases stored, and their districts
    places: set[str] = set()
    with engine.begin() as conn:
        paused = rows.pause_sums(conn)  # a department's file of cases: its sums counted once below
        for r in requests:
            code = f"{source}-{r['service_request_id']}"[:24]
            if rows.get_incident(conn, code) is not None:
                counts["skipped"] += 1
                continue
            if r["lat"] is None or r["long"] is None or r["requested_datetime"] is None:
                counts["no_location"] += 1
                continue
            category = category_for(r["service_name"], catalogue, default_category)
            place = rows.locate(conn, r["long"], r["lat"])
            if place["grid_code"] is None:
                counts["unplaced"] += 1
            place["district_code"] = place["district_code"] or district
            reported = r["requested_datetime"]
            closed = r["status"] == "closed"
            end = r["updated_datetime"] if closed else None
            if closed and end is None:
                end = reported
            values = {
                "category": category,
                "description": incidents.plain_text(f"{r['service_name']}: {r['description']}")[:2000],
                "status": "closed" if closed else "dispatched",
                "reported_at": reported,
                "filed_at": reported,
                "dispatched_at": reported,
                "handled_at": end,
                "feedback_at": end,
                "closed_at": end,
                "due_at": r["expected_datetime"],
                "reporter": actor,
                "location_precision": "exact",
                "filing_wh": 0.0,
                "dispatch_wh": 0.0,
                "handling_wh": _hours(cal, reported, end),
                "verify_wh": 0.0 if closed else None,
                **place,
            }
            case = rows.insert_incident(conn, values, r["long"], r["lat"], "tmp")
            rows.change_code(conn, case["id"], code)
            written.append(case["id"])
            places.add(place["district_code"])
            for step, at, note in (
                ("reported", reported, r.get("source") or None),
                ("filed", reported, None),
                ("dispatched", reported, r.get("agency_responsible") or None),
                ("closed", end, r.get("status_notes") or None),
            ):
                if at is not None:
                    rows.add_step(conn, case["id"], step, at, actor,
                                  incidents.plain_text(note or "")[:1000] or None)
            counts["imported"] += 1
            counts["closed" if closed else "open"] += 1
            counts["categories"][category] = counts["categories"].get(category, 0) + 1
        if paused:
            rows.count_sums_of(conn, written, places)
        pause_for_fault_tests("open311")
    return counts


def _hours(cal: WorkingCalendar, start, end) -> float | None:
    if start is None or end is None:
        return None
    return round(float(cal.between(np.datetime64(start, "s"), np.datetime64(end, "s"))), 4)


#: the column each kind of city file cannot do without (its request id)
ID_COLUMNS = {"boston": "case_enquiry_id", "nyc": "Unique Key"}


def read_file(path: Path, kind: str) -> list[dict]:
    """The requests of a Boston or NYC 311 CSV, or a GeoReport JSON list, as GeoReport requests;
    a file that is not what ``kind`` says, or is damaged, is refused naming the problem."""
    path = Path(path)
    if kind not in ("boston", "nyc", "open311"):
        raise Refused(_("unknown kind {kind}: boston, nyc or open311", kind=repr(kind)))
    try:
        if kind == "open311":
            return _from_georeport(path)
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), [])
        if ID_COLUMNS[kind] not in header:
            raise Refused(_("{name} has no column {column}: is it a {kind} 311 file?",
                            name=path.name, column=repr(ID_COLUMNS[kind]), kind=kind))
        return from_boston(path) if kind == "boston" else from_nyc(path)
    except UnicodeDecodeError as exc:
        raise Refused(_("{name} is not UTF-8 text (byte {at}): save it as UTF-8",
                        name=path.name, at=exc.start)) from None
    except csv.Error as exc:
        raise Refused(_("{name} is not a readable CSV file: {exc}", name=path.name, exc=exc)) from None


def _from_georeport(path: Path) -> list[dict]:
    try:
        requests = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise Refused(_("{name} is not JSON: {exc}", name=path.name, exc=exc)) from None
    except RecursionError:
        raise Refused(_("{name} is nested too deeply to be GeoReport requests", name=path.name)) from None
    if not isinstance(requests, list) or not all(isinstance(r, dict) for r in requests):
        raise Refused(_("{name} is not a list of GeoReport requests (a JSON array of objects)",
                        name=path.name))
    for i, r in enumerate(requests, start=1):
        for key in ("requested_datetime", "updated_datetime", "expected_datetime"):
            value = r.get(key)
            try:
                r[key] = datetime.fromisoformat(value).replace(tzinfo=None) if value else None
            except (TypeError, ValueError):
                raise Refused(_("request {i}: {key} {value} is not an ISO 8601 time",
                                i=i, key=key, value=repr(value)[:80])) from None
        r["lat"], r["long"] = _float(r.get("lat")), _float(r.get("long"))
        if r.get("service_request_id") in (None, "") or isinstance(r.get("service_request_id"), dict | list):
            raise Refused(_("request {i} has no service_request_id", i=i))
    return requests


def import_file(
    engine: Engine, path: Path, kind: str, *, default_category: str | None = None, district: str = "000000"
) -> dict:
    """Import a Boston or NYC 311 CSV, or a GeoReport JSON list of requests (:func:`read_file`)."""
    requests = read_file(path, kind)
    return import_requests(
        engine,
        requests,
        source=kind[:3] if kind != "open311" else "311",
        default_category=default_category,
        district=district,
    )
