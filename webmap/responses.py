"""Large answers sent cheaply: an ETag (an unchanged answer costs a 304) and gzip when the
client accepts it. Shared by the layer API and the plan API."""

from __future__ import annotations

import gzip

from flask import Response, request

GZIP_MIN_BYTES = 1024


def conditional(body: bytes | str, status: int = 200, headers: dict | None = None) -> Response:
    """``body`` as a response with an ETag (answered 304 when the client has it) and gzipped
    (level 5) when the client accepts gzip and the body is not tiny. Private: it depends on who
    asks."""
    if isinstance(body, str):
        body = body.encode()
    response = Response(body, status=status, headers=headers)
    response.headers["Cache-Control"] = "private, no-cache"
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
