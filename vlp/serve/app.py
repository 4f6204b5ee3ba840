"""The web app: one page and a JSON API; no file a request names is ever opened.

Routes: `GET /` (the page) and `/static/<asset>` (its CSS and JS, read at start-up),
`GET /api/health`, `GET /api/examples` and `/api/examples/<i>/image` (example images,
read at start-up, by index), `POST /api/caption`, `POST /api/ask`, `POST /api/locate`
(when the bundle has a localization model). A task is one route here, one entry in
`BundleModels.tasks` and one panel in the page. Uploads are decoded on the
server's thread pool, and the model calls queue for the models' own thread.
Errors are JSON `{"error": "<one line>"}` with a 4xx status.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from importlib import resources

import numpy as np
from fastapi import FastAPI, File, Form, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from feature_extraction.images import BadImage, TooManyPixels, decode_rgb_bytes
from vlp import __version__
from vlp.serve.limits import UploadLimit
from vlp.serve.models import BundleModels

ASSETS = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
MAX_QUESTION_CHARS = 500
MAX_TOP = 20


@dataclass
class ServeSettings:
    max_upload_mb: float = 10.0
    max_pixels: int = 40_000_000

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


def build_app(models: BundleModels, settings: ServeSettings) -> FastAPI:
    # No interactive docs: their page loads scripts from a CDN.
    app = FastAPI(title="vlp serve", version=__version__, docs_url=None, redoc_url=None)
    app.add_middleware(UploadLimit, max_bytes=settings.max_upload_bytes)
    _error_handlers(app)
    _page_routes(app)
    _info_routes(app, models, settings)
    _model_routes(app, models, settings.max_pixels)
    return app


def _page_routes(app: FastAPI) -> None:
    static = resources.files("vlp.serve") / "static"
    page = (static / "index.html").read_text(encoding="utf-8")
    assets = {name: (static / name).read_bytes() for name in ASSETS}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index():
        return HTMLResponse(page)

    @app.get("/static/{name}", include_in_schema=False)
    def asset(name: str):
        if name not in assets:
            raise HTTPException(404, f"no asset {name!r}")
        return Response(assets[name], media_type=ASSETS[name])


def _info_routes(app: FastAPI, models: BundleModels, settings: ServeSettings) -> None:
    @app.get("/api/health")
    def health():
        return {"status": "ok", "version": __version__, "tasks": models.tasks,
                "beam_size": models.beam_size, "examples": len(models.examples),
                "max_upload_bytes": settings.max_upload_bytes,
                "max_pixels": settings.max_pixels}

    @app.get("/api/examples")
    def examples():
        return [{"id": i, "name": ex.name, "image": f"/api/examples/{i}/image"}
                for i, ex in enumerate(models.examples)]

    @app.get("/api/examples/{index}/image")
    def example_image(index: int):
        if not 0 <= index < len(models.examples):
            raise HTTPException(404, f"no example image {index} "
                                     f"(there are {len(models.examples)})")
        example = models.examples[index]
        return Response(example.data, media_type=example.media_type)


def _model_routes(app: FastAPI, models: BundleModels, max_pixels: int) -> None:
    @app.post("/api/caption")
    async def caption(image: UploadFile = File(...), n_best: int | None = Form(None)):
        n_best = models.beam_size if n_best is None else n_best
        if not 1 <= n_best <= models.beam_size:
            raise HTTPException(422, f"n_best {n_best}: between 1 and the beam size "
                                     f"{models.beam_size}")
        pixels = await _pixels(image, max_pixels)
        return await asyncio.wrap_future(models.caption(pixels, n_best))

    @app.post("/api/ask")
    async def ask(image: UploadFile = File(...), question: str = Form(...), top: int = Form(3)):
        question = _checked(models.answerer, "VQA", "question", question, top)
        pixels = await _pixels(image, max_pixels)
        return await asyncio.wrap_future(models.ask(pixels, question, top))

    @app.post("/api/locate")
    async def locate(image: UploadFile = File(...), expression: str = Form(...),
                     top: int = Form(3)):
        expression = _checked(models.locator, "localization", "expression", expression, top)
        pixels = await _pixels(image, max_pixels)
        return await asyncio.wrap_future(models.locate(pixels, expression, top))


def _checked(model, what: str, field: str, text: str, top: int) -> str:
    """`text` stripped, once the bundle has the model and the text and `top` fit."""
    if model is None:
        raise HTTPException(404, f"this bundle has no {what} model")
    text = text.strip()
    if not text or len(text) > MAX_QUESTION_CHARS:
        raise HTTPException(422, f"{field}: between 1 and {MAX_QUESTION_CHARS} characters")
    if not 1 <= top <= MAX_TOP:
        raise HTTPException(422, f"top {top}: between 1 and {MAX_TOP}")
    return text


async def _pixels(image: UploadFile, max_pixels: int) -> np.ndarray:
    """The upload's pixels, decoded on the thread pool; an unusable image is a 4xx."""
    data = await image.read()
    try:
        return await run_in_threadpool(decode_rgb_bytes, data, max_pixels)
    except TooManyPixels as err:
        raise HTTPException(413, f"{_name(image)}: {err}") from None
    except BadImage as err:
        raise HTTPException(400, f"{_name(image)}: {err}") from None


def _name(image: UploadFile) -> str:
    return image.filename or "image"


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(request, err: HTTPException):
        return JSONResponse({"error": _one_line(str(err.detail))}, status_code=err.status_code,
                            headers=getattr(err, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request, err: RequestValidationError):
        return JSONResponse({"error": _one_line(_describe(err.errors()))}, status_code=422)


def _describe(errors) -> str:
    parts = []
    for e in errors:
        where = ".".join(str(part) for part in e.get("loc", ())[1:]) or "request"
        parts.append(f"{where}: {'missing' if e.get('type') == 'missing' else e.get('msg')}")
    return "; ".join(parts)


def _one_line(text: str) -> str:
    return " ".join(text.split())
