"""Wrong-person cleaning: real dlib embeddings of lfw-dev crops, outliers, ambiguity, contact sheets.

Unit tier (no Ray). About two dozen real crops are embedded once per module (~0.1-0.3 s
each); the rest runs on those vectors or on small synthetic ones.
"""

from __future__ import annotations

import io
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image

from facescale.pipeline.cleaning import (
    REASONS,
    SheetItem,
    Verdict,
    clean_identity,
    exclusions_for,
    find_outliers,
    render_contact_sheet,
    write_contact_sheet,
)
from facescale.pipeline.embeddings import EMBEDDING_DIM, FaceEmbedder, decode_rgb, embedding_distances
from facescale.pipeline.reasons import Reason
from facescale.storage import Location

PERSON = "Tony_Blair"
SECOND = "Jennifer_Aniston"
INJECTED = (
    "Colin_Powell/Colin_Powell_0001.jpg",
    "Angelina_Jolie/Angelina_Jolie_0001.jpg",
    "Hans_Blix/Hans_Blix_0001.jpg",
)


def centre_crop(path: Path, box: int = 150, size: int = 128) -> bytes:
    """A stand-in for the real cropper: the central square of a deep-funneled LFW photo, as JPEG."""
    with Image.open(path) as im:
        w, h = im.size
        left, top = (w - box) // 2, (h - box) // 2
        crop = im.convert("RGB").crop((left, top, left + box, top + box)).resize((size, size))
        buf = io.BytesIO()
        crop.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture(scope="module")
def embedder() -> FaceEmbedder:
    return FaceEmbedder()


@pytest.fixture(scope="module")
def photos(lfw_dev: Path) -> dict[str, list[Path]]:
    return {
        PERSON: sorted((lfw_dev / PERSON).glob("*.jpg"))[:12],
        SECOND: sorted((lfw_dev / SECOND).glob("*.jpg"))[:6],
        "injected": [lfw_dev / p for p in INJECTED],
    }


@pytest.fixture(scope="module")
def crops(photos: dict[str, list[Path]]) -> dict[str, list[bytes]]:
    return {group: [centre_crop(p) for p in paths] for group, paths in photos.items()}


@pytest.fixture(scope="module")
def vectors(embedder: FaceEmbedder, crops: dict[str, list[bytes]]) -> dict[str, np.ndarray]:
    """Embeddings through the Ray batch path (one batch per group)."""
    out = {}
    for group, images in crops.items():
        batch = embedder({"image": np.array(images, dtype=object)})
        out[group] = batch["embedding"]
    return out


# -- embeddings ---------------------------------------------------------------------------------


def test_same_person_closer_than_cutoff_and_different_people_farther(vectors: dict[str, np.ndarray]) -> None:
    blair = vectors[PERSON]
    assert blair.shape == (12, EMBEDDING_DIM)
    assert blair.dtype == np.float32
    assert np.isfinite(blair).all()
    same = embedding_distances(blair[:1], blair[1:2])[0, 0]
    assert same < 0.6
    others = embedding_distances(blair[:2], vectors["injected"])
    assert (others > 0.6).all()
    aniston = embedding_distances(blair[:3], vectors[SECOND][:3])
    assert (aniston > 0.6).all()


def test_embed_with_no_box_uses_the_crop_box(embedder: FaceEmbedder, crops: dict[str, list[bytes]]) -> None:
    rgb = decode_rgb(crops[PERSON][0])
    assert rgb is not None and rgb.shape == (128, 128, 3)
    assert embedder.crop_box(128, 128) == (13, 13, 102, 102)  # default margin 0.1 a side
    plain = embedder.embed(rgb)
    boxed = embedder.embed(rgb, embedder.crop_box(128, 128))
    assert plain is not None and boxed is not None
    np.testing.assert_array_equal(plain, boxed)
    np.testing.assert_array_equal(plain, embedder.embed(rgb))  # deterministic


