"""The HTTP API (FastAPI, OpenAPI at /docs and /openapi.json) and its web page.

Routes: ``POST /v1/identify`` (every face: box, top-k identities, unknown below the
calibrated threshold), ``POST /v1/verify`` (two photos: same person?),
``POST /v1/verify/identity`` (a photo against an enrolled identity), ``GET /v1/identities``,
``GET /v1/model``, ``GET /healthz`` and the page at ``/``. The newest registered model is
served and followed (`ModelWatcher`); until one is loaded the model routes answer 503.

Limits: a request body over the upload limit is refused with 413 while it streams in (the
whole body is never buffered); each image is checked by `facescale.serving.images.load_image`
(format, pixel count, truncation) before decoding. Every refusal is a 4xx JSON
``{"detail": ..., "reason": ...}``. With ``serving.token`` set, every ``/v1`` route needs
``Authorization: Bearer <token>``.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations, which name
# dependencies local to `create_app`.
import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager, suppress
from importlib import metadata, resources
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from facescale.config import ServingSettings
from facescale.errors import FacescaleError, NotFoundError
from facescale.serving.images import ImageLimits, ImageRejected, load_image
from facescale.serving.loading import ModelWatcher, image_limits
from facescale.serving.recognizer import Recognizer

log = logging.getLogger(__name__)
__version__ = metadata.version("facescale")

MULTIPART_OVERHEAD = 64 * 1024  # form boundaries and fields besides the images


# -- response models (the OpenAPI schema) ---------------------------------------------------------
class BoxOut(BaseModel):
    x: int
    y: int
    width: int
    height: int


class CandidateOut(BaseModel):
    identity: str
    slug: str
    label: int
    confidence: float


BackendName = Literal["model", "dlib"]


class FaceOut(BaseModel):
    box: BoxOut
    identity: str | None = Field(description="the top candidate, or null when unknown")
    unknown: bool
    confidence: float = Field(
        description="the top candidate's score: softmax probability (model backend) or cosine similarity "
        "to its nearest enrolled photo (dlib backend)"
    )
    backend: BackendName = Field(description="the backend that gave this answer")
    threshold: float = Field(description="the backend's calibrated unknown threshold")
    candidates: list[CandidateOut]


class IdentifyOut(BaseModel):
    model_id: str
    backend: BackendName = Field(description="the backend that answered")
    width: int
    height: int
    unknown_threshold: float
    faces: list[FaceOut]


class VerifyOut(BaseModel):
    model_id: str
    same: bool
    similarity: float = Field(description="cosine similarity of the two embeddings")
    threshold: float = Field(description="the calibrated threshold: same when similarity >= threshold")
    backend: BackendName = Field(description="the backend that answered")
    identity: str | None = None
    enrolled_photos: int | None = None


class IdentityOut(BaseModel):
    label: int
    name: str
    slug: str


class IdentitiesOut(BaseModel):
    model_id: str
    identities: list[IdentityOut]


class ModelOut(BaseModel):
    model_id: str
    version_id: str
    classes: int
    image_size: int
    calibrated: bool
    default_backend: BackendName = Field(description="the backend that answers unless a request names one")
    unknown_threshold: float = Field(description="the default backend's unknown threshold")
    unknown_thresholds: dict[str, float]
    thresholds: dict[str, dict[str, float]]
    identify_scores: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per backend, identification measured on the version's validation photos"
    )


HealthStatus = Literal["ok", "loading", "no_model", "error"]


class HealthOut(BaseModel):
    status: HealthStatus
    version: str
    model_id: str | None
    loading: str | None = None
    error: str | None = None


class ErrorOut(BaseModel):
    detail: str
    reason: str
    errors: list[dict[str, Any]] | None = Field(None, description="per-field problems of an invalid request")


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": text}
    for code, text in {
        400: "not a usable image (empty, not an image, truncated, too small)",
        401: "missing or wrong bearer token (when the server requires one)",
        404: "unknown or not enrolled identity",
        413: "file or image too large",
        415: "image format not accepted",
        422: "no face, several faces where one is needed, or invalid parameters",
        503: "no model loaded yet, or the model is not calibrated for verification",
    }.items()
}


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` with 413, by header or while streaming."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Any]], send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(send)
            return
        seen = 0
        exceeded = started = False

        async def limited() -> Any:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    exceeded = True
                    raise _TooLarge
            return message

        async def tracking_send(message: Any) -> None:
            # Once the body ran over, whatever the app answers (FastAPI turns a failed form read
            # into a 400) is replaced by the 413.
            nonlocal started
            if exceeded:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        with suppress(_TooLarge):
            await self.app(scope, limited, tracking_send)
        if exceeded and not started:
            await self._refuse(send)

    async def _refuse(self, send: Any) -> None:
        body = json.dumps(
            {"detail": f"request body over the limit of {self.max_bytes} bytes", "reason": "too_large"}
        ).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def create_app(settings: ServingSettings, watcher: ModelWatcher, *, start_watcher: bool = True) -> FastAPI:
    """The API over a model watcher (see `facescale.serving.loading`).

    Args:
        settings: the ``serving`` settings (limits, token).
        watcher: supplies the served model.
        start_watcher: start the watcher's thread with the app (tests may drive it by hand).
    """
    limits: ImageLimits = image_limits(settings)
    token = settings.token.get_secret_value() if settings.token is not None else None
    bearer = HTTPBearer(auto_error=False, description="serving.token, when set")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if start_watcher:
            watcher.start()
        yield
        if start_watcher:
            watcher.stop()

    app = FastAPI(
        title="facescale",
        version=__version__,
        summary="Identify and verify faces with the newest registered facescale model.",
        lifespan=lifespan,
    )

    async def authorised(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if token is None:
            return
        if credentials is None or not secrets.compare_digest(credentials.credentials.encode(), token.encode()):
            raise HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})

    def served() -> Recognizer:
        recognizer = watcher.current
        if recognizer is None:
            loading = f"loading model {watcher.loading}" if watcher.loading else None
            detail = watcher.error or loading or "no model registered yet"
            raise HTTPException(503, detail)
        return recognizer

    Model = Annotated[Recognizer, Depends(served)]
    # Only a server that requires a token declares the bearer scheme in its OpenAPI schema.
    guarded = [Depends(authorised)] if token is not None else []

    @app.exception_handler(ImageRejected)
    async def _rejected(_: Request, exc: ImageRejected) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "reason": exc.reason}, status_code=exc.status)

    @app.exception_handler(FacescaleError)
    async def _failed(_: Request, exc: FacescaleError) -> JSONResponse:
        status = 404 if isinstance(exc, NotFoundError) else 503
        return JSONResponse({"detail": str(exc), "reason": type(exc).__name__}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = jsonable_encoder(exc.errors(), exclude={"input", "ctx", "url"})
        where = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
        return JSONResponse({"detail": f"invalid request: {where}", "reason": "invalid_request", "errors": errors}, 422)

    @app.exception_handler(StarletteHTTPException)  # FastAPI's and Starlette's own (e.g. bad multipart data)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        reason = {401: "unauthorised", 404: "not_found", 405: "method_not_allowed", 503: "unavailable"}.get(
            exc.status_code, "bad_request" if exc.status_code == 400 else "http_error"
        )
        return JSONResponse({"detail": exc.detail, "reason": reason}, status_code=exc.status_code, headers=exc.headers)

    async def read(upload: UploadFile, name: str) -> Any:
        data = await upload.read(limits.max_bytes + 1)
        return await run_in_threadpool(load_image, data, limits, name)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(resources.files("facescale.serving").joinpath("static/index.html").read_text("utf-8"))

    @app.get("/healthz", response_model=HealthOut, tags=["service"])
    async def health() -> HealthOut:
        current = watcher.current
        status: HealthStatus = (
            "ok" if current else "loading" if watcher.loading else "error" if watcher.error else "no_model"
        )
        return HealthOut(
            status=status, version=__version__, model_id=current.model_id if current else None,
            loading=watcher.loading, error=watcher.error,
        )

    @app.get("/v1/model", response_model=ModelOut, responses=ERRORS, dependencies=guarded, tags=["model"])
    async def model_info(recognizer: Model) -> ModelOut:
        calibration = recognizer.calibration
        image_size = await run_in_threadpool(lambda: recognizer.image_size)
        return ModelOut(
            model_id=recognizer.model_id, version_id=recognizer.version_id, classes=len(recognizer.labels),
            image_size=image_size, calibrated=calibration is not None,
            default_backend=recognizer.default_backend,
            unknown_threshold=recognizer.unknown_threshold(),
            unknown_thresholds=calibration.unknown_thresholds if calibration is not None else {"model": 0.5},
            thresholds=calibration.thresholds if calibration is not None else {},
            identify_scores=calibration.report.get("identify", {}) if calibration is not None else {},
        )

    @app.get("/v1/identities", response_model=IdentitiesOut, responses=ERRORS, dependencies=guarded, tags=["model"])
    async def identities(recognizer: Model) -> IdentitiesOut:
        return IdentitiesOut(
            model_id=recognizer.model_id,
            identities=[IdentityOut(label=k, **v) for k, v in sorted(recognizer.labels.items())],
        )

    @app.post("/v1/identify", response_model=IdentifyOut, responses=ERRORS, dependencies=guarded, tags=["faces"])
    async def identify(
        recognizer: Model,
        image: Annotated[UploadFile, File(description="a photo (JPEG, PNG, WebP, ...)")],
        top_k: Annotated[int, Query(ge=1, le=50, description="identities listed per face")] = settings.top_k,
        backend: Annotated[
            BackendName | None, Query(description="the backend to answer (default: the model's calibrated default)")
        ] = None,
    ) -> IdentifyOut:
        chosen = recognizer.backend(backend)
        pixels = await read(image, "image")
        matches = await run_in_threadpool(recognizer.identify, pixels, top_k, chosen)
        return IdentifyOut(
            model_id=recognizer.model_id, backend=chosen, width=pixels.shape[1], height=pixels.shape[0],
            unknown_threshold=recognizer.unknown_threshold(chosen), faces=[FaceOut(**m.to_json()) for m in matches],
        )

    @app.post("/v1/verify", response_model=VerifyOut, responses=ERRORS, dependencies=guarded, tags=["faces"])
    async def verify(
        recognizer: Model,
        first: Annotated[UploadFile, File(description="a photo of one person")],
        second: Annotated[UploadFile, File(description="another photo of one person")],
        backend: Annotated[
            BackendName | None, Form(description="embedding backend (default: the model's calibrated default)")
        ] = None,
    ) -> VerifyOut:
        a, b = await read(first, "first image"), await read(second, "second image")
        result = await run_in_threadpool(recognizer.verify_pair, a, b, backend)
        return VerifyOut(model_id=recognizer.model_id, **result)

    @app.post("/v1/verify/identity", response_model=VerifyOut, responses=ERRORS, dependencies=guarded, tags=["faces"])
    async def verify_identity(
        recognizer: Model,
        image: Annotated[UploadFile, File(description="a photo of one person")],
        identity: Annotated[
            str, Form(min_length=1, max_length=200, description="name or slug of an enrolled identity")
        ],
        backend: Annotated[
            BackendName | None, Form(description="embedding backend (default: the model's calibrated default)")
        ] = None,
    ) -> VerifyOut:
        recognizer.label_of(identity)  # an unknown name is a 404 before any image work
        pixels = await read(image, "image")
        result = await run_in_threadpool(recognizer.verify_identity, pixels, identity, backend)
        return VerifyOut(model_id=recognizer.model_id, **result)

    app.add_middleware(BodyLimit, max_bytes=2 * limits.max_bytes + MULTIPART_OVERHEAD)
    return app
