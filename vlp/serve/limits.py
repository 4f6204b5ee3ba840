"""Upload limits, applied before the app sees a request body.

Every POST route takes a multipart/form-data upload. A body is refused with 413 when its
Content-Length says it is too large, or as soon as the bytes read pass the limit (a
chunked upload has no length); it is otherwise read whole (at most the limit) and handed
on, so nothing past the limit is ever buffered.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.responses import JSONResponse


class UploadLimit:
    """ASGI middleware: `max_bytes` per request body, multipart/form-data POSTs only."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        refusal = self.refuse(Headers(scope=scope))
        if refusal:
            return await _error(*refusal)(scope, receive, send)
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                return await _error(413, self.too_large())(scope, receive, send)
            if not message.get("more_body", False):
                break
        return await self.app(scope, _replay(bytes(body), receive), send)

    def refuse(self, headers: Headers) -> tuple[int, str] | None:
        kind = headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "multipart/form-data":
            return 415, (f"expected a multipart/form-data upload with an 'image' file field, "
                         f"got {kind or 'no content type'}")
        length = headers.get("content-length")
        if length is not None and not length.isdigit():
            return 400, f"bad Content-Length {length!r}"
        if length is not None and int(length) > self.max_bytes:
            return 413, self.too_large()
        return None

    def too_large(self) -> str:
        return f"upload exceeds the limit of {self.max_bytes / 2**20:g} MB (--max_upload_mb)"


def _replay(body: bytes, receive):
    sent = False

    async def replayed():
        nonlocal sent
        if sent:
            return await receive()  # the client's disconnect, when it comes
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)
