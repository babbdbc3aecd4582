"""What changed between two dataset versions: identities, source photos per identity (and why), labels.

`diff_versions` reads both manifests and, from the shards, only the ``identity_slug``,
``source_image_id`` and ``aug_index`` columns of the originals (``aug_index`` 0), so it holds a
set of photo ids per identity, never an image. A photo that left an identity is explained by
the exclusion list when it names it (``wrong_person`` by the cleaner, a person's reason, a
takedown) and otherwise by the newer version's curation notes (``not_selected``: still clean,
outside the per-identity quota, or its identity is waiting). Labels are stable by contract:
an identity whose label differs between the two is reported as a label change (there must be
none; ``label_changes`` non-empty is a defect of the registry).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping

import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from .exclusions import ExclusionList
from .manifest import Manifest
from .schemas import SPLITS
from .versions import DatasetStore

NOT_SELECTED = "not_selected"


class IdentityChange(BaseModel):
    """One identity present in both versions whose photos or counts changed."""

    model_config = ConfigDict(frozen=True)

    slug: str
    name: str
    label: int
    photos_added: list[str] = Field(default_factory=list)  # source_image_id
    photos_removed: dict[str, str] = Field(default_factory=dict)  # source_image_id -> reason
    counts_before: dict[str, int]
    counts_after: dict[str, int]

    @property
    def removed_reasons(self) -> Counter[str]:
        return Counter(self.photos_removed.values())


class LabelChange(BaseModel):
    model_config = ConfigDict(frozen=True)

    slug: str
    before: int
    after: int


class VersionDiff(BaseModel):
    """Version ``before`` -> version ``after``."""

    model_config = ConfigDict(frozen=True)

    before: str
    after: str
    identities_added: dict[str, int] = Field(default_factory=dict)  # slug -> its samples in `after`
    identities_removed: dict[str, int] = Field(default_factory=dict)  # slug -> its samples in `before`
    identities_changed: list[IdentityChange] = Field(default_factory=list)
    identities_unchanged: int = 0
    label_changes: list[LabelChange] = Field(default_factory=list)
    samples_before: int
    samples_after: int


def source_photos(store: DatasetStore, manifest: Manifest) -> dict[str, set[str]]:
    """identity_slug -> the source photos of its originals (``aug_index`` 0), read column-wise."""
    found: dict[str, set[str]] = defaultdict(set)
    for batch in store.iter_batches(
        manifest.version_id, columns=["identity_slug", "source_image_id", "aug_index"], batch_size=8192
    ):
        originals = batch.filter(pc.equal(batch.column("aug_index"), 0))
        for slug, source in zip(originals.column("identity_slug").to_pylist(),
                                originals.column("source_image_id").to_pylist(), strict=True):
            found[slug].add(source)
    return dict(found)


def diff_versions(
    store: DatasetStore, before_id: str, after_id: str, exclusions: ExclusionList | None = None
) -> VersionDiff:
    """Compare version ``before_id`` with ``after_id`` (either order; usually parent -> child).

    Raises:
        NotFoundError: either version does not exist.
    """
    before, after = store.get(before_id), store.get(after_id)
    old = {e.slug: e for e in before.identities}
    new = {e.slug: e for e in after.identities}
    excluded: Mapping[tuple[str, str], str] = {}
    if exclusions is not None:
        excluded = {e.key: e.reason for e in exclusions.load() if e.excludes}
    photos_before = source_photos(store, before)
    photos_after = source_photos(store, after)
    changed: list[IdentityChange] = []
    unchanged = 0
    for slug in sorted(old.keys() & new.keys()):
        a, b = photos_before.get(slug, set()), photos_after.get(slug, set())
        counts_a = {s: old[slug].counts.get(s, 0) for s in SPLITS}
        counts_b = {s: new[slug].counts.get(s, 0) for s in SPLITS}
        if a == b and counts_a == counts_b:
            unchanged += 1
            continue
        changed.append(
            IdentityChange(
                slug=slug,
                name=new[slug].name,
                label=new[slug].label,
                photos_added=sorted(b - a),
                photos_removed={p: excluded.get((slug, p), NOT_SELECTED) for p in sorted(a - b)},
                counts_before=counts_a,
                counts_after=counts_b,
            )
        )
    return VersionDiff(
        before=before_id,
        after=after_id,
        identities_added={s: new[s].total for s in sorted(new.keys() - old.keys())},
        identities_removed={s: old[s].total for s in sorted(old.keys() - new.keys())},
        identities_changed=changed,
        identities_unchanged=unchanged,
        label_changes=[
            LabelChange(slug=s, before=old[s].label, after=new[s].label)
            for s in sorted(old.keys() & new.keys())
            if old[s].label != new[s].label
        ],
        samples_before=before.rows,
        samples_after=after.rows,
    )
