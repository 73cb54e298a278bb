"""The FastAPI app of `defectmine serve RUN`: scoring, health, model facts and the review page.

Endpoints (every error is JSON ``{"error": "<file or field>: what is wrong. Fix: ..."}`` with a 4xx
status; nothing a client sends takes the service down):

    POST /score[?heatmap=true]   one image as the raw body (Content-Type image/* or
                                 application/octet-stream) or one or many as multipart/form-data file
                                 parts -> {"threshold", "results": [{name, score, decision, areas,
                                 predicted_class, review_id, heatmap_png (base64 PNG, when asked)}]}.
                                 A request is scored whole or refused whole: one bad file answers 4xx
                                 naming it, and none of its images is scored.
    GET  /health                 {"status": "ok", batching statistics}
    GET  /model                  what is served: kind, threshold, classes, version, the run's config and metrics
    GET  /review                 the review page (HTML); GET /review/items the queue as JSON
    GET  /review/items/{id}/overlay.png
    POST /review/items/{id}/label   {"label": "normal" | defect class, "reviewer": "name"}

The model is loaded once, when the app is made; images are decoded in worker threads and scored by
the micro-batcher's single scoring thread (`batching.MicroBatcher`), never on the event loop.
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations (Request, imported where the
# routes are made) at definition time.
import asyncio
import base64
import logging
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from defectmine.errors import ConfigError
from defectmine.serve.batching import MicroBatcher
from defectmine.serve.model import ServedModel, load_served_model
from defectmine.serve.review import LabelSink, ReviewStore
from defectmine.serve.uploads import RequestError, UploadLimits, decode_upload

log = logging.getLogger("defectmine.serve")
REVIEW_DIR = "review"
RAW_TYPES = ("image/", "application/octet-stream")


@dataclass(frozen=True)
class ServeSettings:
    """How the service batches, what it accepts and where it keeps the review queue.

    max_batch / max_wait_ms: a batch closes at `max_batch` images or `max_wait_ms` after its first.
    limits: bytes and pixels of one image; max_files: images in one request.
    overlay_side: longest side of overlays (review page and heatmap_png).
    review_dir: the queue's folder (default RUN/review); review_max: images kept there;
    review_folder: a folder of images scored into the queue when the service starts.
    """

    max_batch: int = 16
    max_wait_ms: float = 5.0
    limits: UploadLimits = UploadLimits()
    max_files: int = 64
    overlay_side: int = 512
    review_dir: Path | None = None
    review_max: int = 1000
    review_folder: Path | None = None

    def __post_init__(self) -> None:
        for name in ("max_files", "overlay_side"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be at least 1.")
        if self.limits.max_bytes < 1 or self.limits.max_pixels < 1:
            raise ConfigError(f"upload limits {self.limits}: must be positive. Fix: e.g. --max-upload-mb 32.")
        if self.review_folder is not None and not Path(self.review_folder).is_dir():
            raise ConfigError(f"--review-folder {self.review_folder}: no such folder. Fix: pass a folder of images.")


def require_serve_packages() -> None:
    """A ConfigError with the install command when the `serve` extra is missing."""
    missing = []
    for modules, package in ((("fastapi",), "fastapi"), (("uvicorn",), "uvicorn"),
                             (("python_multipart", "multipart"), "python-multipart")):  # new name, old name
        for module in modules:
            try:
                __import__(module)
                break
            except ImportError:
                pass
        else:
            missing.append(package)
    if missing:
        raise ConfigError(f"the service needs {', '.join(missing)}, which is not installed. "
                          "Fix: pip install 'defectmine[serve]'  (or: pip install " + " ".join(missing) + ").")


def create_app(run_dir: Path | str, settings: ServeSettings = ServeSettings(), sink: LabelSink | None = None,
               served: ServedModel | None = None):
    """The service for one run folder (model loaded now, once). `sink` receives review labels (default
    a CSV in the review folder); `served` replaces the loaded model (tests)."""
    require_serve_packages()
    from fastapi import FastAPI

    served = served if served is not None else load_served_model(run_dir)
    review_dir = Path(settings.review_dir) if settings.review_dir is not None else Path(run_dir) / REVIEW_DIR
    store = ReviewStore(review_dir, served.classes, settings.review_max, sink)
    batcher = MicroBatcher(served.score, settings.max_batch, settings.max_wait_ms)

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        try:
            if settings.review_folder is not None:
                added = await batcher.run_in_scoring_thread(score_folder, served, store, settings)
                log.info("scored %d image(s) of %s into the review queue", added, settings.review_folder)
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="defectmine", lifespan=lifespan)
    app.state.served, app.state.store, app.state.batcher, app.state.settings = served, store, batcher, settings
    _add_error_handlers(app)
    _add_routes(app)
    return app


def _add_error_handlers(app) -> None:
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    @app.exception_handler(RequestError)
    async def refused(request, err: RequestError):
        return JSONResponse({"error": err.message}, status_code=err.status)

    @app.exception_handler(HTTPException)
    async def http_error(request, err: HTTPException):
        return JSONResponse({"error": str(err.detail)}, status_code=err.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, err: RequestValidationError):
        fields = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in err.errors())
        return JSONResponse({"error": f"invalid request ({fields}). Fix: see GET /docs."}, status_code=422)

    @app.exception_handler(Exception)
    async def internal(request, err: Exception):
        log.exception("request failed")
        return JSONResponse({"error": f"internal error ({type(err).__name__}: {err}); the service goes on."},
                            status_code=500)


def _add_routes(app) -> None:
    from fastapi import Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import FileResponse, HTMLResponse

    from defectmine.serve.page import review_page

    served: ServedModel = app.state.served
    store: ReviewStore = app.state.store
    batcher: MicroBatcher = app.state.batcher
    settings: ServeSettings = app.state.settings

    @app.get("/health")
    async def health():
        return {"status": "ok", "kind": served.kind, "batching": asdict(batcher.stats)}

    @app.get("/model")
    async def model():
        return {**served.describe(), "settings": {**asdict(settings), "review_dir": str(store.folder)}}

    @app.post("/score")
    async def score(request: Request, heatmap: bool = False):
        uploads = await _read_uploads(request, settings)
        decoded = await asyncio.gather(*(run_in_threadpool(decode_upload, data, name, served.spec, settings.limits,
                                                           settings.overlay_side) for name, data in uploads),
                                       return_exceptions=True)
        refused = [err for err in decoded if isinstance(err, BaseException)]
        if refused:
            first = next((e for e in refused if not isinstance(e, RequestError)), refused[0])
            if not isinstance(first, RequestError):
                raise first
            several = " (none of the request's images was scored)" if len(uploads) > 1 else ""
            raise RequestError(first.status, "; ".join(e.message for e in refused) + several)
        scored = await asyncio.gather(*(batcher.submit(d) for d in decoded))
        results = await run_in_threadpool(_keep, store, uploads, scored, heatmap)
        return {"threshold": served.threshold, "kind": served.kind, "results": results}

    @app.get("/review", response_class=HTMLResponse)
    async def review():
        return review_page(store.queue(), store.labels, served.threshold, served.kind)

    @app.get("/review/items")
    async def review_items():
        return {"labels": list(store.labels), "items": store.queue()}

    @app.get("/review/items/{item_id}/overlay.png")
    async def review_overlay(item_id: str):
        path = store.overlay_path(item_id)
        if path is None:
            raise RequestError(404, f"review item {item_id!r} has no overlay (not in the queue). Fix: reload the page.")
        return FileResponse(path, media_type="image/png")

    @app.post("/review/items/{item_id}/label")
    async def review_label(item_id: str, request: Request):
        body = await _json_object(request)
        item = await run_in_threadpool(store.label, item_id, body.get("label"), str(body.get("reviewer") or ""))
        return {"id": item.id, "label": item.label, "reviewer": item.reviewer, "image": item.image_path}


async def _read_uploads(request, settings: ServeSettings) -> list[tuple[str, bytes]]:
    """(name, bytes) of every image in the request: the raw body, or each file part of a form."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    limit = settings.limits.max_bytes * (settings.max_files if content_type == "multipart/form-data" else 1) + 2**16
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise RequestError(413, f"request body: {length} bytes is more than the limit of {limit}. Fix: send "
                                "fewer or smaller images per request.")
    if content_type == "multipart/form-data":
        try:
            form = await request.form(max_files=settings.max_files, max_fields=settings.max_files)
        except Exception as err:  # malformed multipart, too many parts: the client's fault, not ours
            raise RequestError(400, f"request body: not a readable multipart form ({err}). Fix: send the images "
                                    "as file parts, e.g. curl -F files=@a.png -F files=@b.png.") from None
        parts = [value for _, value in form.multi_items() if hasattr(value, "read")]
        uploads = [(part.filename or f"file{k}", await part.read()) for k, part in enumerate(parts)]
        await form.close()
        if not uploads:
            raise RequestError(400, "request body: the form holds no file part. Fix: send the images as file "
                                    "parts, e.g. curl -F files=@a.png.")
        return uploads
    if not content_type.startswith(RAW_TYPES):
        raise RequestError(415, f"Content-Type {content_type or '(none)'!r}: POST /score takes an image "
                                "(image/png, image/jpeg, ... or application/octet-stream) or multipart/form-data. "
                                "Fix: e.g. curl --data-binary @a.png -H 'Content-Type: image/png'.")
    body = await request.body()
    if not body:
        raise RequestError(400, "request body: empty. Fix: send the image file's bytes.")
    return [(request.headers.get("x-filename") or "upload", body)]


