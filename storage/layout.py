"""Where each artefact lives under the storage root (one place for the path scheme).

    <root>/registry/identities.json          identity registry (names, slugs, labels)
    <root>/raw/<run_id>/run.json              RAW run record: committed shards, finished units
    <root>/raw/<run_id>/part-NNNNN.parquet    RAW shards
    <root>/datasets/<version>/manifest.json   CURATED version manifest (its presence = committed)
    <root>/datasets/<version>/shards/...      CURATED shards
    <root>/datasets/<version>/README.md       its dataset card (Hugging Face layout), written when published
    <root>/curation/exclusions.json           photos later versions must leave out (auto and manual)
    <root>/curation/crops/<chunk>/chunk.json  crop cache chunk: the RAW shards it covers (its presence = committed)
    <root>/curation/crops/<chunk>/part-*.parquet  face crops, hashes and embeddings of those shards
    <root>/curation/sheets/<slug>.html        contact sheet per identity (kept, removed and why)
    <root>/curation/review.parquet            the last curation's verdict per photo (the review view reads it)
    <root>/curation/growth.html, growth.png   the growth view: identities and samples per published version
    <root>/static/datadocs/{npm,gx}/...       the Data Docs' scripts, styles and images, once per store (offline)
    <root>/models/<model_id>/model.json       registered model record (its presence = registered)
    <root>/models/<model_id>/files/...        its files: model.keras, labels.json, training.json, eval/...
    <root>/erasures/<erasure_id>/erasure.json an erasure's record: who asked, what was removed (ids, counts, hashes)
    <root>/exports/<export_id>.json           an export made of a version: where it went, when (for erasures)
"""

REGISTRY_FILE = "registry/identities.json"
RAW_DIR = "raw"
RUN_FILE = "run.json"
DATASETS_DIR = "datasets"
MANIFEST_FILE = "manifest.json"
CARD_FILE = "README.md"
SHARDS_DIR = "shards"
CURATION_DIR = "curation"
EXCLUSIONS_FILE = "curation/exclusions.json"
CROPS_DIR = "curation/crops"
CHUNK_FILE = "chunk.json"
SHEETS_DIR = "curation/sheets"
REVIEW_FILE = "curation/review.parquet"
VALIDATION_DIR = "validation"
MODELS_DIR = "models"
DATADOCS_STATIC_DIR = "static/datadocs"
MODEL_RECORD_FILE = "model.json"
MODEL_FILES_DIR = "files"
ERASURES_DIR = "erasures"
EXPORTS_DIR = "exports"
