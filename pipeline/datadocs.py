"""Data Docs that work offline: the CDN scripts and styles from npm, kept once per store, links rewritten.

Great Expectations' Data Docs load jQuery, Bootstrap, bootstrap-table, Vega and Font Awesome from
CDNs and copy 4 MB of GX's own static files into every site. Where a cluster has no internet the
index then lists no validation result at all (bootstrap-table draws it). `make_offline` rewrites a
freshly built site before it is uploaded: each CDN address becomes a relative link to
``<root>/static/datadocs/npm/<package>/<file>`` (the same files, installed from npm at set-up by
``scripts/setup.sh`` from ``deploy/datadocs/package-lock.json``), GX's own ``static/`` links
point at one shared copy in ``<root>/static/datadocs/gx/``, and the per-version ``static/``
folder is dropped. The shared folder is filled once per store (`ensure_assets`, its
``assets.json`` written last, so a half copy is redone); once a store holds it, a worker
without the npm files still writes offline Data Docs. A worker that has neither leaves the
site as GX built it (working online) and says so in the log.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from facescale.storage import Location
from facescale.storage.layout import DATADOCS_STATIC_DIR

log = logging.getLogger(__name__)

#: Where the npm packages are installed (scripts/setup.sh); ``FACESCALE_DATADOCS_ASSETS`` overrides it.
DEFAULT_MODULES = Path(__file__).resolve().parents[1] / "deploy" / "datadocs" / "node_modules"
ASSETS_RECORD = "assets.json"
ASSETS_FORMAT = 1
#: CDN address (as GX writes it) -> the same file in its npm package.
CDN: dict[str, str] = {
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery/dist/jquery.min.js",
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": "bootstrap/dist/css/bootstrap.min.css",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": "bootstrap/dist/js/bootstrap.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": "popper.js/dist/umd/popper.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css":
        "bootstrap-table/dist/bootstrap-table.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js":
        "bootstrap-table/dist/bootstrap-table.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js":
        "bootstrap-table/dist/extensions/filter-control/bootstrap-table-filter-control.min.js",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css":
        "bootstrap-table/dist/extensions/filter-control/bootstrap-table-filter-control.min.css",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css":
        "bootstrap-table/dist/extensions/filter-control/bootstrap-table-filter-control.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css":
        "bootstrap-datepicker/dist/css/bootstrap-datepicker.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js":
        "bootstrap-datepicker/dist/js/bootstrap-datepicker.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css":
        "@fortawesome/fontawesome-free/css/all.min.css",
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css":
        "@forevolve/bootstrap-dark/dist/css/bootstrap-prefers-dark.css",
    "https://cdn.jsdelivr.net/npm/vega@5": "vega/build/vega.min.js",
    "https://cdn.jsdelivr.net/npm/vega-lite@5": "vega-lite/build/vega-lite.min.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": "vega-embed/build/vega-embed.min.js",
}
#: Folders a copied stylesheet refers to (Font Awesome's fonts).
CDN_FOLDERS = ("@fortawesome/fontawesome-free/webfonts",)
#: GX's logo, loaded from its S3 bucket: the same picture ships in GX's static images.
_GX_LOGO = re.compile(r"https://great-expectations-web-assets\.s3[^\"'\s]*?/[\w-]+\.png(\?[^\"'\s]*)?")
_CDN = re.compile("|".join(re.escape(url) for url in sorted(CDN, key=len, reverse=True)))
_GX_STATIC = re.compile(r"(?<=[\"'(])((?:\./)?(?:\.\./)*)static/")
# SRI and CORS attributes: a file:// page cannot fetch with CORS, and the npm files' integrity is the lock file's
_SRI = re.compile(r"\s+(?:integrity|crossorigin)=\"[^\"]*\"")


def node_modules() -> Path:
    return Path(os.environ.get("FACESCALE_DATADOCS_ASSETS") or DEFAULT_MODULES)


def _gx_static() -> Path:
    import great_expectations

    return Path(great_expectations.__file__).parent / "render" / "view" / "static"


def _asset_files(modules: Path) -> Iterator[tuple[str, Path]]:
    """(path under the shared folder, local file) for every asset: the npm files, then GX's static folder."""
    for rel in sorted(set(CDN.values())):
        yield f"npm/{rel}", modules / rel
    for folder in CDN_FOLDERS:
        for path in sorted((modules / folder).rglob("*")):
            if path.is_file():
                yield f"npm/{path.relative_to(modules).as_posix()}", path
    static = _gx_static()
    for path in sorted(static.rglob("*")):
        if path.is_file():
            yield f"gx/{path.relative_to(static).as_posix()}", path


def ensure_assets(root: Location, modules: Path | None = None) -> bool:
    """Fill ``<root>/static/datadocs`` once; False when it is not there and cannot be filled here.

    Args:
        root: the storage root.
        modules: the npm ``node_modules`` folder (default `node_modules()`).
    """
    shared = root.child(DATADOCS_STATIC_DIR)
    record = shared.path(ASSETS_RECORD)
    if shared.exists(record):
        try:
            if json.loads(shared.read_bytes(record)).get("format") == ASSETS_FORMAT:
                return True
        except ValueError:
            pass
    modules = modules or node_modules()
    missing = [rel for rel in sorted(set(CDN.values())) if not (modules / rel).is_file()]
    if missing:
        log.warning("Data Docs will need the internet: the store has no shared assets and %s lacks %s "
                    "(run scripts/setup.sh, or set FACESCALE_DATADOCS_ASSETS)", modules, missing[0])
        return False
    files = {}
    for rel, path in _asset_files(modules):
        data = path.read_bytes()
        shared.write_bytes_atomic(shared.path(rel), data)
        files[rel] = hashlib.sha256(data).hexdigest()
    shared.write_bytes_atomic(record, json.dumps({"format": ASSETS_FORMAT, "files": files}, indent=1).encode())
    log.info("copied the Data Docs' scripts and styles into %s (%d files)", shared.display(shared.root), len(files))
    return True


def rewrite(page: str, up: int) -> str:
    """``page`` with its CDN and GX ``static/`` links pointing at the shared folder ``up`` levels above it."""
    prefix = "../" * up + DATADOCS_STATIC_DIR + "/"
    page = _GX_STATIC.sub(prefix + "gx/", page)  # first: the links below start with a path of the same shape
    page = _CDN.sub(lambda m: prefix + "npm/" + CDN[m.group(0)], page)
    page = _GX_LOGO.sub(prefix + "gx/images/logo-long.png", page)
    return _SRI.sub("", page)


def make_offline(root: Location, site: Path, version_dir: str) -> bool:
    """Rewrite the Data Docs site built in ``site`` (local) for ``<root>/<version_dir>/validation/data_docs``.

    Returns whether it was rewritten (False: the shared assets are missing; the site is left as GX built it).
    """
    if not ensure_assets(root):
        return False
    base = posixpath.relpath(version_dir, root.root).count("/") + 1  # datasets/<version>: 2 levels
    for page in sorted(site.rglob("*.html")):
        depth = len(page.relative_to(site).parts) - 1
        up = depth + 2 + base  # the page's folders, data_docs and validation, the version's path
        page.write_text(rewrite(page.read_text(encoding="utf-8"), up), encoding="utf-8")
    shutil.rmtree(site / "static", ignore_errors=True)
    return True
