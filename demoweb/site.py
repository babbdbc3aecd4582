"""The demo web: a local image-search site over a folder of face photos, with realistic and hostile results."""

# GET /search?q=NAME shows the first page_size results of a result list that is deterministic
# from (name, seed): real photos mixed with scenes, pairs, wrong people, face-free images,
# near and exact duplicates, corrupt files and, in hostile mode, misbehaving URLs. JavaScript
# appends the next pages from /api/results as the page is scrolled, then adds #fs-end.
# The same lists in Bing's shape (/images/search, /images/async); Google's (/search?tbm=isch)
# and DuckDuckGo's (/?q=, /i.js) pages show lists of their own: each engine's copies of the
# same photos (scenes.render_copy). /api/truth (and truth()) say what every result really is.
# DemoWeb runs the site in a subprocess for tests and benchmarks; serve() runs it in the
# foreground.

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import html
import logging
import queue
import random
import signal
import struct
import subprocess
import sys
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

from aiohttp import web

from facescale.errors import FacescaleError, NotFoundError

from . import scenes, shapes
from .faces import FaceTruth

log = logging.getLogger("facescale.demoweb")  # the same name when run with -m

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png"}
TROUBLE_KINDS = ("scene", "pair", "other", "noface", "resized", "dup", "corrupt")
ORIGS_PER_CYCLE = 10  # each trouble kind appears once per this many real photos
HOSTILE_NAMES = (
    "slow", "404", "500", "flaky", "redirect-loop", "html", "truncated",
    "empty", "bomb", "huge", "endless", "wrong-type", "noai",
)  # fmt: skip
# The downloader verdict each hostile result should get (a reason code; None = accepted).
HOSTILE_EXPECTED: dict[str, str | None] = {
    "hostile-404": "http_404",
    "hostile-500": "http_500",
    "hostile-slow": "timeout",
    "hostile-redirect-loop": "too_many_redirects",
    "hostile-html": "not_an_image",
    "hostile-truncated": "corrupt",
    "hostile-empty": "empty",
    "hostile-bomb": "too_many_pixels",
    "hostile-huge": "body_too_large",
    "hostile-endless": "body_too_large",
    "hostile-wrong-type": None,
    "hostile-noai": "noai",
    "hostile-flaky": None,
}
# Hostile URLs that serve the person's photo re-encoded at these JPEG qualities (unique bytes).
HOSTILE_PHOTO_QUALITY = {"slow": 90, "flaky": 91, "truncated": 92, "wrong-type": 93, "noai": 94}
HUGE_BYTES = 100 * 1024 * 1024
STREAM_CHUNK = 256 * 1024  # per write of the streamed hostile bodies: bounds memory per connection
CACHE_BYTES = 512 * 1024 * 1024
IMAGE_CACHE_CONTROL = "public, max-age=86400"

_KIND_CODES = {kind: code for code, kind in enumerate(("orig", *TROUBLE_KINDS, "hostile"))}
_KINDS_BY_CODE = {code: kind for kind, code in _KIND_CODES.items()}
_TOKEN_PAYLOAD = struct.Struct(">BHHHHI")  # kind, person, photo, other, other_photo, variant
_TAG_BYTES = 7  # tag (7) + masked payload (13) = 20 bytes = 32 base32 characters, no padding


def name_key(name: str) -> str:
    """How names are compared: case-insensitive, underscores as spaces, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFC", name).replace("_", " ").split()).casefold()


class _Catalog:
    """The photos root: one sub-folder of photos per person, indexed by sorted position."""

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise NotFoundError(f"photos folder not found: {root}")
        self.root = root
        self.folders: list[str] = []
        self.photos: list[list[str]] = []
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            files = sorted(f.name for f in folder.iterdir() if f.suffix.lower() in PHOTO_SUFFIXES and f.is_file())
            if files:
                self.folders.append(folder.name)
                self.photos.append(files[: 1 << 16])
        if len(self.folders) >= 1 << 16:
            raise FacescaleError(f"too many people in {root} (at most 65535)")
        self.by_key = {name_key(folder): i for i, folder in enumerate(self.folders)}
        self._sizes: dict[tuple[int, int], tuple[int, int]] = {}
        self.faces = FaceTruth(root)

    def find(self, name: str) -> int | None:
        return self.by_key.get(name_key(name))

    def display(self, person: int) -> str:
        return self.folders[person].replace("_", " ")

    def path(self, person: int, photo: int) -> Path:
        return self.root / self.folders[person] / self.photos[person][photo]

    def relpath(self, person: int, photo: int) -> str:
        return f"{self.folders[person]}/{self.photos[person][photo]}"

    def size(self, person: int, photo: int) -> tuple[int, int]:
        """A photo's width and height, read from its header once."""
        key = (person, photo)
        if key not in self._sizes:
            self._sizes[key] = scenes.image_size(self.path(person, photo).read_bytes())
        return self._sizes[key]

    def face(self, person: int, photo: int) -> scenes.Box | None:
        """Where the face is in a photo (`faces.FaceTruth`), None when that is not known."""
        return self.faces.box(self.relpath(person, photo), self.size(person, photo))


