"""The seed's leaky split, reproduced for comparison: train and evaluate on a version re-split by sample.

The seed augmented every photo first and split afterwards, at the sample level, so copies of
one photo sat in both train and test and its test accuracy measured recognition of photos it
had trained on. `leaky_baseline` pools every sample of the version (augmented copies
included), re-splits them 70/20/10 by sample (per identity, seeded; `make_leaky_version`),
trains the same configuration on that and evaluates on its test split; `evaluate` puts both
accuracies side by side with the share of leaky test samples whose source photo is in train.
The top of training/: it calls `train` and `evaluate`.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from facescale.config import TrainingSettings
from facescale.storage import CropStore, DatasetStore, IdentityEntry
from facescale.storage.schemas import Split

from .evaluate import evaluate
from .train import train

log = logging.getLogger(__name__)

LEAKY_FRACTIONS: dict[Split, float] = {"train": 0.7, "val": 0.2, "test": 0.1}

_Key = TypeVar("_Key")


def make_leaky_version(
    source: DatasetStore,
    version_id: str,
    target: DatasetStore,
    *,
    seed: int = 0,
    fractions: Mapping[Split, float] = LEAKY_FRACTIONS,
) -> str:
    """Re-split every sample of a version at the sample level, as the seed did, into ``target``.

    All samples are pooled (augmented copies included) and, per identity, shuffled with
    ``seed`` and cut into train/val/test by ``fractions`` (exact counts, largest remainder).
    Copies of one source photo so land in different splits: the leak the seed had. Rows are
    streamed; only sample ids and labels are held.

    Args:
        source: the store holding ``version_id``.
        version_id: the honest (split-by-source) version.
        target: where to write the leaky version (a scratch store: it is not a dataset
            to train production models on).
        seed: the shuffle's seed.
        fractions: split -> share of each identity's samples.

    Returns:
        The leaky version's id (``<version_id>-leaky``); an existing one is reused.
    """
    leaky_id = f"{version_id}-leaky"
    if leaky_id in target.version_ids():
        return leaky_id
    manifest = source.get(version_id)
    ids = source.iter_batches(version_id, columns=["sample_id", "label"], batch_size=4096)
    table = pa.Table.from_batches(list(ids))
    sample_ids = np.array(table.column("sample_id").to_pylist(), dtype=object)
    labels = table.column("label").to_numpy()
    assigned: dict[str, Split] = {}
    rng = np.random.default_rng([seed, 0x1EA7])
    for label in sorted(set(labels.tolist())):
        members = sample_ids[labels == label]
        members = members[np.argsort(members)]  # order-independent of the shards
        members = members[rng.permutation(len(members))]
        counts = _exact_counts(len(members), fractions)
        start = 0
        for split, count in counts.items():
            for sample in members[start : start + count]:
                assigned[sample] = split
            start += count
    per_label: dict[int, Counter[Split]] = {}
    with target.create(leaky_id, parent=None, config={"leaky_resplit_of": version_id, "seed": seed}) as writer:
        for batch in source.iter_batches(version_id, batch_size=1024):
            table = pa.Table.from_batches([batch])
            splits = [assigned[s] for s in table.column("sample_id").to_pylist()]
            for label, split in zip(table.column("label").to_pylist(), splits, strict=True):
                per_label.setdefault(label, Counter())[split] += 1
            column = table.schema.get_field_index("split")
            split_field = table.schema.field(column)
            table = table.set_column(column, split_field, pa.array(splits, split_field.type))
            writer.write(table)
        entries = [
            IdentityEntry(name=i.name, slug=i.slug, label=i.label, counts=dict(per_label.get(i.label, {})),
                          sources=i.sources)
            for i in manifest.identities
        ]
        writer.commit(entries, notes={"leaky": f"samples of {version_id} re-split by sample (the seed's split)"})
    return leaky_id


def leak_rate(store: DatasetStore, version_id: str, split: str = "test") -> float:
    """Share of a split's samples whose source photo also has a sample in train."""
    table = pa.Table.from_batches(list(store.iter_batches(version_id, columns=["source_image_id", "split"])))
    train_sources = set(table.filter(pc.equal(table.column("split"), "train")).column("source_image_id").to_pylist())
    chosen = table.filter(pc.equal(table.column("split"), split)).column("source_image_id").to_pylist()
    return sum(s in train_sources for s in chosen) / len(chosen) if chosen else 0.0


def leaky_baseline(
    store: DatasetStore,
    version_id: str,
    settings: TrainingSettings,
    work_dir: str | os.PathLike[str],
    *,
    scratch: DatasetStore,
    max_steps_per_epoch: int | None = None,
    validation_steps: int | None = None,
    batch_size: int = 64,
    verbose: int | str = 0,
    crops: CropStore | None = None,
) -> dict[str, Any]:
    """Train ``settings`` on the seed's leaky re-split of a version and evaluate it on its test split.

    Everything lives under ``work_dir`` (``scratch``: the store the leaky version is written
    to; ``train/``: the training output, resumable like any other). Rerunning returns the
    finished result.

    Args:
        store: the store holding the honest version.
        scratch: a store of its own (not for production models) the leaky version is written to.
        version_id: the honest version.
        settings: the training configuration (the one the honest model was trained with).
        work_dir: a local scratch directory.
        max_steps_per_epoch: the honest run's cap on steps per epoch, if any.
        validation_steps: the honest run's cap on validation batches, if any.
        batch_size: samples per prediction batch.
        verbose: passed to ``Model.fit``.
        crops: the honest store's crop cache (the teacher's embeddings, with ``training.teacher: dlib``).

    Returns:
        ``version_id`` (the leaky version), ``top1``, ``top5``, ``examples`` (its test
        split), ``leak_rate`` (share of its test samples whose photo is also in its train
        split) and ``training`` (epochs, stopped_by, best value).
    """

    work = Path(work_dir)
    leaky_id = make_leaky_version(store, version_id, scratch, seed=settings.seed)
    result = train(
        scratch, leaky_id, settings, work / "train", max_steps_per_epoch=max_steps_per_epoch,
        validation_steps=validation_steps, verbose=verbose, crops=crops,
    )
    evaluation = evaluate(scratch, work / "train", work / "eval", batch_size=batch_size, plots=False)
    report: dict[str, Any] = {
        "version_id": leaky_id,
        "top1": evaluation.top1,
        "top5": evaluation.top5,
        "examples": evaluation.examples,
        "leak_rate": leak_rate(scratch, leaky_id),
        "training": {"epochs": result.epochs, "stopped_by": result.stopped_by, "best_value": result.best_value},
    }
    log.info(
        "leaky baseline on %s: top-1 %.4f (%.0f%% of its test samples' photos are in train)",
        leaky_id, report["top1"], 100 * report["leak_rate"],
    )
    return report


def _exact_counts(n: int, fractions: Mapping[_Key, float]) -> dict[_Key, int]:
    """Split ``n`` by ``fractions`` into integers summing to ``n`` (largest remainder)."""
    total = sum(fractions.values())
    raw = {k: n * v / total for k, v in fractions.items()}
    counts = {k: math.floor(v) for k, v in raw.items()}
    rest = n - sum(counts.values())
    for k in sorted(raw, key=lambda k: (counts[k] - raw[k], list(raw).index(k)))[:rest]:
        counts[k] += 1
    return counts

