"""The dataset card of a version: ``datasets/<version>/README.md``, generated from its records.

A card is written by `DatasetStore.publish` whenever a version passes its gate (before the
manifest that publishes it, so a published version always has one), and again on demand
(``facescale datasets card``). It follows the Hugging Face dataset-card layout: YAML front
matter with the fields that layout defines (``pretty_name``, ``license``, ``task_categories``,
``task_ids``, ``tags``, ``size_categories``, ``annotations_creators``, ``source_datasets``,
``configs``, ``dataset_info`` with features and split sizes), then the template's sections.
Every figure comes from the manifest (identities, counts, config, curation notes, the gate's
outcome) and from the records of the RAW runs behind it (engines, keywords, dates), never from
a person's hand: `render_card` is a pure function of them, `card_lineage` reads the runs.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import yaml

from .crops import CropStore
from .manifest import Manifest
from .raw import RawStore, RunRecord
from .schemas import CURATED_SCHEMA, SPLITS

log = logging.getLogger(__name__)

#: What the Hugging Face ``dataset_info.features`` calls each CURATED column's type.
_HF_DTYPES = {"string": "string", "int32": "int32", "int16": "int16", "float": "float32", "binary": "binary"}
#: The split names the Hugging Face layout uses for ours (exports write these file names).
HF_SPLITS = {"train": "train", "val": "validation", "test": "test"}


@dataclass(frozen=True)
class RunLineage:
    """One RAW run behind a version: its record, or only its id when the record is gone."""

    run_id: str
    record: RunRecord | None


def download_verdicts(raw: RawStore, runs: Sequence[RunLineage]) -> tuple[int, Counter[str]]:
    """Results the runs stored as images, and those they rejected by reason (`RawStore.run_verdicts`)."""
    verdicts = raw.run_verdicts()
    accepted, rejected = 0, Counter[str]()
    for run in runs:
        if run.run_id in verdicts:
            accepted += verdicts[run.run_id].accepted
            rejected.update(verdicts[run.run_id].rejected)
    return accepted, rejected


def card_lineage(raw: RawStore, crops: CropStore, manifest: Manifest) -> list[RunLineage]:
    """The RAW runs a version was built from: crop-cache chunks (``notes.curation.chunks``) -> RAW shards -> runs.

    Both stores are read through their listing indexes: two index files plus what is new,
    whatever the store's history. A chunk or run whose record is gone (a store pruned by hand)
    is named, never fatal.
    """
    chunks = {c.chunk_id: c for c in crops.records()}
    records = {r.run_id: r for r in raw.list()}
    run_ids: dict[str, None] = {}
    for chunk in manifest.curation_notes().chunks:
        if chunk not in chunks:
            log.warning("version %s names crop chunk %s, which is gone", manifest.version_id, chunk)
            continue
        run_ids.update((key.split("/", 1)[0], None) for key in chunks[chunk].raw_shards)
    return [RunLineage(run_id, records.get(run_id)) for run_id in sorted(run_ids)]


def card_text(raw: RawStore, crops: CropStore, manifest: Manifest, **options: Any) -> str:
    """`render_card` of ``manifest`` with its RAW runs and their downloads read from ``raw`` and ``crops``."""
    runs = card_lineage(raw, crops, manifest)
    return render_card(manifest, runs, downloads=download_verdicts(raw, runs), **options)


def size_category(rows: int) -> str:
    """The Hugging Face ``size_categories`` bucket of ``rows``."""
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if rows < limit:
            return name
    return "1M<n<10M"


def label_names(manifest: Manifest, registry: Mapping[int, str] | None = None) -> list[str]:
    """The ``ClassLabel`` names of a version, indexed by label (0 to its highest label).

    The version's identities by their names; a label between them that the version does not
    hold (an identity still waiting, removed or erased: labels are never reused) by the
    registry's name for it (``registry``: label -> name), else ``label-<n>``.
    """
    names = {e.label: e.name for e in manifest.identities}
    size = max(names, default=-1) + 1
    return [names.get(n) or (registry or {}).get(n) or f"label-{n}" for n in range(size)]


def features(names: Sequence[str]) -> list[dict[str, Any]]:
    """``dataset_info.features``: the CURATED columns with Hugging Face dtypes.

    ``image`` is an ``Image`` (PIL images when loaded), ``label`` a ``ClassLabel`` with ``names``
    (`label_names`), ``face_box`` a struct; the same features the Parquet export declares in its
    files' schema (`hf_features`).
    """
    result: list[dict[str, Any]] = []
    for field in CURATED_SCHEMA:
        if field.name == "face_box":
            result.append({"name": "face_box", "struct": [{"name": f.name, "dtype": "int32"} for f in field.type]})
        elif field.name == "image":
            result.append({"name": "image", "dtype": "image"})
        elif field.name == "label":
            labels = {str(n): name for n, name in enumerate(names)}
            result.append({"name": "label", "dtype": {"class_label": {"names": labels}}})
        else:
            result.append({"name": field.name, "dtype": _HF_DTYPES.get(str(field.type), str(field.type))})
    return result


def hf_features(names: Sequence[str]) -> dict[str, Any]:
    """`features` in the form ``datasets`` keeps in a Parquet file's schema metadata (``Features.to_dict``)."""
    result: dict[str, Any] = {}
    for field in CURATED_SCHEMA:
        if field.name == "face_box":
            result["face_box"] = {f.name: {"dtype": "int32", "_type": "Value"} for f in field.type}
        elif field.name == "image":
            result["image"] = {"_type": "Image"}
        elif field.name == "label":
            result["label"] = {"names": list(names), "_type": "ClassLabel"}
        else:
            result[field.name] = {"dtype": _HF_DTYPES.get(str(field.type), str(field.type)), "_type": "Value"}
    return result