@lru_cache(maxsize=8)
def _catalog(root: str) -> _Catalog:
    return _Catalog(Path(root))


@dataclass(frozen=True)
class _Entry:
    """One search result, enough to render it: what kind and from which photos."""

    kind: str  # "orig", one of TROUBLE_KINDS, or "hostile-<name>"
    person: int  # the person searched for
    photo: int = 0  # the person's photo used (index into HOSTILE_NAMES for hostile entries)
    other: int = 0  # another person (pair, other)
    other_photo: int = 0
    variant: int = 0  # seeds the synthesis (geometry, quality, background)
    engine: int = 0  # whose result list: 0 the demo's (and Bing's), else 1 + index in scenes.COPY_ENGINES

    def token(self, seed: int) -> str:
        code = _KIND_CODES["hostile" if self.kind.startswith("hostile-") else self.kind] | self.engine << 4
        payload = _TOKEN_PAYLOAD.pack(code, self.person, self.photo, self.other, self.other_photo, self.variant)
        tag = _tag(payload, seed)
        return base64.b32encode(tag + _mask(payload, tag, seed)).decode("ascii").lower()

    @property
    def hostile_name(self) -> str:
        return self.kind.removeprefix("hostile-")

    @property
    def copied(self) -> bool:
        """Whether the image is another site's copy (`scenes.render_copy`): a copy engine's image that decodes."""
        return self.engine > 0 and self.kind != "corrupt" and not self.kind.startswith("hostile-")

    @property
    def copy_variant(self) -> int:
        """Seeds the copy's geometry, from everything the entry is."""
        return int.from_bytes(hashlib.blake2b(repr(self).encode(), digest_size=4).digest(), "big")


def _tag(payload: bytes, seed: int) -> bytes:
    return hashlib.blake2b(payload, digest_size=_TAG_BYTES, key=f"facescale-demoweb/{seed}".encode()).digest()


def _mask(data: bytes, tag: bytes, seed: int) -> bytes:
    """XOR with a keystream drawn from the tag: tokens look random, yet stay deterministic."""
    stream = hashlib.blake2b(tag, digest_size=len(data), key=f"facescale-demoweb-mask/{seed}".encode()).digest()
    return bytes(a ^ b for a, b in zip(data, stream, strict=True))


def _decode_token(token: str, seed: int, catalog: _Catalog) -> _Entry | None:
    """The entry a token names, or None for anything this site did not issue."""
    if len(token) != 32:
        return None
    try:
        raw = base64.b32decode(token.upper())
    except ValueError:
        return None
    tag = raw[:_TAG_BYTES]
    payload = _mask(raw[_TAG_BYTES:], tag, seed)
    if not hmac.compare_digest(tag, _tag(payload, seed)):
        return None
    code, person, photo, other, other_photo, variant = _TOKEN_PAYLOAD.unpack(payload)
    kind, engine = _KINDS_BY_CODE.get(code & 15), code >> 4
    if kind is None or engine > len(scenes.COPY_ENGINES) or person >= len(catalog.folders):
        return None
    if other >= len(catalog.folders):
        return None
    if kind == "hostile":
        found = HOSTILE_NAMES[photo] if photo < len(HOSTILE_NAMES) else None
        return _Entry(f"hostile-{found}", person, photo, engine=engine) if found else None
    if photo >= len(catalog.photos[person]) or other_photo >= len(catalog.photos[other]):
        return None
    return _Entry(kind, person, photo, other, other_photo, variant, engine)


def engine_index(engine: str) -> int:
    """Which result list an engine's pages show: 0 the demo's (Bing's pages show it too), else its own."""
    if engine in ("demo", "bing"):
        return 0
    if engine in scenes.COPY_ENGINES:
        return 1 + scenes.COPY_ENGINES.index(engine)
    raise ValueError(f"the demo web has no {engine!r} pages (it has demo, bing, {', '.join(scenes.COPY_ENGINES)})")


