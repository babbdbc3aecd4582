"""The review view's FastAPI app: pages, photos, stored files and the keep / exclude / undo routes.

Airflow's api-server mounts it under ``/facescale`` (`facescale.app.review.plugin`), beside its
own API; plugin routes get no protection from Airflow on their own, so every route here
depends on `reader` or `editor`, which ask Airflow's configured auth manager about the caller
(the UI's session cookie or an API bearer token: Airflow's own `get_user`):

* looking (pages, photos, Data Docs, plots) needs the custom view ``facescale`` with GET;
* writing the exclusion list needs that view with POST **and** permission to edit the DAG
  whose next run reads the list (``facescale_nightly``): Airflow's simple auth manager grants
  every custom view to a viewer whatever the method, so the DAG permission is what keeps a
  reader from writing there (a FAB or other manager decides both by its own rules).

No credentials: 401 (a page redirects to the login page); not allowed: 403; either way
nothing is written. The write routes take JSON bodies only, which a cross-site form cannot
send. What the pages show comes from `pages`; the store is the configured one
(`facescale.config`: ``FACESCALE_STORAGE__ROOT`` and the rest, as for the CLI), read per request.

`pages` (and with it the storage layer and pyarrow) is imported by the routes, not here: Airflow
loads its plugins in every process, each task's included, and only the api-server serves pages.
"""

from __future__ import annotations

import logging
import mimetypes
from collections import OrderedDict
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from threading import Lock
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.templating import Jinja2Templates
from jinja2 import pass_context
from pydantic import BaseModel, Field

from facescale.config import load_settings
from facescale.errors import FacescaleError, NotFoundError

log = logging.getLogger(__name__)

#: The custom view Airflow's auth manager is asked about.
RESOURCE = "facescale"
#: The DAG whose next run reads the exclusion list: editing it is what writing the list needs.
STEERED_DAG = "facescale_nightly"
TEMPLATES = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))


@pass_context
def _path_for(context: Mapping[str, Any], name: str, /, **params: Any) -> str:
    """A route's path (no scheme or host): links stay right behind a TLS proxy and under Airflow's base URL."""
    return str(context["request"].url_for(name, **params).path)


TEMPLATES.env.globals["url_for"] = _path_for

# -- access ---------------------------------------------------------------------------------------


async def _user(
    request: Request, bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(HTTPBearer(auto_error=False))]
) -> Any:
    """The caller as Airflow's auth manager knows them (401 without a valid session cookie or token)."""
    from airflow.api_fastapi.core_api.security import get_user

    return await get_user(request, None, bearer)


def _auth_manager() -> Any:
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager()


def reader(user: Annotated[Any, Depends(_user)]) -> str:
    """Allow a caller who may look at the facescale view; returns their name."""
    if not _auth_manager().is_authorized_custom_view(method="GET", resource_name=RESOURCE, user=user):
        raise HTTPException(403, "not allowed to look at the facescale view")
    return str(user.get_name())