def test_embed_full_photo_with_a_box_matches_its_crop(
    embedder: FaceEmbedder, photos: dict[str, list[Path]], vectors: dict[str, np.ndarray]
) -> None:
    """The whole 250x250 photo with the face box in it lands on the same person as the crop."""
    rgb = np.asarray(Image.open(photos[PERSON][0]).convert("RGB"))
    full = embedder.embed(rgb, (62, 62, 126, 126))  # the crop's inner box in photo coordinates
    assert full is not None
    assert embedding_distances(full[None], vectors[PERSON][:1])[0, 0] < 0.3


def test_align_undoes_a_rotation_of_the_face(embedder: FaceEmbedder, photos: dict[str, list[Path]]) -> None:
    """The aligned chip maps the five landmarks onto dlib's canonical face: the photo turned by 12 degrees
    gives nearly the chip the upright photo gives, where the two plain crops differ a lot."""
    import cv2

    rgb = np.asarray(Image.open(photos[PERSON][0]).convert("RGB"))
    turn = cv2.getRotationMatrix2D((125.0, 125.0), 12.0, 1.0)
    turned = cv2.warpAffine(rgb, turn, (250, 250), borderMode=cv2.BORDER_REFLECT)
    box = (62, 62, 126, 126)
    upright, rotated = embedder.align(rgb, box, size=96), embedder.align(turned, box, size=96)
    assert upright is not None and rotated is not None and upright.shape == (96, 96, 3) and upright.dtype == np.uint8

    def gap(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.mean(np.abs(a[24:72, 24:72].astype(float) - b[24:72, 24:72].astype(float))))

    plain = (rgb[62:188, 62:188], turned[62:188, 62:188])
    plain_gap = gap(*(cv2.resize(p, (96, 96)) for p in plain))
    assert gap(upright, rotated) < 0.5 * plain_gap
    assert embedder.align(np.zeros((100, 100, 3), np.uint8), (200, 200, 50, 50)) is None  # box outside


def test_embed_rejects_what_holds_no_face(embedder: FaceEmbedder) -> None:
    assert embedder.embed(np.zeros((10, 10, 3), np.uint8)) is None  # too small
    assert embedder.embed(np.zeros((100, 100, 3), np.uint8), (200, 200, 50, 50)) is None  # box outside
    assert embedder.embed(np.zeros((100, 100, 3), np.uint8), (10, 10, 5, 5)) is None  # tiny box
    assert embedder.embed_bytes(b"not an image") is None
    with pytest.raises(ValueError, match="uint8"):
        embedder.embed(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="RGB"):
        embedder.embed(np.zeros((64, 64, 3, 1), np.uint8))
    with pytest.raises(ValueError, match="crop_margin"):
        FaceEmbedder(crop_margin=0.5)


def test_batch_call_adds_an_embedding_column(embedder: FaceEmbedder, crops: dict[str, list[bytes]]) -> None:
    full = centre_crop_photo_bytes(crops[PERSON][0])
    batch = {
        "img": np.array([crops[PERSON][0], b"corrupt", None, full], dtype=object),
        "box": np.array([None, None, None, {"x": 0, "y": 0, "w": 128, "h": 128}], dtype=object),
        "sample_id": np.array(["a", "b", "c", "d"]),
    }
    plain = FaceEmbedder(image_column="img", output_column="vec")
    out = plain(batch)
    assert set(out) == {"img", "box", "sample_id", "vec"}
    np.testing.assert_array_equal(out["sample_id"], batch["sample_id"])
    assert out["vec"].shape == (4, EMBEDDING_DIM) and out["vec"].dtype == np.float32
    assert np.isfinite(out["vec"][0]).all() and np.isfinite(out["vec"][3]).all()
    assert np.isnan(out["vec"][1]).all() and np.isnan(out["vec"][2]).all()
    boxed = FaceEmbedder(image_column="img", box_column="box", output_column="vec")(batch)["vec"]
    assert np.isnan(boxed[0]).all()  # a box column without a box: no face to embed
    assert np.isfinite(boxed[3]).all()