def _plan(catalog: _Catalog, person: int, seed: int, max_results: int, hostile: bool, engine: int = 0) -> list[_Entry]:
    """The result list for one person: deterministic from (folder name, seed, engine).

    Each engine of `scenes.COPY_ENGINES` has a list of its own: the same photos in another
    order, each served as that engine's copy (`scenes.render_copy`: another size, a border cut
    off, a watermark, a re-encode), so scraping several engines brings the same photo several
    times, as the web does.

    Every ``ORIGS_PER_CYCLE`` real photos come with one of each trouble kind, shuffled, and
    the list stops when the real photos run out (no repeats); the first result is a real
    photo. Derived results (dup, resized, scene, pair, corrupt) use a photo listed earlier,
    so truncating the list never orphans them. Hostile results are inserted at random ranks
    (never rank 0) by a separate generator: the other results keep their order.
    """
    folder = catalog.folders[person]
    rng = random.Random(
        f"facescale-demoweb/{seed}/{folder}" + (f"/{scenes.COPY_ENGINES[engine - 1]}" if engine else "")
    )
    photos = list(range(len(catalog.photos[person])))
    rng.shuffle(photos)
    troubles = [k for k in TROUBLE_KINDS if len(catalog.folders) > 1 or k not in ("pair", "other")]
    kinds: list[str] = []
    for start in range(0, len(photos), ORIGS_PER_CYCLE):
        cycle = ["orig"] * len(photos[start : start + ORIGS_PER_CYCLE]) + troubles
        rng.shuffle(cycle)
        kinds.extend(cycle)
    first = kinds.index("orig")
    kinds[0], kinds[first] = kinds[first], kinds[0]

    hostile_names = list(HOSTILE_NAMES) if hostile else []
    budget = max(min(max_results, 1), max_results - len(hostile_names))  # rank 0 stays a real photo
    entries: list[_Entry] = []
    listed: list[int] = []
    unused = iter(photos)
    for kind in kinds:
        if len(entries) == budget:
            break
        if kind == "orig":
            photo = next(unused)
            listed.append(photo)
            entries.append(_Entry("orig", person, photo, engine=engine))
            continue
        variant = rng.getrandbits(32)
        photo = rng.choice(listed)
        other = other_photo = 0
        if kind in ("pair", "other"):
            other = rng.randrange(len(catalog.folders) - 1)
            other += other >= person
            other_photo = rng.randrange(len(catalog.photos[other]))
        entries.append(_Entry(kind, person, photo, other, other_photo, variant, engine))

    if hostile_names:
        hrng = random.Random(f"facescale-demoweb/{seed}/{folder}/hostile")
        hrng.shuffle(hostile_names)
        total = min(max_results, len(entries) + len(hostile_names))
        count = total - len(entries)
        ranks = set(hrng.sample(range(1, total), count) if entries else range(count))
        base, extra = iter(entries), iter(hostile_names)
        merged = []
        for rank in range(total):
            if rank in ranks:
                name = next(extra)
                merged.append(_Entry(f"hostile-{name}", person, HOSTILE_NAMES.index(name), engine=engine))
            else:
                merged.append(next(base))
        entries = merged
    return entries


@dataclass(frozen=True)
class _Result:
    """A result as the site shows it (``shown``) and what it is (``entry``)."""

    entry: _Entry
    shown: shapes.Result

    @property
    def rank(self) -> int:
        return self.shown.rank

    @property
    def full(self) -> str:
        assert self.shown.full is not None  # the demo's results are all readable
        return self.shown.full


def _hostile_url(catalog: _Catalog, entry: _Entry) -> str:
    name = entry.hostile_name
    return f"/hostile/{name}.{'png' if name == 'bomb' else 'jpg'}?q={quote(catalog.folders[entry.person], safe='')}"


def _results(
    catalog: _Catalog, person: int, seed: int, max_results: int, hostile: bool, engine: int = 0
) -> list[_Result]:
    display = catalog.display(person)
    out = []
    for rank, entry in enumerate(_plan(catalog, person, seed, max_results, hostile, engine)):
        token = entry.token(seed)
        full = _hostile_url(catalog, entry) if entry.kind.startswith("hostile-") else f"/img/{token}.jpg"
        shown = shapes.Result(rank, full, f"/page/{token}", f"/thumb/{token}.jpg", f"{display} - image {rank + 1}")
        out.append(_Result(entry, shown))
    return out


def _truth_row(catalog: _Catalog, result: _Result) -> dict[str, Any]:
    """What a result really shows: kind, identity, per-face identities and boxes, source photos, and whether
    every face box is known (``known``: false when a source photo's face could not be located)."""
    e = result.entry
    person = catalog.display(e.person)
    identity: str | None = person
    faces: list[scenes.Box] = []
    identities: list[str] = []
    sources: list[str] = []
    known = True

    def add(box: scenes.Box | None, who: str, scale: float = 1.0, dx: int = 0, dy: int = 0) -> None:
        nonlocal known
        if box is None:
            known = False
            return
        faces.append(scenes.map_box(box, scale, dx, dy))
        identities.append(who)

    if e.kind.startswith("hostile-"):
        if e.hostile_name not in HOSTILE_PHOTO_QUALITY:
            identity = None
        else:  # the person's first photo, re-encoded (truncated: it does not decode, so no face)
            sources = [catalog.relpath(e.person, 0)]
            if e.hostile_name != "truncated":
                add(catalog.face(e.person, 0), person)
    elif e.kind == "noface":
        identity = None
    elif e.kind == "other":
        identity = catalog.display(e.other)
        sources = [catalog.relpath(e.other, e.other_photo)]
        add(catalog.face(e.other, e.other_photo), identity)
    elif e.kind == "corrupt":  # a truncated file: it does not decode, so no face
        sources = [catalog.relpath(e.person, e.photo)]
    elif e.kind == "pair":
        mine, theirs = (e.person, e.photo), (e.other, e.other_photo)
        left, right = (mine, theirs) if e.variant & 1 == 0 else (theirs, mine)
        layout = scenes.pair_layout(catalog.size(*left), catalog.size(*right))
        for (who, photo), (dx, dy) in ((left, layout.first), (right, layout.second)):
            add(catalog.face(who, photo), catalog.display(who), 1.0, dx, dy)
            sources.append(catalog.relpath(who, photo))
    else:
        box = catalog.face(e.person, e.photo)
        if e.kind == "resized":
            add(box, person, scenes.resize_params(e.variant)[0])
        elif e.kind == "scene":
            scene = scenes.scene_layout(e.variant, catalog.size(e.person, e.photo))
            add(box, person, scene.scale, scene.x, scene.y)
        else:
            add(box, person)
        sources = [catalog.relpath(e.person, e.photo)]
    if e.copied and faces:
        size = _base_size(catalog, e)
        copy = scenes.copy_layout(e.engine, e.copy_variant, size)
        faces = [scenes.copy_face(face, copy) for face in faces]
    return {
        "rank": result.rank,
        "full": result.full,
        "page": result.shown.page,
        "thumb": result.shown.thumb,
        "kind": e.kind,
        "identity": identity,
        "faces": [list(face) for face in faces],
        "identities": identities,
        "sources": sources,
        "known": known,
    }