def _keep(store: ReviewStore, uploads, scored, heatmap: bool) -> list[dict]:
    """Put each scored upload in the review queue; the answer's row for each."""
    from defectmine.report.files import encode_png

    rows = []
    for (name, data), result in zip(uploads, scored):
        item = store.add(name, result, data=data)
        row = {"name": name, "score": result.score, "decision": result.decision, "areas": result.areas,
               "predicted_class": result.predicted_class, "review_id": item.id}
        if heatmap:
            row["heatmap_png"] = (base64.b64encode(encode_png(result.overlay)).decode("ascii")
                                  if result.overlay is not None else None)
        rows.append(row)
    return rows


async def _json_object(request) -> dict:
    try:
        body = await request.json()
    except Exception:
        raise RequestError(400, "request body: not JSON. Fix: send {\"label\": ..., \"reviewer\": ...}.") from None
    if not isinstance(body, dict):
        raise RequestError(422, "request body: expected a JSON object {\"label\": ..., \"reviewer\": ...}.")
    return body


def score_folder(served: ServedModel, store: ReviewStore, settings: ServeSettings) -> int:
    """Score every image of `settings.review_folder` not yet in the queue into it (at start, on the
    scoring thread); unreadable files are logged and left out. Returns how many were added."""
    from defectmine.pipeline.predict import stream_batches
    from defectmine.pipeline.predict_inputs import DecodedFiles, list_inputs

    found = list_inputs(settings.review_folder, exclude=store.folder)
    items = [item for item in found.items if not store.has_image(item.path)]
    added = 0
    for batch in stream_batches(DecodedFiles(items, served.spec, settings.overlay_side), settings.max_batch):
        for bad in (d for d in batch if d.model_input is None):
            log.warning("%s: left out of the review queue (%s)", items[bad.index].path, bad.reason)
        good = [d for d in batch if d.model_input is not None]
        for decoded, result in zip(good, served.score(good) if good else []):
            path = items[decoded.index].path
            store.add(Path(path).name, result, image_path=path)
            added += 1
    return added