def front_matter(
    manifest: Manifest,
    data_files: Mapping[str, str] | str = "shards/*.parquet",
    names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The card's YAML metadata (the Hugging Face fields), for the version or an export of it.

    Args:
        manifest: the version.
        data_files: the ``configs`` entry's files: one glob (every split in one set of files,
            told apart by the ``split`` column: the version's own shards), or split -> glob.
    """
    files: Any = data_files if isinstance(data_files, str) else [
        {"split": split, "path": path} for split, path in data_files.items()
    ]
    return {
        "pretty_name": f"facescale faces {manifest.version_id}",
        "license": "other",
        "license_name": "scraped-web-photos",
        "license_details": "photos collected from image-search results; each keeps its source_url in the RAW "
        "runs; no licence is granted by this dataset (see 'Personal and Sensitive Information')",
        "task_categories": ["image-classification"],
        "task_ids": ["multi-class-image-classification"],
        "tags": ["faces", "face-recognition", "facescale"],
        "size_categories": [size_category(manifest.rows)],
        "annotations_creators": ["machine-generated"],
        "source_datasets": ["original"],
        "configs": [{"config_name": "default", "data_files": files}],
        "dataset_info": {
            "features": features(label_names(manifest) if names is None else names),
            # No `splits`: `datasets` checks each split's num_bytes against its own Arrow size, which no
            # Parquet file states, and a split without it fails `load_dataset`; the counts are in the text.
            "dataset_size": sum(s.bytes for s in manifest.shards),
        },
    }


def render_card(
    manifest: Manifest,
    runs: Sequence[RunLineage],
    *,
    export: str | None = None,
    data_files: Mapping[str, str] | str = "shards/*.parquet",
    downloads: tuple[int, Mapping[str, int]] | None = None,
    names: Sequence[str] | None = None,
) -> str:
    """The card's Markdown: YAML front matter, then the Hugging Face template's sections.

    Args:
        manifest: the version.
        runs: its RAW runs (`card_lineage`).
        downloads: what those runs accepted, and rejected by reason (`download_verdicts`).
        export: for the copy an export carries: a line saying what the export holds.
        data_files: the ``configs`` files (`front_matter`): an export's per-split globs.
        names: the ``ClassLabel`` names (`label_names`; default: the version's own names only).
    """
    notes = manifest.curation_notes()
    config = manifest.config
    counts = manifest.split_counts()
    meta = front_matter(manifest, data_files, names)
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).rstrip(), "---", ""]
    add = lines.append
    add(f"# Dataset Card for facescale faces {manifest.version_id}")
    add("")
    if export is not None:
        add(f"> {export}")
        add("")
    add("## Dataset Details")
    add("")
    add("### Dataset Description")
    add("")
    add(
        f"Face crops of {len(manifest.identities)} people, {manifest.rows:,} samples "
        f"({', '.join(f'{s} {counts[s]:,}' for s in SPLITS)}), grown by facescale from image-search results "
        "(one identity = one search keyword) and curated into balanced, augmented Parquet shards for "
        "training and evaluating face-identification models."
    )
    add("")
    add(f"- **Version:** `{manifest.version_id}`, created {_when(manifest.created_at)}"
        + (f", published {_when(manifest.published_at)}" if manifest.published_at else ", not published"))
    add(f"- **Parent version:** {f'`{manifest.parent}`' if manifest.parent else 'none (a first version)'}")
    add(f"- **Curated by:** facescale (`facescale curate`), validated by Great Expectations "
        f"(suite `{manifest.validation.suite if manifest.validation else 'not run'}`)")
    add("- **License:** none granted (see below)")
    add("")
    add("## Uses")
    add("")
    add("### Direct Use")
    add("")
    add("Training and evaluating closed-set face identification (the `label` column) and face "
        "verification on the people listed below, e.g. with `facescale train`, PyTorch or Hugging Face "
        "`datasets` (`facescale datasets export`).")
    add("")
    add("### Out-of-Scope Use")
    add("")
    add("Identifying or tracking people in the wild, surveillance, or any decision about a person: the "
        "photos were collected without the consent of the people shown, and the identities are public "
        "figures chosen as search keywords, not a sample of any population.")
    add("")
    add("## Dataset Structure")
    add("")
    add("One row per sample in `shards/*.parquet` (columns below); `split` says train / val / test and "
        "`aug_index` 0 marks an original crop, 1.. its augmented copies (train only). `label` is the "
        "identity registry's stable label: it never changes or gets reused across versions.")
    add("")
    add("| column | type | meaning |")
    add("|---|---|---|")
    for field in CURATED_SCHEMA:
        doc = (field.metadata or {}).get(b"doc", b"").decode()
        add(f"| `{field.name}` | {field.type} | {doc} |")
    add("")
    add("| identity | label | train | val | test | source photos |")
    add("|---|---|---|---|---|---|")
    for entry in sorted(manifest.identities, key=lambda e: e.label):
        add(f"| {entry.name} | {entry.label} | {entry.counts.get('train', 0)} | {entry.counts.get('val', 0)} | "
            f"{entry.counts.get('test', 0)} | {entry.sources if entry.sources is not None else '-'} |")
    add(f"| **{len(manifest.identities)} identities** | | {counts['train']:,} | {counts['val']:,} | "
        f"{counts['test']:,} | |")
    add("")
    add("## Dataset Creation")
    add("")
    add("### Curation Rationale")
    add("")
    add("A balanced identity set with a leak-free split: every identity gets the same number of source "
        "photos, and the split is made by source photo before augmentation, so no copy of a test photo "
        "is ever trained on (the split that augments first and splits after leaks near-copies into test).")
    add("")
    add("### Source Data")
    add("")
    add("#### Data Collection and Processing")
    add("")
    add(_collection(runs))
    add("")
    if downloads is not None:
        accepted, rejected = downloads
        add(f"Downloads: {accepted:,} images stored, {sum(rejected.values()):,} results rejected.")
        add("")
        add("| download rejection | results |")
        add("|---|---|")
        for reason, n in sorted(rejected.items(), key=lambda item: (-item[1], item[0])):
            add(f"| {reason} | {n:,} |")
        if not rejected:
            add("| (none) | 0 |")
        add("")
    add(_curation(config, notes.rejected, notes.waiting))
    add("")
    add("#### Who are the source data producers?")
    add("")
    add("The photographers and publishers of the web pages the search engines returned; each photo's "
        "`source_url` and `page_url` are kept in the RAW run it came from (join on `source_image_id` = "
        "RAW `image_id`).")
    add("")
    add("### Annotations")
    add("")
    add("Labels are machine-generated: a photo is labelled with the keyword (a person's name) whose search "
        "returned it, then kept only if its face embedding agrees with that identity's dominant group. "
        "People review the contact sheets (`curation/sheets/index.html`) and overrule the cleaner with "
        "`facescale exclusions`.")
    add("")
    add("### Validation")
    add("")
    add(_validation(manifest))
    add("")
    add("### Lineage")
    add("")
    add(f"- Parent version: {f'`{manifest.parent}`' if manifest.parent else 'none'}")
    add(f"- Crop-cache chunks: {', '.join(f'`{c}`' for c in notes.chunks) or 'none recorded'}")
    add(f"- RAW runs: {', '.join(f'`{r.run_id}`' for r in runs) or 'none recorded'}")
    reused = sorted(slug for slug, note in notes.identities.items() if note.reused)
    if reused:
        add(f"- Copied unchanged from the parent: {len(reused)} of {len(notes.identities)} identities")
    add("")
    add("### Personal and Sensitive Information")
    add("")
    add("Every sample is a photo of a real, named person, collected from the web without their consent; "
        "the photos' licences are unknown (each keeps its `source_url`). Use it for research under the "
        "rules that apply to you (e.g. GDPR's for biometric data), do not redistribute the images, and "
        "honour removal requests. **Takedown:** `facescale exclusions add \"NAME\" SOURCE_IMAGE_ID --reason "
        "takedown` leaves a photo out of every later version; `facescale identities remove \"NAME\"` drops a "
        "person from later versions (their label stays reserved). Published versions are immutable: "
        "delete an old version's directory to erase a photo from it.")
    add("")
    add("## Bias, Risks, and Limitations")
    add("")
    add("- Who is in it is decided by the keyword list and what search engines rank first: public figures, "
        "skewed in age, ethnicity, gender and photo style (press photos, frontal, well lit).")
    add(f"- Faces are found by OpenCV's Haar cascade (frontal faces only; profile and occluded faces are "
        f"missed, {config.get('min_face_px', '?')} px and up) and cropped without alignment.")
    add(f"- Wrong-person cleaning trusts the dlib face embedding at distance {config.get('cleaning_threshold', '?')}: "
        "look-alikes can stay and unusual photos of the right person can go; labels are not checked by a person.")
    add(f"- Identities with fewer than {config.get('per_identity', '?')} clean photos are topped up with extra "
        "augmented copies (never duplicates), so their train samples are less varied.")
    add("- Val and test are small per identity (a split of the per-identity quota): read per-identity "
        "accuracy with its spread.")
    add("")
    add("### Recommendations")
    add("")
    add("Report results on the test split only, never tune on it; compare models on the same version; check "
        "the contact sheets of identities that matter to you.")
    add("")
    return "\n".join(lines)


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "-"


def _collection(runs: Sequence[RunLineage]) -> str:
    if not runs:
        return "No RAW runs are recorded for this version."
    engines: Counter[str] = Counter()
    keywords: set[str] = set()
    rows = 0
    starts, ends = [], []
    table = ["| RAW run | engine | started | last commit | keywords | rows |", "|---|---|---|---|---|---|"]
    for run in runs:
        record = run.record
        if record is None:
            table.append(f"| `{run.run_id}` | (record gone) | | | | |")
            continue
        engine = str(record.meta.get("engine", "?"))
        engines[engine] += 1
        keywords.update(record.completed)
        rows += record.rows
        starts.append(record.created_at)
        ends.append(record.updated_at)
        table.append(f"| `{record.run_id}` | {engine} | {_when(record.created_at)} | {_when(record.updated_at)} | "
                     f"{len(record.completed)} | {record.rows:,} |")
    span = f" between {_when(min(starts))} and {_when(max(ends))}" if starts else ""
    sources = ", ".join(f"`{e}` ({n} run{'s' if n > 1 else ''})" for e, n in sorted(engines.items()))
    plural = "s" if len(runs) > 1 else ""
    head = (f"Collected by {len(runs)} RAW run{plural}{span} from {sources or 'unknown sources'}: "
            f"{len(keywords)} keywords (identities) done, {rows:,} results stored (every result is a RAW row; a "
            "rejected one keeps its reason).")
    if set(engines) - {"local"}:
        head += (" Search result pages were read by headless Chromium through Selenium; a separate downloader "
                 "fetched, verified and decoded each image.")
    if "local" in engines:
        head += " `local` runs are folders of photos ingested with `facescale ingest` (one folder per identity)."
    return "\n".join([head, "", *table])


def _curation(config: Mapping[str, Any], rejected: Mapping[str, int], waiting: Mapping[str, Any]) -> str:
    split = config.get("split") or {}
    rules = [
        "Curation (on Ray): Haar face detection on a downscaled copy, one dominant face per photo "
        f"(largest >= {config.get('dominance', '?')}x the next), a {config.get('margin', '?')} margin, "
        f"{config.get('crop_size', '?')} px crops; quality gates: face >= {config.get('min_face_px', '?')} px, "
        f"sharpness >= {config.get('min_sharpness', '?')}, brightness {config.get('min_brightness', '?')}-"
        f"{config.get('max_brightness', '?')}, contrast >= {config.get('min_contrast', '?')}; exact duplicates "
        f"(sha256) and near-duplicates (perceptual keys within {config.get('near_duplicate_distance', '?')} bits) "
        "removed, a photo listed under two names kept only with the one whose photos it matches; "
        f"wrong-person cleaning by dlib embedding (distance > {config.get('cleaning_threshold', '?')} from the "
        f"identity's core of >= {config.get('cleaning_min_core', '?')} agreeing crops); identities with fewer than "
        f"{config.get('min_per_identity', '?')} clean photos wait for more; the rest get exactly "
        f"{config.get('per_identity', '?')} source photos, split "
        + "/".join(str(split.get(s, "?")) for s in SPLITS)
        + f" (train/val/test) by source photo, then {config.get('augment_factor', '?')} samples per train photo "
        "(the original + augmented copies: rotation, scale, crop, flip, brightness, contrast, blur, noise).",
        "",
        "| curation removal reason | photos |",
        "|---|---|",
    ]
    for reason, n in sorted(rejected.items(), key=lambda item: (-item[1], item[0])):
        rules.append(f"| {reason} | {n:,} |")
    if not rejected:
        rules.append("| (none) | 0 |")
    if waiting:
        rules += ["", f"{len(waiting)} identities wait for more clean photos: "
                  + ", ".join(f"`{slug}`" for slug in sorted(waiting)[:20]) + (" ..." if len(waiting) > 20 else "")]
    return "\n".join(rules)


def _validation(manifest: Manifest) -> str:
    result = manifest.validation
    if result is None:
        return "Not validated."
    stats = result.statistics
    lines = [
        f"Great Expectations suite `{result.suite}`: **{'passed' if result.success else 'failed'}** "
        f"({stats.get('successful_expectations', '?')} of {stats.get('evaluated_expectations', '?')} expectations "
        f"met, {_when(result.validated_at)}): schema, labels, exact counts per identity and split, disjoint "
        "splits by source photo, every image decoding to the crop size, duplicate originals "
        f"{stats.get('duplicate_rate', '?')} (at most {stats.get('max_duplicate_rate', '?')}).",
    ]
    if result.data_docs:
        lines.append(f"Results: [Data Docs]({result.data_docs}), [raw results](validation/result.json).")
    if result.suite_pages:
        links = (f"[{suite}]({page})" for suite, page in sorted(result.suite_pages.items()))
        lines.append("Per suite: " + ", ".join(links) + ".")
    lines += [f"- {failure}" for failure in result.failures]
    return "\n".join(lines)