def _base_size(catalog: _Catalog, e: _Entry) -> tuple[int, int]:
    """The size of an entry's image before an engine copied it (kinds with faces only)."""
    if e.kind == "other":
        return catalog.size(e.other, e.other_photo)
    size = catalog.size(e.person, e.photo)
    if e.kind == "resized":
        scale = scenes.resize_params(e.variant)[0]
        return round(size[0] * scale), round(size[1] * scale)
    if e.kind == "scene":
        return scenes.scene_layout(e.variant, size).canvas
    if e.kind == "pair":
        mine, theirs = catalog.size(e.person, e.photo), catalog.size(e.other, e.other_photo)
        return scenes.pair_layout(*((mine, theirs) if e.variant & 1 == 0 else (theirs, mine))).canvas
    return size


def truth(
    photos_root: Path,
    name: str,
    seed: int = 0,
    max_results: int = 120,
    hostile: bool = False,
    engine: str = "demo",
) -> list[dict[str, Any]]:
    """The ground truth of ``/search?q=name`` (or of ``engine``'s pages for the name) in rank order (no server needed).

    Each row: ``rank`` (0-based), ``full``/``page``/``thumb`` (absolute paths, as on the
    results page), ``kind``, ``identity`` (who the image shows; None for face-free and
    failing hostile results), ``faces`` ([x, y, w, h] boxes in the served image; none for
    files that do not decode), ``identities`` (per face, left to right in pairs), ``sources``
    (the photos it was made from, relative to the root), ``known`` (false when a source photo's
    face box is unknown: `faces.FaceTruth`; its faces are then left out of ``faces``, and a
    benchmark must leave the row out). Join with a scraper's absolute URLs
    by ``urljoin(base_url, full)``; expected downloader verdicts: `HOSTILE_EXPECTED`, and
    ``corrupt`` for kind ``corrupt``. ``engine``: ``demo`` and ``bing`` show one list,
    ``google`` and ``duckduckgo`` each their own copies of the same photos (`engine_index`).
    """
    index = engine_index(engine)
    catalog = _catalog(str(Path(photos_root).resolve()))
    person = catalog.find(name)
    if person is None:
        return []
    return [_truth_row(catalog, r) for r in _results(catalog, person, seed, max_results, hostile, index)]


