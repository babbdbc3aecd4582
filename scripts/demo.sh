#!/usr/bin/env bash
# The main job on the embedded defaults: everything on this machine, storage in var/demo.
# It grows as stages land; today: register identities and ingest the photos of
# ../shared/data/lfw-dev (people with >= 20 photos) as a RAW run, then report.
set -euo pipefail
cd "$(dirname "$0")/.."

export FACESCALE_STORAGE__ROOT=${FACESCALE_STORAGE__ROOT:-$PWD/var/demo}
PHOTOS=${FACESCALE_DEMO_PHOTOS:-$PWD/../shared/data/lfw-dev}
MIN_IMAGES=${FACESCALE_DEMO_MIN_IMAGES:-20}
fs=.venv/bin/facescale

[ -d "$PHOTOS" ] || { echo "demo photos not found at $PHOTOS (set FACESCALE_DEMO_PHOTOS)" >&2; exit 1; }

echo "== ingest: $PHOTOS (identities with >= $MIN_IMAGES photos) -> RAW run"
$fs ingest "$PHOTOS" --min-images "$MIN_IMAGES" --run-id "demo-lfw-min$MIN_IMAGES"
echo "== identity registry"
$fs identities list
echo "== RAW runs"
$fs runs list
echo "== dataset versions"
$fs datasets list
echo
echo "storage root: $FACESCALE_STORAGE__ROOT"
echo "  registry:   $FACESCALE_STORAGE__ROOT/registry/identities.json"
echo "  raw runs:   $FACESCALE_STORAGE__ROOT/raw/"
echo "  datasets:   $FACESCALE_STORAGE__ROOT/datasets/"
