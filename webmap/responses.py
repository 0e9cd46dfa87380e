"""How views answer: the one strict-JSON writer (:func:`json_answer`), and large answers sent
cheaply — an ETag (an unchanged answer costs a 304) and gzip when the client accepts it."""

from __future__ import annotations

import gzip
import json
import math
from datetime import date, datetime
from typing import Any

from flask import Response, request

GZIP_MIN_BYTES = 1024


def conditional(body: bytes | str, status: int = 200, headers: dict | None = None) -> Response:
    """``body`` as a response with an ETag (answered 304 when the client has it) and gzipped
    (level 5) when the client accepts gzip and the body is not tiny. Private: it depends on who
    asks."""
    if isinstance(body, str):
        body = body.encode()
    response = Response(body, status=status, headers=headers)
    response.headers["Cache-Control"] = "private"
    response.vary.add("Authorization")
    response.vary.add("Cookie")
    if status == 200:
        response.add_etag()
        response.make_conditional(request)
    if (response.status_code == 200 and len(body) >= GZIP_MIN_BYTES
            and "gzip" in request.headers.get("Accept-Encoding", "")):
        response.set_data(gzip.compress(body, compresslevel=5))
        response.headers["Content-Encoding"] = "gzip"
        response.vary.add("Accept-Encoding")
    return response


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by ``None`` (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    """What JSON cannot hold as it is: numpy scalars as numbers (NaN as ``null``), times as
    ISO 8601 text to the second, days as ``YYYY-MM-DD``; anything else as its text."""
    if hasattr(value, "item") and not isinstance(value, str | bytes):  # numpy scalars
        return finite(value.item())
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def to_json(data: Any) -> str:
    """``data`` as strict JSON text (no NaN, no Infinity: both become ``null``), Chinese as it
    is, compact."""
    return json.dumps(finite(data), ensure_ascii=False, allow_nan=False, separators=(",", ":"),
                      default=_plain)


def json_answer(data: Any, status: int = 200, mimetype: str = "application/json", *,
                cached: bool = False) -> Response:
    """The one JSON answer of the views: ``data`` as strict JSON (:func:`to_json`); with
    ``cached``, through :func:`conditional` (an ETag, gzip when large)."""
    if cached:
        return conditional(to_json(data), status, headers={"Content-Type": mimetype})
    return Response(to_json(data), status=status, mimetype=mimetype)


#: Static files sent gzipped (text); images and fonts already compressed are sent as they are.
COMPRESSIBLE = ("text/", "application/javascript", "application/json", "image/svg+xml",
                "application/manifest+json", "application/geo+json")


class StaticFiles:
    """What one app keeps of its static files, made by ``create_app`` (:func:`init_static`): each
    file's gzipped bytes and its version (a hash of its bytes), one entry per file, for the bytes
    it holds now (its modification time and size): a file changed is read afresh."""

    def __init__(self) -> None:
        self._gzipped: dict[str, tuple[tuple[float, int], bytes]] = {}
        self._versions: dict[str, tuple[tuple[float, int], str]] = {}

    @staticmethod
    def _kept(table: dict, path, make):
        stat = path.stat()
        stamp = (stat.st_mtime, stat.st_size)
        kept = table.get(str(path))
        if kept is None or kept[0] != stamp:
            kept = table[str(path)] = (stamp, make(path.read_bytes()))
        return kept[1]

    def gzipped(self, path) -> bytes:
        return self._kept(self._gzipped, path, lambda data: gzip.compress(data, compresslevel=9, mtime=0))

    def version(self, path) -> str:
        import hashlib

        return self._kept(self._versions, path, lambda data: hashlib.sha256(data).hexdigest()[:12])


def _static_files() -> StaticFiles:
    from flask import current_app

    return current_app.extensions["gridplan.static"]


def compress_static(response: Response) -> Response:
    """An ``after_request`` hook: a static asset (``/static/…``: Leaflet, Chart.js, the pages'
    scripts and styles) is sent gzipped to a client that accepts gzip. The compressed bytes are
    kept per file, size and modification time, so each file is compressed once per process; the
    ETag gets a ``-gz`` suffix so that a cache never mixes the two encodings."""
    if (request.endpoint != "static" or response.status_code != 200
            or "gzip" not in request.headers.get("Accept-Encoding", "")
            or "Content-Encoding" in response.headers
            or not (response.mimetype or "").startswith(COMPRESSIBLE)):
        return response
    path = _static_path(request.view_args or {})
    if path is None:
        return response
    body = _static_files().gzipped(path)
    response.direct_passthrough = False
    response.set_data(body)
    response.headers["Content-Encoding"] = "gzip"
    response.vary.add("Accept-Encoding")
    etag, weak = response.get_etag()
    if etag:
        response.set_etag(f"{etag}-gz", weak=weak)
        response.make_conditional(request)  # a client holding the gzipped copy gets a 304
    return response


def _static_path(view_args: dict):
    from pathlib import Path

    from flask import current_app
    from werkzeug.security import safe_join

    if not current_app.static_folder:
        return None
    joined = safe_join(current_app.static_folder, view_args.get("filename", ""))
    path = Path(joined) if joined else None
    return path if path is not None and path.is_file() else None


# --- static files under versioned addresses, kept a year ---------------------------------------

#: a year: a versioned address never changes its bytes (a new build is a new address)
LONG_LIVED = "public, max-age=31536000, immutable"


def static_version(filename: str) -> str | None:
    """The version of the static file ``filename``: a hash of its bytes (None when there is no
    such file), hashed once per change of the file (:class:`StaticFiles`)."""
    path = _static_path({"filename": filename})
    return None if path is None else _static_files().version(path)


def inline_static(filename: str):
    """The text of the static file ``filename`` for a page to carry inline (the case pages' styles:
    no stylesheet request holds up their first paint on a slow signal)."""
    from markupsafe import Markup

    path = _static_path({"filename": filename})
    # the files are the build's own (never user data): safe to write into the page as they are
    return Markup(path.read_text(encoding="utf-8")) if path is not None else ""  # noqa: S704


def init_static(app) -> None:
    """Every ``url_for('static', …)`` gets ``?v=<hash of the file>``, and a static file asked
    for under its current version is sent with a year's ``Cache-Control`` (immutable): a phone
    asks for it once per build. Asked for under another version (a page of an older build), it
    stays ``no-cache``."""
    app.extensions["gridplan.static"] = StaticFiles()

    @app.url_defaults
    def _versioned(endpoint: str, values: dict) -> None:
        if endpoint == "static" and "v" not in values and values.get("filename"):
            version = static_version(values["filename"])
            if version:
                values["v"] = version

    @app.after_request
    def _long_lived(response: Response) -> Response:
        if (request.endpoint == "static" and response.status_code in (200, 304)
                and request.args.get("v")
                and request.args.get("v") == static_version((request.view_args or {}).get("filename", ""))):
            response.headers["Cache-Control"] = LONG_LIVED
        return response

    app.jinja_env.globals["inline_static"] = inline_static


def compressed_page(html: str) -> Response:
    """A page (the 网格员's case pages) gzipped when the client accepts it: on a slow signal its
    bytes are most of the wait. Only a request without a query string is compressed, so the
    request itself never comes back in the page beside its CSRF token. Stored text other users
    wrote (a case's description, notes) does: BREACH could at most read the token's fixed part,
    which forges nothing without the server's key (each page's token is signed afresh). The
    page is a signed-in user's own: ``private``, varying by cookie."""
    response = Response(html, mimetype="text/html")
    response.headers["Cache-Control"] = "private"
    response.vary.add("Cookie")
    body = response.get_data()
    if (request.query_string or len(body) < GZIP_MIN_BYTES
            or "gzip" not in request.headers.get("Accept-Encoding", "")):
        return response
    response.set_data(gzip.compress(body, compresslevel=6))
    response.headers["Content-Encoding"] = "gzip"
    response.vary.add("Accept-Encoding")
    return response
