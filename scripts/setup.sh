#!/usr/bin/env bash
# Set up a development/runtime environment for facescale, idempotently:
#   1. Debian packages: chromium + chromium-driver (the scraper's headless browser);
#   2. a virtualenv in .venv (Python 3.11) with facescale installed editable, [dev] extras.
# Fast when already done: apt is skipped if the packages are present, pip if pyproject.toml
# and constraints.txt (the exact tested versions) have not changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(chromium chromium-driver)
VENV=.venv
STAMP="$VENV/.facescale-install-stamp"

log() { printf '[setup] %s\n' "$*" >&2; }

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if ! command -v apt-get >/dev/null; then
    log "warning: no apt-get; install ${missing[*]} yourself (needed by the scraper)"
  else
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    log "installing ${missing[*]} (apt)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PYTHON=$candidate; break
    fi
  done
fi
[ -n "$PYTHON" ] || { log "error: Python 3.11 not found (set PYTHON=/path/to/python3.11)"; exit 1; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV with $("$PYTHON" --version)"
  "$PYTHON" -m venv "$VENV"
fi

want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
  log "installing facescale and its pinned dependencies into $VENV (a few minutes the first time)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[dev]"
  "$VENV/bin/python" -m pip check
  echo "$want" > "$STAMP"
fi
# The Data Docs' scripts, styles and fonts (jQuery, Bootstrap, bootstrap-table, Vega, Font Awesome) from
# npm, pinned by deploy/datadocs/package-lock.json: validation copies them once into each store, so
# every version's Data Docs work without internet (pipeline/datadocs.py). Without npm they load from CDNs.
DOCS=deploy/datadocs
docs_want=$(sha256sum "$DOCS/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$DOCS/node_modules/.facescale-stamp" 2>/dev/null)" != "$docs_want" ]; then
  if ! command -v npm >/dev/null && command -v apt-get >/dev/null; then
    log "installing nodejs npm (apt)"
    DEBIAN_FRONTEND=noninteractive ${SUDO:-} apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null || true
  fi
  if command -v npm >/dev/null; then
    log "installing the Data Docs' scripts and styles (npm, $DOCS/package-lock.json)"
    (cd "$DOCS" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) && echo "$docs_want" > "$DOCS/node_modules/.facescale-stamp"
  else
    log "warning: no npm; Data Docs will load their scripts and styles from CDNs (needs internet)"
  fi
fi
# Optional (FACESCALE_DLIB=openblas): dlib compiled against OpenBLAS in place of dlib-bin's build,
# whose own matrix code makes the face descriptor, most of curation's per-photo time, 6x slower
# (72 vs 12 ms a face on one core, the same embeddings: bench/README.md, bench_prepare_steps.py).
# It compiles once (about 8 minutes on 2 cores; pip keeps the wheel in .venv/.dlib-wheel), so
# the default stays the prebuilt wheel: use it on the machines that curate at scale.
if [ "${FACESCALE_DLIB:-bin}" = openblas ]; then
  if ! "$VENV/bin/python" -c 'import dlib, sys; sys.exit(not dlib.DLIB_USE_BLAS)' 2>/dev/null; then
    for pkg in libopenblas-dev cmake g++; do
      dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || {
        log "installing $pkg (apt)"; DEBIAN_FRONTEND=noninteractive ${SUDO:-} apt-get install -y -qq "$pkg" >/dev/null; }
    done
    version=$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("dlib-bin").split(".post")[0])')
    if ! ls "$VENV"/.dlib-wheel/dlib-"$version"-*.whl >/dev/null 2>&1; then
      log "compiling dlib $version against OpenBLAS (about 8 minutes the first time)"
      "$VENV/bin/python" -m pip wheel -q --no-deps --no-build-isolation -w "$VENV/.dlib-wheel" "dlib==$version"
    fi
    "$VENV/bin/python" -m pip install -q --no-deps --force-reinstall "$VENV"/.dlib-wheel/dlib-"$version"-*.whl
    "$VENV/bin/python" -c 'import dlib, sys; sys.exit(not dlib.DLIB_USE_BLAS)' || { log "error: dlib has no BLAS"; exit 1; }
  fi
  log "dlib: compiled against OpenBLAS"
fi
log "ready: $VENV ($("$VENV/bin/python" --version)), facescale $("$VENV/bin/python" -c 'import facescale; print(facescale.__version__)')"