def centre_crop_photo_bytes(data: bytes) -> bytes:
    """The same crop re-encoded as PNG (any decodable format goes through the batch path)."""
    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).save(buf, format="PNG")
    return buf.getvalue()


# -- find_outliers on real embeddings -------------------------------------------------------------


def test_injected_wrong_people_are_removed(vectors: dict[str, np.ndarray]) -> None:
    embeddings = np.concatenate([vectors[PERSON], vectors["injected"]])
    verdicts = find_outliers(embeddings, 0.6)
    assert [v.index for v in verdicts] == list(range(15))
    removed = {v.index for v in verdicts if not v.kept}
    assert {12, 13, 14} <= removed
    assert all(verdicts[i].reason == "wrong_person" for i in (12, 13, 14))
    assert all(verdicts[i].distance is not None and verdicts[i].distance > 0.6 for i in (12, 13, 14))
    assert sum(v.kept for v in verdicts[:12]) >= 10
    assert all(v.reason in (None, *REASONS) for v in verdicts)


def test_two_equal_halves_are_ambiguous(vectors: dict[str, np.ndarray]) -> None:
    embeddings = np.concatenate([vectors[PERSON][:6], vectors[SECOND]])
    verdicts = find_outliers(embeddings, 0.6)
    assert {v.reason for v in verdicts} == {"ambiguous"}
    assert not any(v.kept for v in verdicts)
    # the two people are the two groups the reviewer sees
    assert len({v.group for v in verdicts[:6]}) == 1 and len({v.group for v in verdicts[6:]}) == 1
    assert {verdicts[0].group, verdicts[6].group} == {0, 1}
    # one more photo of the first person is not enough of a lead (7 vs 6) ...
    assert {v.reason for v in find_outliers(np.concatenate([vectors[PERSON][:7], vectors[SECOND]]))} == {"ambiguous"}
    # ... twice as many is: the second person is the wrong one
    verdicts = find_outliers(np.concatenate([vectors[PERSON], vectors[SECOND]]))
    assert [v.reason for v in verdicts[12:]] == ["wrong_person"] * 6
    assert sum(v.kept for v in verdicts[:12]) >= 10


def test_largest_group_wins_over_the_mean(vectors: dict[str, np.ndarray]) -> None:
    """With 40% of one impostor, the mean of all crops sits between the two people; the core does not."""
    embeddings = np.concatenate([vectors[PERSON][:9], vectors[SECOND]])
    verdicts = find_outliers(embeddings, 0.6, min_lead=1.5)
    assert [v.reason for v in verdicts[9:]] == ["wrong_person"] * 6
    assert all(v.in_core for v in verdicts[:9] if v.kept)


def test_missing_embeddings_are_reported(vectors: dict[str, np.ndarray]) -> None:
    rows: list[np.ndarray | None] = [*vectors[PERSON][:5], None]
    verdicts = find_outliers(rows)
    assert verdicts[5] == Verdict(5, kept=False, reason="no_embedding", distance=None)
    assert all(v.kept for v in verdicts[:5])
    nan_rows = np.concatenate([vectors[PERSON][:5], np.full((1, EMBEDDING_DIM), np.nan, np.float32)])
    assert find_outliers(nan_rows) == verdicts


def test_deterministic_and_order_independent(vectors: dict[str, np.ndarray]) -> None:
    embeddings = np.concatenate([vectors[PERSON], vectors["injected"], vectors[SECOND][:2]])
    first = find_outliers(embeddings, 0.55)
    assert find_outliers(embeddings.copy(), 0.55) == first
    order = np.random.default_rng(7).permutation(len(embeddings))
    shuffled = find_outliers(embeddings[order], 0.55)
    by_original = {int(order[v.index]): (v.kept, v.reason) for v in shuffled}
    assert by_original == {v.index: (v.kept, v.reason) for v in first}