def editor(user: Annotated[Any, Depends(_user)]) -> str:
    """Allow a caller who may steer the nightly DAG (edit it) and post to the facescale view; returns their name."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

    manager = _auth_manager()
    if not (manager.is_authorized_custom_view(method="POST", resource_name=RESOURCE, user=user)
            and manager.is_authorized_dag(method="PUT", details=DagDetails(id=STEERED_DAG), user=user)):
        raise HTTPException(403, f"not allowed to change the exclusion list (needs edit access to {STEERED_DAG})")
    return str(user.get_name())


Reader = Annotated[str, Depends(reader)]
Editor = Annotated[str, Depends(editor)]

# -- the store ------------------------------------------------------------------------------------


@cache
def _services() -> Any:
    from facescale.app.services import Services

    return Services(load_settings())


def _root() -> Any:
    return _services().root()


class _Crops:
    """Crops of the identities looked at lately, read once per (chunk, identity) and kept while the review table is.

    A page of an identity asks for each of its photos: the first request reads which chunk holds
    each photo (the review table, filtered to the identity) and that chunk's crops of the
    identity; the others are answered from memory. Everything is keyed on the review table's
    signature, so a curation or an erasure that rewrites the table empties the cache.
    """

    def __init__(self, size: int = 16) -> None:
        self.size, self.lock = size, Lock()
        self.entries: OrderedDict[tuple[str | None, str, str], dict[str, Any]] = OrderedDict()

    def _cached(self, key: tuple[str | None, str, str], load: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        with self.lock:
            found = self.entries.get(key)
            if found is not None:
                self.entries.move_to_end(key)
                return found
        found = load()
        with self.lock:
            self.entries[key] = found
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)
        return found

    def get(self, root: Any, slug: str, image_id: str) -> bytes:
        from . import pages
        signature = root.review.signature()
        chunk = self._cached((signature, "", slug), lambda: pages.photo_chunks(root, slug)).get(image_id)
        if chunk is None:
            raise NotFoundError(f"no photo {image_id} of {slug} in the last curation")
        crops = self._cached((signature, chunk, slug), lambda: root.crops.crops_of(chunk, slug))
        if image_id not in crops:
            raise NotFoundError(f"no crop of photo {image_id}")
        return bytes(crops[image_id])


CROPS = _Crops()

# -- the app --------------------------------------------------------------------------------------


class PhotoRef(BaseModel):
    """A photo of an identity, as the write routes take it."""

    identity_slug: str = Field(min_length=1, max_length=100)
    image_id: str = Field(min_length=1, max_length=200)


def create_app() -> FastAPI:
    """The review view's app (Airflow mounts it; `plugin`)."""
    app = FastAPI(title="facescale review", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(HTTPException)
    async def _to_login(request: Request, exc: HTTPException) -> Response:
        wants_page = request.method == "GET" and "text/html" in request.headers.get("accept", "")
        if exc.status_code == 401 and wants_page:
            return RedirectResponse(_auth_manager().get_url_login(next_url=str(request.url)), status_code=303)
        return Response(exc.detail if isinstance(exc.detail, str) else str(exc.detail), exc.status_code,
                        media_type="text/plain")

    @app.exception_handler(FacescaleError)
    async def _not_found(request: Request, exc: FacescaleError) -> Response:
        status = 404 if isinstance(exc, NotFoundError) else 500
        if status == 500:
            log.error("facescale review view: %s", exc)
        return Response(str(exc), status, media_type="text/plain")

    # The routes below are plain functions: FastAPI runs them in its thread pool, so reading the store
    # (an object store, a review table of a big store) never holds up the api-server's event loop.
    def page(name: str, request: Request, user: str, **context: Any) -> HTMLResponse:
        return TEMPLATES.TemplateResponse(request, f"{name}.html", {"user": user, **context})

    @app.get("/", include_in_schema=False)
    def home(request: Request, user: Reader) -> RedirectResponse:
        return RedirectResponse(request.url_for("growth_page"), status_code=303)

    @app.get("/growth", response_class=HTMLResponse)
    def growth_page(request: Request, user: Reader) -> HTMLResponse:
        from . import pages
        return page("growth", request, user, growth=pages.growth(_root()))

    @app.get("/versions/{version_id}", response_class=HTMLResponse)
    def version_page(request: Request, version_id: str, user: Reader) -> HTMLResponse:
        from . import pages
        return page("version", request, user, version=pages.version(_root(), version_id))

    @app.get("/identities/{slug}", response_class=HTMLResponse)
    def identity_page(request: Request, slug: str, user: Reader) -> HTMLResponse:
        from . import pages
        return page("identity", request, user, identity=pages.identity(_root(), slug))

    @app.get("/queue", response_class=HTMLResponse)
    def queue_page(request: Request, user: Reader) -> HTMLResponse:
        from . import pages
        return page("queue", request, user, queue=pages.queue(_root()))

    @app.get("/runs/{dag_id}/{run_id}", response_class=HTMLResponse)
    def run_page(
        request: Request, dag_id: str, run_id: str, user: Reader, caller: Annotated[Any, Depends(_user)]
    ) -> Response:
        from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

        from . import pages

        if not _auth_manager().is_authorized_dag(method="GET", details=DagDetails(id=dag_id), user=caller):
            raise HTTPException(403, f"not allowed to read DAG {dag_id}")
        versions, models = pages.run_versions(_asset_extras(dag_id, run_id))
        if len(versions) == 1 and not models:
            return RedirectResponse(request.url_for("version_page", version_id=versions[0]), status_code=303)
        return page("run", request, user, dag_id=dag_id, run_id=run_id, versions=versions, models=models,
                                 model_versions={m: _root().models.get(m).version_id for m in models})

    @app.get("/photos/{slug}/{image_id}.jpg")
    def photo(slug: str, image_id: str, user: Reader) -> Response:
        data = CROPS.get(_root(), slug, image_id)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/store/{path:path}")
    def stored(path: str, user: Reader) -> Response:
        from . import pages
        clean = pages.servable(path)
        location = _root().location
        full = location.path(clean)
        if not location.exists(full):
            raise NotFoundError(f"not in the store: {clean}")
        kind = mimetypes.guess_type(clean)[0] or "application/octet-stream"
        return Response(location.read_bytes(full), media_type=kind, headers={"Cache-Control": "private, max-age=60"})

    @app.post("/api/keep")
    def keep(ref: PhotoRef, user: Editor) -> dict[str, Any]:
        """A person keeps this photo: the cleaner never removes it again (`ExclusionList.keep`)."""
        root = _known(ref)
        changed = root.exclusions.keep(ref.identity_slug, [ref.image_id], by=user)
        return _answer(ref, "keep", bool(changed), changed[0] if changed else _entry(root, ref))

    @app.post("/api/exclude")
    def exclude(ref: PhotoRef, user: Editor) -> dict[str, Any]:
        """A person excludes this photo: every later version leaves it out (`ExclusionList.exclude`)."""
        root = _known(ref)
        changed = root.exclusions.exclude(ref.identity_slug, [ref.image_id], reason="reviewed_exclude", by=user)
        return _answer(ref, "exclude", bool(changed), changed[0] if changed else _entry(root, ref))

    @app.post("/api/undo")
    def undo(ref: PhotoRef, user: Editor) -> dict[str, Any]:
        """Take back the manual decision on this photo (`ExclusionList.undo`)."""
        return _answer(ref, "undo", True, _root().exclusions.undo(ref.identity_slug, ref.image_id))

    return app


def _known(ref: PhotoRef) -> Any:
    """The store, once it holds the photo: one the last curation did not decide about (a typo) is refused."""
    from . import pages

    root = _root()
    pages.photo_chunk(root, ref.identity_slug, ref.image_id)
    return root


def _entry(root: Any, ref: PhotoRef) -> Any:
    """The photo's entry on the exclusion list (None when it has none)."""
    return next((e for e in root.exclusions.entries(ref.identity_slug) if e.source_image_id == ref.image_id), None)


def _answer(ref: PhotoRef, action: str, changed: bool, entry: Any) -> dict[str, Any]:
    """A write route's answer: what it did, and the photo's entry on the list now."""
    from . import pages

    decision = pages.Decision.of(entry).model_dump(mode="json") if entry else None
    return {"action": action, "changed": changed, "identity_slug": ref.identity_slug, "image_id": ref.image_id,
            "decision": decision}


def _asset_extras(dag_id: str, run_id: str) -> list[dict[str, object]]:
    """The ``extra`` of every asset event a DAG run emitted (Airflow's metadata database)."""
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(select(AssetEvent.extra).where(
            AssetEvent.source_dag_id == dag_id, AssetEvent.source_run_id == run_id).order_by(AssetEvent.id))
        return [dict(extra or {}) for extra in rows]