class _ByteCache:
    """A thread-safe LRU of encoded images, bounded by total bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: Hashable, data: bytes) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            self._bytes += len(data) - (len(old) if old is not None else 0)
            self._items[key] = data
            while self._bytes > self.max_bytes and len(self._items) > 1:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= len(dropped)


def _content_type(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    return "image/jpeg"


def _int_param(request: web.Request, name: str) -> int:
    """The query parameter ``name`` as an integer (0 when absent); 400 when it is not one."""
    try:
        return int(request.query.get(name, "0"))
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be an integer") from None


class _Site:
    """The handlers and their state: the catalog, cached result lists and an LRU of image bytes."""

    def __init__(
        self, catalog: _Catalog, *, hostile: bool, seed: int, page_size: int, max_results: int, slow_seconds: float
    ) -> None:
        self.catalog = catalog
        self.hostile = hostile
        self.seed = seed
        self.page_size = page_size
        self.max_results = max_results
        self.slow_seconds = slow_seconds
        self.cache = _ByteCache(CACHE_BYTES)
        self._pending: dict[Hashable, asyncio.Future[bytes]] = {}
        self._results: dict[tuple[int, int], list[_Result]] = {}
        self._flaky_seen: set[str] = set()
        self._popular = sorted(range(len(catalog.folders)), key=lambda p: (-len(catalog.photos[p]), p))[:8]
        self._hostile: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] = {
            "slow.jpg": self._slow,
            "404.jpg": self._not_found,
            "500.jpg": self._server_error,
            "flaky.jpg": self._flaky,
            "redirect-loop.jpg": self._redirect_loop,
            "html.jpg": self._html_as_jpeg,
            "truncated.jpg": self._truncated,
            "empty.jpg": self._empty,
            "bomb.png": self._bomb,
            "huge.jpg": self._huge,
            "endless.jpg": self._endless,
            "wrong-type.jpg": self._wrong_type,
            "noai.jpg": self._noai,
        }

    # -- data --------------------------------------------------------------------------------
    def results(self, query: str, engine: int = 0) -> list[_Result]:
        person = self.catalog.find(query)
        if person is None:
            return []
        found = self._results.get((person, engine))
        if found is None:
            found = _results(self.catalog, person, self.seed, self.max_results, self.hostile, engine)
            self._results[(person, engine)] = found
        return found

    def photo(self, person: int, photo: int) -> bytes:
        """An original's bytes, read once (called from worker threads)."""
        key = ("file", person, photo)
        data = self.cache.get(key)
        if data is None:
            data = self.catalog.path(person, photo).read_bytes()
            self.cache.put(key, data)
        return data

    def render(self, e: _Entry) -> bytes:
        """The full image of a non-hostile entry (runs in a worker thread)."""
        if e.kind in ("orig", "dup"):
            return self.photo(e.person, e.photo)
        if e.kind == "other":
            return self.photo(e.other, e.other_photo)
        if e.kind == "noface":
            return scenes.render_noface(e.variant)
        mine = self.photo(e.person, e.photo)
        if e.kind == "scene":
            return scenes.render_scene(mine, e.variant)
        if e.kind == "resized":
            return scenes.render_resized(mine, e.variant)
        if e.kind == "corrupt":
            return mine[: scenes.truncate_at(e.variant, len(mine))]
        if e.kind == "pair":
            theirs = self.photo(e.other, e.other_photo)
            return scenes.render_pair(mine, theirs) if e.variant & 1 == 0 else scenes.render_pair(theirs, mine)
        raise ValueError(f"no image for {e.kind}")

    def render_served(self, e: _Entry) -> bytes:
        """The image an entry's URL serves: `render`, or an engine's copy of it."""
        data = self.render(e)
        return scenes.render_copy(data, e.engine, e.copy_variant) if e.copied else data

    def render_thumb(self, e: _Entry) -> bytes:
        if e.kind.startswith("hostile-"):
            return scenes.placeholder_thumbnail()
        source = self.photo(e.person, e.photo) if e.kind == "corrupt" else self._image_now(e)
        return scenes.thumbnail(source)

    def _image_now(self, e: _Entry) -> bytes:
        key = ("img", e)
        data = self.cache.get(key)
        if data is None:
            data = self.render_served(e)
            self.cache.put(key, data)
        return data

    def hostile_photo(self, person: int, name: str) -> bytes:
        """The person's first photo re-encoded for one hostile URL (new bytes: never a duplicate)."""
        data = self.photo(person, 0)
        return scenes.reencode(data, HOSTILE_PHOTO_QUALITY[name])

    async def cached(self, key: Hashable, make: Callable[[], bytes]) -> bytes:
        """Bytes from the LRU, or made once in a worker thread (concurrent requests share the work)."""
        data = self.cache.get(key)
        if data is not None:
            return data
        future = self._pending.get(key)
        if future is None:
            future = asyncio.get_running_loop().run_in_executor(None, make)
            self._pending[key] = future
            future.add_done_callback(lambda f: self._made(key, f))
        return await asyncio.shield(future)  # a client going away must not cancel the shared work

    def _made(self, key: Hashable, future: asyncio.Future[bytes]) -> None:
        self._pending.pop(key, None)
        if not future.cancelled() and future.exception() is None:
            self.cache.put(key, future.result())

    def entry(self, request: web.Request) -> _Entry:
        found = _decode_token(request.match_info["token"], self.seed, self.catalog)
        if found is None:
            raise web.HTTPNotFound(text="no such image")
        return found

    # -- pages -------------------------------------------------------------------------------
    async def home(self, request: web.Request) -> web.Response:
        if "q" in request.query:  # DuckDuckGo's search page is its home page with a query
            return await self.ddg_search(request)
        links = " &middot; ".join(
            f'<a href="/search?q={quote(self.catalog.display(p))}">{html.escape(self.catalog.display(p))}</a>'
            for p in self._popular
        )
        body = f"<h1>FaceScale demo image search</h1><p>{len(self.catalog.folders)} people. Try: {links}</p>"
        return web.Response(body=shapes.html_page("FaceScale demo image search", body), content_type="text/html")

    def shown(self, query: str, engine: int = 0) -> list[shapes.Result]:
        return [r.shown for r in self.results(query, engine)]

    async def search(self, request: web.Request) -> web.Response:
        if request.query.get("tbm") == "isch":  # Google's image search shares the path
            return await self.google_search(request)
        query = request.query.get("q", "").strip()
        return web.Response(body=shapes.demo_page(query, self.shown(query), self.page_size), content_type="text/html")

    async def api_results(self, request: web.Request) -> web.Response:
        offset = _int_param(request, "offset")
        if offset < 0:
            raise web.HTTPBadRequest(text="offset must be >= 0")
        shown = self.shown(request.query.get("q", "").strip())
        return web.json_response(shapes.demo_api(shown, offset, self.page_size))

    # -- the same results in Bing's shape (`shapes.bing_page`): the bing engine's adapter, offline
    async def bing_search(self, request: web.Request) -> web.Response:
        query = request.query.get("q", "").strip()
        return web.Response(body=shapes.bing_page(query, self.shown(query), self.page_size), content_type="text/html")

    async def bing_async(self, request: web.Request) -> web.Response:
        first = _int_param(request, "first")
        shown = self.shown(request.query.get("q", "").strip())[max(0, first) : max(0, first) + self.page_size]
        return web.Response(text=shapes.bing_items(shown), content_type="text/html")

    # -- Google's and DuckDuckGo's shapes, each with its own copies of the photos (`engine_index`)
    async def google_search(self, request: web.Request) -> web.Response:
        query = request.query.get("q", "").strip()
        start = max(0, _int_param(request, "start"))
        shown = self.shown(query, engine_index("google"))
        return web.Response(body=shapes.google_page(query, shown, start, self.page_size), content_type="text/html")

    async def ddg_search(self, request: web.Request) -> web.Response:
        query = request.query.get("q", "").strip()
        return web.Response(body=shapes.ddg_page(query), content_type="text/html")

    async def ddg_api(self, request: web.Request) -> web.Response:
        query = request.query.get("q", "").strip()
        if request.query.get("vqd") != shapes.ddg_token(query):
            raise web.HTTPForbidden(text=shapes.DDG_REFUSED)
        offset = max(0, _int_param(request, "s"))
        shown = self.shown(query, engine_index("duckduckgo"))
        return web.json_response(shapes.ddg_results(query, shown, offset, self.page_size))

    async def consent(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def api_truth(self, request: web.Request) -> web.Response:
        try:
            engine = engine_index(request.query.get("engine", "demo"))
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        results = self.results(request.query.get("q", "").strip(), engine)
        return web.json_response([_truth_row(self.catalog, r) for r in results])

    async def api_people(self, request: web.Request) -> web.Response:
        return web.json_response(
            [
                {"name": self.catalog.display(p), "folder": folder, "photos": len(self.catalog.photos[p])}
                for p, folder in enumerate(self.catalog.folders)
            ]
        )

    async def image(self, request: web.Request) -> web.Response:
        e = self.entry(request)
        if e.kind.startswith("hostile-"):
            raise web.HTTPNotFound(text="no such image")
        data = await self.cached(("img", e), lambda: self.render_served(e))
        return _image_response(data)

    async def thumb(self, request: web.Request) -> web.Response:
        e = self.entry(request)
        data = await self.cached(("thumb", e), lambda: self.render_thumb(e))
        return _image_response(data)

    async def page(self, request: web.Request) -> web.Response:
        e = self.entry(request)
        token = request.match_info["token"]
        full = _hostile_url(self.catalog, e) if e.kind.startswith("hostile-") else f"/img/{token}.jpg"
        name = html.escape(self.catalog.display(e.person))
        body = (
            f"<article><h1>{name}</h1>"
            f'<figure><img id="fs-image" src="{html.escape(full)}" alt="{name}">'
            f"<figcaption>Photo: {name}. Source: FaceScale demo archive.</figcaption></figure></article>"
        )
        return web.Response(
            body=shapes.html_page(f"{self.catalog.display(e.person)} - photo", body), content_type="text/html"
        )

    # -- hostile -----------------------------------------------------------------------------
    async def hostile_endpoint(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        handler = self._hostile.get(name)
        if handler is None:
            raise web.HTTPNotFound(text="no such hostile endpoint")
        return await handler(request)

    async def _person_photo(self, request: web.Request, name: str) -> bytes:
        """The hostile URL's real picture: the queried person's photo, or a face-free image for unknown names."""
        person = self.catalog.find(request.query.get("q", ""))
        if person is None:
            return await self.cached(("noface", 0), lambda: scenes.render_noface(0))
        return await self.cached(("hostile", person, name), lambda: self.hostile_photo(person, name))

    async def _slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.slow_seconds)
        return _image_response(await self._person_photo(request, "slow"))

    async def _not_found(self, request: web.Request) -> web.Response:
        raise web.HTTPNotFound(text="not found")

    async def _server_error(self, request: web.Request) -> web.Response:
        raise web.HTTPInternalServerError(text="internal server error")

    async def _flaky(self, request: web.Request) -> web.Response:
        url = request.path_qs
        if url not in self._flaky_seen:
            self._flaky_seen.add(url)
            raise web.HTTPServiceUnavailable(text="try again", headers={"Retry-After": "1"})
        return _image_response(await self._person_photo(request, "flaky"))

    async def _redirect_loop(self, request: web.Request) -> web.Response:
        """A -> A&hop=1 -> A -> ...: a client must give up after a few redirects."""
        if "hop" in request.query:
            raise web.HTTPFound(request.rel_url.with_query([(k, v) for k, v in request.query.items() if k != "hop"]))
        raise web.HTTPFound(request.rel_url.update_query(hop="1"))

    async def _html_as_jpeg(self, request: web.Request) -> web.Response:
        body = b"<!doctype html><html><body><h1>Access denied</h1><p>Please enable cookies.</p></body></html>"
        return web.Response(body=body, headers={"Content-Type": "image/jpeg"})

    async def _truncated(self, request: web.Request) -> web.Response:
        data = await self._person_photo(request, "truncated")
        return _image_response(data[: len(data) // 2])

    async def _empty(self, request: web.Request) -> web.Response:
        return web.Response(body=b"", headers={"Content-Type": "image/jpeg"})

    async def _bomb(self, request: web.Request) -> web.Response:
        return _image_response(await self.cached("bomb", scenes.bomb_png))

    async def _wrong_type(self, request: web.Request) -> web.Response:
        data = await self._person_photo(request, "wrong-type")
        return web.Response(body=data, headers={"Content-Type": "text/plain"})

    async def _noai(self, request: web.Request) -> web.Response:
        response = _image_response(await self._person_photo(request, "noai"))
        response.headers["X-Robots-Tag"] = "noai, noimageai"
        return response

    async def _huge(self, request: web.Request) -> web.StreamResponse:
        """100 MB with a truthful Content-Length, written from one reused chunk."""
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        response.content_length = HUGE_BYTES
        await response.prepare(request)
        head, filler = _stream_chunks()
        sent = 0
        with contextlib.suppress(ConnectionError):
            while sent < HUGE_BYTES:
                chunk = head if sent == 0 else filler
                chunk = chunk[: HUGE_BYTES - sent] if HUGE_BYTES - sent < len(chunk) else chunk
                await response.write(chunk)
                sent += len(chunk)
                await asyncio.sleep(0)  # let other requests in even when the client keeps up
            await response.write_eof()
        return response

    async def _endless(self, request: web.Request) -> web.StreamResponse:
        """A chunked body that never ends; stops when the client goes away."""
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        head, filler = _stream_chunks()
        with contextlib.suppress(ConnectionError):
            await response.write(head)
            while True:
                await response.write(filler)
                await asyncio.sleep(0)
        return response


_SITE: web.AppKey[_Site] = web.AppKey("facescale_demoweb_site")


@lru_cache(maxsize=1)
def _stream_chunks() -> tuple[bytes, bytes]:
    """The first chunk (starts like a JPEG) and the filler chunk of the streamed hostile bodies."""
    head = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"
    return head + bytes(STREAM_CHUNK - len(head)), bytes(STREAM_CHUNK)


def _image_response(data: bytes) -> web.Response:
    return web.Response(body=data, headers={"Content-Type": _content_type(data), "Cache-Control": IMAGE_CACHE_CONTROL})


def build_app(
    photos_root: Path,
    *,
    hostile: bool = False,
    seed: int = 0,
    page_size: int = 20,
    max_results: int = 120,
    slow_seconds: float = 30.0,
) -> web.Application:
    """The demo web as an aiohttp application over ``photos_root`` (one sub-folder of photos per person)."""
    if page_size < 1 or max_results < 0 or slow_seconds < 0:
        raise ValueError("page_size must be >= 1, max_results and slow_seconds >= 0")
    site = _Site(
        _catalog(str(Path(photos_root).resolve())),
        hostile=hostile,
        seed=seed,
        page_size=page_size,
        max_results=max_results,
        slow_seconds=slow_seconds,
    )
    app = web.Application()
    app[_SITE] = site
    app.router.add_get("/", site.home)
    app.router.add_get("/search", site.search)
    app.router.add_get("/api/results", site.api_results)
    app.router.add_get("/api/truth", site.api_truth)
    app.router.add_get("/api/people", site.api_people)
    app.router.add_get("/img/{token:[a-z2-7]+}.jpg", site.image)
    app.router.add_get("/thumb/{token:[a-z2-7]+}.jpg", site.thumb)
    app.router.add_get("/page/{token:[a-z2-7]+}", site.page)
    app.router.add_get("/hostile/{name}", site.hostile_endpoint)
    app.router.add_get("/images/search", site.bing_search)
    app.router.add_get("/images/async", site.bing_async)
    app.router.add_get("/i.js", site.ddg_api)
    app.router.add_get("/consent", site.consent)
    return app


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _serve(app: web.Application, host: str, port: int, exit_on_stdin_eof: bool) -> None:
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=1024)
        try:
            await site.start()
        except OSError as exc:
            raise FacescaleError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        bound = runner.addresses[0][1]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):  # not on Windows
                loop.add_signal_handler(sig, stop.set)
        if exit_on_stdin_eof:
            threading.Thread(target=_wait_for_stdin_eof, args=(loop, stop), daemon=True).start()
        log.info("demo web: %d people, hostile=%s", len(app[_SITE].catalog.folders), app[_SITE].hostile)
        print(f"listening on {_url(host, bound)}", flush=True)  # the line DemoWeb waits for
        await stop.wait()
        log.info("demo web stopping")
    finally:
        await runner.cleanup()


def _wait_for_stdin_eof(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Stop the server when the parent closes our stdin (or dies): no orphaned servers."""
    with contextlib.suppress(OSError, ValueError):
        while sys.stdin.buffer.read(4096):
            pass
    with contextlib.suppress(RuntimeError):  # the loop is already closed
        loop.call_soon_threadsafe(stop.set)


def serve(
    photos_root: Path,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    hostile: bool = False,
    seed: int = 0,
    page_size: int = 20,
    max_results: int = 120,
    slow_seconds: float = 30.0,
    exit_on_stdin_eof: bool = False,
) -> None:
    """Run the demo web in the foreground until SIGINT/SIGTERM (port 0 picks a free port).

    Prints ``listening on http://HOST:PORT`` on stdout once it accepts connections.
    """
    app = build_app(
        photos_root,
        hostile=hostile,
        seed=seed,
        page_size=page_size,
        max_results=max_results,
        slow_seconds=slow_seconds,
    )
    asyncio.run(_serve(app, host, port, exit_on_stdin_eof))


class DemoWeb:
    """The demo web in a subprocess: ``with DemoWeb(root) as web: driver.get(web.url + "/search?q=...")``."""

    def __init__(
        self,
        photos_root: Path,
        *,
        hostile: bool = False,
        seed: int = 0,
        page_size: int = 20,
        max_results: int = 120,
        slow_seconds: float = 30.0,
        startup_timeout: float = 60.0,
        stop_timeout: float = 5.0,
    ) -> None:
        self.photos_root = Path(photos_root)
        self.options = {
            "hostile": hostile,
            "seed": seed,
            "page_size": page_size,
            "max_results": max_results,
            "slow_seconds": slow_seconds,
        }
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._proc: subprocess.Popen[str] | None = None
        self._url: str | None = None
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL, without a trailing slash."""
        if self._url is None:
            raise RuntimeError("DemoWeb is not running")
        return self._url

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def command(self) -> list[str]:
        o = self.options
        cmd = [
            sys.executable, "-m", "facescale.demoweb",
            "--photos", str(self.photos_root), "--port", "0", "--host", "127.0.0.1",
            "--seed", str(o["seed"]), "--page-size", str(o["page_size"]),
            "--max-results", str(o["max_results"]), "--slow-seconds", str(o["slow_seconds"]),
            "--exit-on-stdin-eof",
        ]  # fmt: skip
        return [*cmd, "--hostile"] if o["hostile"] else cmd

    def start(self) -> DemoWeb:
        if self._proc is not None:
            raise RuntimeError("DemoWeb is already running")
        if not self.photos_root.is_dir():
            raise NotFoundError(f"photos folder not found: {self.photos_root}")
        proc = subprocess.Popen(self.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._proc = proc
        lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=_read_lines, args=(proc, lines), daemon=True)
        self._reader.start()
        try:
            while True:
                line = lines.get(timeout=self.startup_timeout)
                if line is None:
                    raise RuntimeError(f"demo web exited during start-up (exit code {proc.wait()})")
                if line.startswith("listening on "):
                    self._url = line.removeprefix("listening on ").strip().rstrip("/")
                    break
        except queue.Empty:
            self.stop()
            raise RuntimeError(f"demo web did not start within {self.startup_timeout} s") from None
        except BaseException:
            self.stop()
            raise
        log.info("demo web (pid %d) at %s", proc.pid, self._url)
        return self

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after ``stop_timeout``) and reap it."""
        proc, self._proc, self._url = self._proc, None, None
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                log.warning("demo web (pid %d) ignored SIGTERM; killing it", proc.pid)
                proc.kill()
                proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=self.stop_timeout)
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> DemoWeb:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _read_lines(proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
    """Forward the server's stdout lines (read to the end, so the pipe never fills)."""
    assert proc.stdout is not None
    with contextlib.suppress(OSError, ValueError):
        for line in proc.stdout:
            lines.put(line)
    lines.put(None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m facescale.demoweb", description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, required=True, help="a folder with one sub-folder of photos per person")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--hostile", action="store_true", help="add misbehaving URLs to every result list")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--page-size", type=int, default=20)
    parser.add_argument("--max-results", type=int, default=120)
    parser.add_argument("--slow-seconds", type=float, default=30.0)
    parser.add_argument("--exit-on-stdin-eof", action="store_true", help="stop when stdin closes (used by DemoWeb)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        serve(
            args.photos,
            args.host,
            args.port,
            hostile=args.hostile,
            seed=args.seed,
            page_size=args.page_size,
            max_results=args.max_results,
            slow_seconds=args.slow_seconds,
            exit_on_stdin_eof=args.exit_on_stdin_eof,
        )
    except FacescaleError as exc:
        log.error("%s", exc)
        raise SystemExit(exc.exit_code) from None