# -- find_outliers on synthetic embeddings (fast rules) -------------------------------------------


def _cloud(rng: np.random.Generator, n: int, spread: float = 0.03) -> np.ndarray:
    centre = rng.normal(0, 0.09, EMBEDDING_DIM)
    return centre + rng.normal(0, spread, (n, EMBEDDING_DIM))


def test_too_few_crops_is_ambiguous() -> None:
    rng = np.random.default_rng(0)
    assert {v.reason for v in find_outliers(_cloud(rng, 2))} == {"ambiguous"}
    assert all(v.kept for v in find_outliers(_cloud(rng, 3)))
    assert find_outliers(np.empty((0, EMBEDDING_DIM))) == []
    (single,) = find_outliers(_cloud(rng, 1))
    assert (single.reason, single.distance) == ("ambiguous", None)


def test_many_scattered_wrong_people_leave_the_biggest_group() -> None:
    rng = np.random.default_rng(1)
    person = _cloud(rng, 6)
    strangers = np.stack([_cloud(rng, 1)[0] for _ in range(8)])  # more wrong photos than right ones
    verdicts = find_outliers(np.concatenate([person, strangers]))
    assert [v.kept for v in verdicts] == [True] * 6 + [False] * 8
    assert {v.reason for v in verdicts[6:]} == {"wrong_person"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"threshold": 0}, "threshold"), ({"min_core": 1}, "min_core"), ({"min_lead": 0.5}, "min_lead")],
)
def test_bad_parameters(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        find_outliers(np.zeros((3, EMBEDDING_DIM)), **kwargs)  # type: ignore[arg-type]


def test_bad_shapes() -> None:
    with pytest.raises(ValueError, match="128"):
        find_outliers(np.zeros((3, 64)))
    with pytest.raises(ValueError, match="embedding 1"):
        find_outliers([np.zeros(128), np.zeros(3)])


# -- exclusion list around the cleaner -------------------------------------------------------------


def test_clean_identity_applies_the_exclusion_list(vectors: dict[str, np.ndarray]) -> None:
    embeddings = np.concatenate([vectors[PERSON], vectors["injected"]])
    ids = [f"img-{i:02d}" for i in range(15)]
    verdicts = clean_identity(ids, embeddings, 0.6, excluded={"img-00", "img-12"}, reviewed_keep={"img-13"})
    assert [v.index for v in verdicts] == list(range(15))
    assert verdicts[0].reason == "excluded" and verdicts[12].reason == "excluded"
    assert verdicts[13].kept and verdicts[13].reviewed and verdicts[13].distance is not None
    assert verdicts[14].reason == "wrong_person"
    entries = exclusions_for("tony-blair", ids, verdicts)
    assert [(e.source_image_id, e.reason, e.source) for e in entries] == [("img-14", "wrong_person", "auto")]
    with pytest.raises(ValueError, match="image ids"):
        clean_identity(ids[:3], embeddings)


# -- contact sheet ----------------------------------------------------------------------------------


class _Checker(HTMLParser):
    """Collects text and checks that every non-void element is closed in order."""

    VOID: ClassVar[frozenset[str]] = frozenset({"meta", "img", "br", "hr", "link", "input"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.text: list[str] = []
        self.images = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images += 1
            src = dict(attrs).get("src") or ""
            if not src.startswith("data:image/jpeg;base64,"):
                self.errors.append(f"img not inline: {src[:40]}")
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(f"unbalanced </{tag}>")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.mark.parametrize("where", ["local", "memory"])
def test_contact_sheet(
    where: str, tmp_path: Path, vectors: dict[str, np.ndarray], crops: dict[str, list[bytes]]
) -> None:
    images = [*crops[PERSON], *crops["injected"], None]
    embeddings = [*vectors[PERSON], *vectors["injected"], None]
    verdicts = find_outliers(embeddings, 0.6)
    items = [
        SheetItem(f"sha-{i:02d}", img, v, caption=f"rank {i}")
        for i, (img, v) in enumerate(zip(images, verdicts, strict=True))
    ]
    root = str(tmp_path / "review") if where == "local" else f"memory://facescale-sheet-{tmp_path.name}"
    location = Location.from_uri(root)
    written = write_contact_sheet(location, "Tony Blair <script>", items)
    path = location.path("tony-blair-script.html")
    assert written == location.display(path)
    page = location.read_bytes(path).decode("utf-8")
    assert page.startswith("<!doctype html>")
    assert "<script>" not in page  # escaped
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert checker.errors == [] and checker.stack == []
    assert checker.images == 15  # one thumbnail per image; the missing one is a placeholder
    text = " ".join(checker.text)
    for item in items:
        assert item.image_id in text
    for reason in ("wrong_person", "no_embedding"):
        assert reason in text and REASONS[reason] in text
    # removed first, the one nearest the threshold first; kept afterwards, farthest first
    order = [int(m) for m in re.findall(r'id="item-(\d+)"', page)]
    removed = [v for v in verdicts if not v.kept]
    kept = [v for v in verdicts if v.kept]
    assert order[: len(removed)] == [
        v.index for v in sorted((v for v in removed if v.distance is not None), key=lambda v: v.distance or 0)
    ] + [15]
    assert order[len(removed) :] == [v.index for v in sorted(kept, key=lambda v: -(v.distance or 0))]
    if where == "memory":
        location.fs.rm(location.root, recursive=True)


def test_contact_sheet_of_an_ambiguous_identity(vectors: dict[str, np.ndarray], crops: dict[str, list[bytes]]) -> None:
    verdicts = find_outliers(np.concatenate([vectors[PERSON][:6], vectors[SECOND]]))
    items = [
        SheetItem(f"id{i}", img, v)
        for i, (img, v) in enumerate(zip(crops[PERSON][:6] + crops[SECOND], verdicts, strict=True))
    ]
    page = render_contact_sheet("Two People", items)
    assert "Ambiguous identity" in page
    assert page.count(", group 0<") == 6 and page.count(", group 1<") == 6
    assert page.count('class="card') == 12
    assert render_contact_sheet("Two People", items) == page  # deterministic


@pytest.mark.browser
def test_the_sheet_legend_keeps_every_reason_apart_from_its_meaning(tmp_path: Path) -> None:
    """In Chromium, each reason in the legend ends before its explanation starts (the longest included)."""
    from facescale.scraper.browser import make_driver

    reasons = [Reason.CROSS_IDENTITY_DUPLICATE, Reason.NEAR_DUPLICATE, Reason.WRONG_PERSON, Reason.NO_EMBEDDING]
    items = [SheetItem(f"id{i}", None, Verdict(i, False, reason, 0.7)) for i, reason in enumerate(reasons)]
    page = tmp_path / "sheet.html"
    page.write_text(render_contact_sheet("Some One", items))
    driver = make_driver(extra_args=("--window-size=1000,800",))
    try:
        driver.get(page.as_uri())
        boxes = driver.execute_script(
            "return [...document.querySelectorAll('.legend dt')].map(dt => {"
            "  const term = document.createRange(); term.selectNodeContents(dt);"
            "  return [dt.textContent, term.getBoundingClientRect().right,"
            "          dt.nextElementSibling.getBoundingClientRect().left,"
            "          dt.getBoundingClientRect().top, dt.nextElementSibling.getBoundingClientRect().top]; })")
    finally:
        driver.quit()
    assert sorted(b[0] for b in boxes) == sorted(r.value for r in reasons)
    for term, term_right, meaning_left, term_top, meaning_top in boxes:
        assert term_right <= meaning_left, f"{term} runs into its meaning"
        assert abs(term_top - meaning_top) < 2, f"{term} is not on its meaning's line"
