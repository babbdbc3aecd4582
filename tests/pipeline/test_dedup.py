"""dedup: perceptual keys of real photos and their copies, the multi-index search, clusters, keep/drop decisions."""

from __future__ import annotations

import io
import random
from collections import Counter
from dataclasses import replace
from pathlib import Path

import imagehash
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, ImageEnhance

from facescale.pipeline import dedup
from facescale.pipeline.dedup import (
    DEFAULT_MAX_DISTANCE,
    REASONS,
    Decision,
    Hasher,
    Record,
    SameFace,
    as_hashes,
    brute_force_pairs,
    connected_components,
    duplicate_clusters,
    hamming,
    hash_image,
    hash_image_keys,
    near_duplicate_pairs,
    resolve,
    same_face_pairs,
)

K = DEFAULT_MAX_DISTANCE


def _jpeg(image: Image.Image, quality: int = 95) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def _open(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def _crop_borders(image: Image.Image, fraction: float) -> Image.Image:
    """Cut ``fraction`` of each side's length off, more from the left/top than from the right/bottom."""
    w, h = image.size
    return image.crop(
        (
            round(w * fraction * 0.7),
            round(h * fraction * 0.6),
            w - round(w * fraction * 0.3),
            h - round(h * fraction * 0.4),
        )
    )


def _face_crop(image: Image.Image) -> Image.Image:
    """The central 150x150 of a 250x250 photo resized to 128x128, like a detector crop."""
    w, h = image.size
    side = round(min(w, h) * 0.6)
    left, top = (w - side) // 2, (h - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((128, 128), Image.BILINEAR)


COPIES = {
    "resized 0.6x": lambda im: _jpeg(im.resize((150, 150), Image.BILINEAR)),
    "resized 0.7x and back": lambda im: _jpeg(im.resize((175, 175), Image.BILINEAR).resize(im.size, Image.BILINEAR)),
    "re-encoded q55": lambda im: _jpeg(im, 55),
    "cropped 3%": lambda im: _jpeg(_crop_borders(im, 0.03)),
    "brightened 8%": lambda im: _jpeg(ImageEnhance.Brightness(im).enhance(1.08)),
    "darkened 8%": lambda im: _jpeg(ImageEnhance.Brightness(im).enhance(0.92)),
    "all at once": lambda im: _jpeg(
        ImageEnhance.Brightness(_crop_borders(im, 0.03)).enhance(1.05).resize((160, 160), Image.BILINEAR), 70
    ),
}


@pytest.fixture(scope="module")
def photos(lfw_dev: Path) -> list[tuple[str, bytes]]:
    """The first photo of 40 people (sorted by name): different people, LFW's identical framing."""
    people = sorted(d for d in lfw_dev.iterdir() if d.is_dir())[:40]
    return [(d.name, sorted(d.glob("*.jpg"))[0].read_bytes()) for d in people]


# --- hashing ---------------------------------------------------------------------------------------------


def _base32(image: Image.Image) -> Image.Image:
    """The 32x32 image the key's words are hashed from (see dedup.image_key)."""
    return image.convert("RGB").resize((100, 100), Image.BOX).resize((32, 32), Image.LANCZOS)


def _distance(a: bytes, b: bytes) -> int:
    """The distance that decides whether two images are near-duplicates: keys, or a window and a key."""
    ka, kb = hash_image_keys(a), hash_image_keys(b)
    assert ka is not None and kb is not None
    return min(
        [hamming(ka.key, kb.key)] + [hamming(w, kb.key) for w in ka.windows] + [hamming(ka.key, w) for w in kb.windows]
    )


def test_key_is_192_bits_deterministic_and_made_of_imagehash_phashes(photos: list[tuple[str, bytes]]) -> None:
    _, data = photos[0]
    key = hash_image(data)
    assert key is not None and 0 <= key < 2**192
    assert hash_image(data) == key
    small = _base32(_open(data))
    _, cb, cr = small.convert("YCbCr").split()
    words = [int(str(imagehash.phash(plane)), 16) for plane in (small.convert("L"), cb, cr)]
    assert key == words[0] << 128 | words[1] << 64 | words[2]
    keys = hash_image_keys(data)
    assert keys is not None and keys.key == key and len(keys.windows) == len(dedup.WINDOW_OFFSETS)
    assert all(0 < hamming(key, w) < 64 for w in keys.windows)  # windows differ from the whole, but not much


@pytest.mark.parametrize("kind", list(COPIES))
def test_modified_copies_of_real_photos_stay_within_the_distance(photos: list[tuple[str, bytes]], kind: str) -> None:
    for name, data in photos[:12]:
        distance = _distance(data, COPIES[kind](_open(data)))
        assert distance <= K, f"{name}: {kind} copy at distance {distance}"


def test_border_crops_need_the_windows(photos: list[tuple[str, bytes]]) -> None:
    """A copy that lost 5% of its borders, unevenly, is often far by whole keys but close to a window."""
    whole_only, with_windows = [], []
    for _, data in photos[:12]:
        copy = _jpeg(_crop_borders(_open(data), 0.05))
        a, b = hash_image(data), hash_image(copy)
        assert a is not None and b is not None
        whole_only.append(hamming(a, b))
        with_windows.append(_distance(data, copy))
    assert max(with_windows) <= K < max(whole_only)
    assert sum(with_windows) < 0.6 * sum(whole_only)


@pytest.mark.parametrize("kind", ["resized 0.6x", "re-encoded q55", "cropped 3%", "brightened 8%"])
def test_modified_copies_of_face_crops_stay_within_the_distance(photos: list[tuple[str, bytes]], kind: str) -> None:
    for name, data in photos[:12]:
        image = _open(data)
        distance = _distance(_jpeg(_face_crop(image), 90), _jpeg(_face_crop(_open(COPIES[kind](image))), 90))
        assert distance <= K, f"{name}: {kind} crop at distance {distance}"


@pytest.mark.parametrize("crop", [False, True], ids=["whole", "face crop"])
def test_photos_of_different_people_are_not_near_duplicates(photos: list[tuple[str, bytes]], crop: bool) -> None:
    found = [hash_image_keys(_jpeg(_face_crop(_open(d)), 90) if crop else d) for _, d in photos]
    keys = as_hashes([f.key for f in found if f is not None], 3)
    windows = np.stack([as_hashes(f.windows, 3) for f in found if f is not None])
    assert len(keys) == len(photos)
    close = [(photos[i][0], photos[j][0]) for i, j in near_duplicate_pairs(keys, K, windows=windows)]
    assert close == []
    # LFW's aligned portraits are closer than random keys (mean 96 of 192 bits), but well beyond k
    distances = [hamming(a.key, b.key) for i, a in enumerate(found) for b in found[i + 1 :] if a and b]
    assert min(distances) > K + 4 and 50 < float(np.mean(distances)) < 96


def test_grey_images_fall_back_to_luma_views(photos: list[tuple[str, bytes]]) -> None:
    """A grey image's chroma words would be noise; they are dhash / vertical dhash of the luma instead."""
    grey = _open(photos[3][1]).convert("L")
    key = hash_image(_jpeg(grey))
    assert key is not None
    small = _base32(_open(_jpeg(grey))).convert("L")
    assert (key >> 64) & (2**64 - 1) == int(str(imagehash.dhash(small)), 16)
    assert key & (2**64 - 1) == int(str(imagehash.dhash_vertical(small)), 16)
    assert _distance(_jpeg(grey), _jpeg(grey.resize((170, 170)), 60)) <= K
    colour = hash_image(photos[3][1])
    assert colour is not None and hamming(key, colour) > K  # grey and colour versions are told apart


@pytest.mark.parametrize(
    "data",
    [b"", b"not an image at all", b"\xff\xd8\xff\xe0" + b"\0" * 64],
    ids=["empty", "text", "jpeg-header-only"],
)
def test_undecodable_bytes_have_no_key(data: bytes) -> None:
    assert hash_image(data) is None


def test_truncated_jpeg_has_no_key(photos: list[tuple[str, bytes]]) -> None:
    data = photos[0][1]
    assert hash_image(data[: len(data) // 2]) is None


def test_hasher_adds_keys_windows_and_reason_codes(photos: list[tuple[str, bytes]]) -> None:
    images = np.array([photos[0][1], b"garbage", photos[1][1]], dtype=object)
    batch = {"image": images, "sample_id": np.array(["a", "b", "c"])}
    out = Hasher(image_column="image")(batch)
    assert set(out) == {"image", "sample_id", "phash", "phash_windows", "phash_error"}
    assert out["phash"].dtype == out["phash_windows"].dtype == np.uint64
    assert out["phash"].shape == (3, 3) and out["phash_windows"].shape == (3, len(dedup.WINDOW_OFFSETS), 3)
    assert list(out["phash_error"]) == [None, "undecodable", None]
    first = hash_image_keys(photos[0][1])
    assert first is not None
    assert np.array_equal(out["phash"][0], as_hashes([first.key], 3)[0])
    assert np.array_equal(out["phash_windows"][0], as_hashes(first.windows, 3))
    assert not out["phash"][1].any() and not out["phash_windows"][1].any()
    assert out["sample_id"] is batch["sample_id"]  # other columns pass through
    plain = Hasher(windows=False)(batch)
    assert "phash_windows" not in plain and np.array_equal(plain["phash"], out["phash"])


# --- search ----------------------------------------------------------------------------------------------


def _naive_pairs(keys: list[int], k: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(len(keys)) for j in range(i + 1, len(keys)) if hamming(keys[i], keys[j]) <= k]


def _planted(rng: np.random.Generator, n: int, words: int, k: int) -> np.ndarray:
    """Random keys plus copies at exactly k-1, k and k+1 bits from an original, and exact repeats."""
    keys = rng.integers(0, 2**64, size=(n, words), dtype=np.uint64)
    bits = 64 * words
    for row, flips in enumerate([0, 0, k - 1, k, k, k + 1, k + 1, 1, k]):
        source, target = keys[row], n - 1 - row
        keys[target] = source
        for b in rng.choice(bits, max(flips, 0), replace=False):
            keys[target, b // 64] ^= np.uint64(1) << np.uint64(63 - b % 64)
    return keys


@pytest.mark.parametrize(("words", "k"), [(1, 0), (1, 3), (1, 8), (1, 12), (2, 10), (2, 20), (3, 24), (3, K)])
def test_search_equals_brute_force_on_random_keys_with_edge_distances(words: int, k: int) -> None:
    rng = np.random.default_rng(words * 100 + k)
    keys = _planted(rng, 3000, words, k)
    expected = brute_force_pairs(keys, k)
    found = near_duplicate_pairs(keys, k, bands=dedup.choose_bands(len(keys), k, words))  # never the brute force
    assert np.array_equal(found, expected)
    dist = np.bitwise_count(keys[found[:, 0]] ^ keys[found[:, 1]]).sum(axis=1)
    assert (dist <= k).all()
    found_set = {tuple(p) for p in found.tolist()}
    n = len(keys)
    assert {(3, n - 4), (4, n - 5)} <= found_set  # planted at exactly k
    assert not {(5, n - 6), (6, n - 7)} & found_set  # planted at k + 1


@pytest.mark.parametrize("bands", [1, 2, 3, 4, 5, 7, 9])
def test_every_band_count_gives_the_same_pairs(bands: int) -> None:
    """Few wide bands (searchsorted path), bands straddling the word boundary, many narrow bands."""
    rng = np.random.default_rng(bands)
    words = 1 if bands == 1 else 2
    k = 0 if bands == 1 else 2 * bands + 1
    keys = _planted(rng, 800, words, k)
    assert np.array_equal(near_duplicate_pairs(keys, k, bands=max(bands, words)), brute_force_pairs(keys, k))


@given(
    st.lists(st.integers(0, 2**64 - 1), max_size=40),
    st.integers(0, 64),
    st.lists(st.tuples(st.integers(0, 39), st.integers(0, 63)), max_size=30),
)
def test_search_equals_naive_all_pairs(values: list[int], k: int, flips: list[tuple[int, int]]) -> None:
    keys = list(values)
    for source, bit in flips:  # near copies of some keys
        if source < len(values):
            keys.append(values[source] ^ (1 << bit))
    expected = _naive_pairs(keys, k)
    assert [tuple(p) for p in brute_force_pairs(keys, k).tolist()] == expected
    # small inputs would go to the brute force: force the multi-index search, with radius 0 and above
    for bands in (None, min(k + 1, 64), max(1, -(-(k + 1) // 3))):
        assert [tuple(p) for p in near_duplicate_pairs(keys, k, bands=bands).tolist()] == expected


def _flip(value: np.ndarray, bits: np.ndarray) -> np.ndarray:
    out = value.copy()
    for b in bits:
        out[b // 64] ^= np.uint64(1) << np.uint64(63 - b % 64)
    return out


@pytest.mark.parametrize(("words", "k"), [(1, 6), (2, 14), (3, K)])
def test_window_search_equals_brute_force_with_edge_distances(words: int, k: int) -> None:
    """Window keys find other images' keys within k (exactly k included, k + 1 not), never their own."""
    rng = np.random.default_rng(k)
    n, j, bits = 2000, 3, 64 * words
    keys = rng.integers(0, 2**64, size=(n, words), dtype=np.uint64)
    windows = np.stack([[_flip(key, rng.choice(bits, 5, replace=False)) for _ in range(j)] for key in keys])
    plants = {(10, 20): k, (30, 40): k + 1, (50, 60): k - 1}  # window 1 of the first is this far from the second
    for (a, b), flips in plants.items():
        windows[a, 1] = _flip(keys[b], rng.choice(bits, flips, replace=False))
    found = near_duplicate_pairs(keys, k, windows=windows, bands=dedup.choose_bands(n, k, words, n * j))
    assert np.array_equal(found, brute_force_pairs(keys, k, windows=windows))
    pairs = {tuple(p) for p in found.tolist()}
    assert (10, 20) in pairs and (50, 60) in pairs and (30, 40) not in pairs
    assert not any(a == b for a, b in pairs)
    # windows only add pairs
    assert {tuple(p) for p in near_duplicate_pairs(keys, k).tolist()} <= pairs


@given(
    st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=25),
    st.integers(0, 30),
    st.lists(st.tuples(st.integers(0, 24), st.integers(0, 24), st.integers(0, 63)), max_size=20),
)
def test_window_search_equals_naive(values: list[int], k: int, plants: list[tuple[int, int, int]]) -> None:
    """Two windows per key: a flipped copy of the key, and possibly a near copy of another key."""
    n = len(values)
    windows = [[v ^ 0b1011, v ^ (1 << 40)] for v in values]
    for owner, target, bit in plants:
        windows[owner % n][1] = values[target % n] ^ (1 << bit)

    def near(i: int, j: int) -> bool:
        options = [hamming(values[i], values[j])]
        options += [hamming(w, values[j]) for w in windows[i]] + [hamming(w, values[i]) for w in windows[j]]
        return min(options) <= k

    expected = [(i, j) for i in range(n) for j in range(i + 1, n) if near(i, j)]
    assert [tuple(p) for p in brute_force_pairs(values, k, windows=windows).tolist()] == expected
    for bands in (None, k + 1, max(1, -(-(k + 1) // 3))):
        assert [tuple(p) for p in near_duplicate_pairs(values, k, windows=windows, bands=bands).tolist()] == expected
        labels = duplicate_clusters(values, k, windows=windows, bands=bands)
        assert labels.tolist() == _union_find_labels(n, expected)


def test_search_edge_cases() -> None:
    assert near_duplicate_pairs([], 3).shape == (0, 2)
    assert near_duplicate_pairs([5], 3).shape == (0, 2)
    assert near_duplicate_pairs([7, 7, 7], 0).tolist() == [[0, 1], [0, 2], [1, 2]]
    assert len(near_duplicate_pairs(list(range(30)), 64)) == 30 * 29 // 2  # everything is within 64 bits
    int64 = np.array([-1, 2**63 - 1], dtype=np.int64)  # int64 hashes are read as the same 64 bits
    assert near_duplicate_pairs(int64, 1).tolist() == [[0, 1]]
    with pytest.raises(ValueError, match="max_distance"):
        near_duplicate_pairs([1, 2], 65)
    with pytest.raises(ValueError, match="probes"):
        near_duplicate_pairs([1, 2], 20, bands=1)
    with pytest.raises(ValueError, match="bands"):
        near_duplicate_pairs(np.zeros((4, 2), dtype=np.uint64), 3, bands=1)  # a band may not exceed a word


def test_search_is_much_cheaper_than_brute_force_at_scale() -> None:
    """The cost model behind the band choice: sub-quadratic growth, and a clear win at 100k keys with windows."""
    windows = len(dedup.WINDOW_OFFSETS)
    small, large = (
        dedup.search_cost(n, K, dedup.choose_bands(n, K, queries=windows * n), queries=windows * n)
        for n in (100_000, 1_000_000)
    )
    assert small < dedup.brute_force_cost(100_000, queries=windows * 100_000) / 50
    assert large / small < 100 * 0.8


# --- clusters --------------------------------------------------------------------------------------------


def _union_find_labels(n: int, pairs: list[tuple[int, int]]) -> list[int]:
    parent = list(range(n))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = root(a), root(b)
        parent[max(ra, rb)] = min(ra, rb)
    roots = [root(x) for x in range(n)]
    numbering = {r: i for i, r in enumerate(sorted(set(roots)))}
    return [numbering[r] for r in roots]


@given(st.integers(1, 60), st.lists(st.tuples(st.integers(0, 59), st.integers(0, 59)), max_size=80))
def test_connected_components_match_union_find(n: int, edges: list[tuple[int, int]]) -> None:
    pairs = [(a % n, b % n) for a, b in edges]
    labels = connected_components(n, np.array(pairs, dtype=np.int64).reshape(-1, 2))
    assert labels.tolist() == _union_find_labels(n, pairs)
    shuffled = list(reversed([(b, a) for a, b in pairs]))
    assert connected_components(n, np.array(shuffled, dtype=np.int64).reshape(-1, 2)).tolist() == labels.tolist()


def test_duplicate_clusters_group_chains_and_many_equal_keys() -> None:
    a, b, far = 0, 0b111, 2**63 + 2**40 + 12345  # a-b at 3 bits, b-c at 3 bits, a-c at 6
    c = b ^ 0b111000
    keys = [a, far, b, c] + [far] * 5000  # 5000 equal keys: 12.5M pairs if listed
    labels = duplicate_clusters(keys, 3)
    assert labels[:4].tolist() == [0, 1, 0, 0]
    assert (labels[4:] == 1).all()


# --- decisions -------------------------------------------------------------------------------------------


def _key(seed: int, flips: int = 0) -> int:
    """A random 192-bit key, optionally with ``flips`` low bits flipped."""
    value = random.Random(seed).getrandbits(192)
    return value ^ ((1 << flips) - 1)


def _by_key(decisions: list[Decision]) -> dict[str, Decision]:
    return {d.key: d for d in decisions}


def test_within_one_identity_the_best_quality_copy_is_kept() -> None:
    records = [
        Record("a1", "alice", _key(1), quality=0.5, sha256="s1"),
        Record("a2", "alice", _key(1, 5), quality=0.9, sha256="s2"),
        Record("a3", "alice", _key(1, 9), quality=0.1, sha256="s3"),
        Record("a4", "alice", _key(1), quality=0.2, sha256="s2"),  # same bytes as a2
        Record("a5", "alice", _key(2), quality=0.3),  # a different photo
    ]
    out = _by_key(resolve(records))
    assert out["a2"].keep and out["a2"].reason is None and out["a2"].cluster == ("a1", "a2", "a3", "a4")
    assert (out["a1"].keep, out["a1"].reason, out["a1"].kept) == (False, "near_duplicate", "a2")
    assert (out["a3"].keep, out["a3"].reason, out["a3"].kept) == (False, "near_duplicate", "a2")
    assert (out["a4"].keep, out["a4"].reason, out["a4"].kept) == (False, "duplicate", "a2")
    assert out["a5"] == Decision("a5", "alice", True)


def test_same_photo_under_two_identities_drops_every_copy_and_records_both() -> None:
    records = [
        Record("a1", "alice", _key(1), quality=0.9),
        Record("a2", "alice", _key(1, 4), quality=0.5),
        Record("b1", "bob", _key(1, 7), quality=1.0),
        Record("b2", "bob", _key(3), quality=0.1),
        Record("c1", "carol", _key(4), quality=0.1, sha256="x"),
        Record("d1", "dave", _key(5), quality=0.1, sha256="x"),  # exact bytes under another name
    ]
    out = _by_key(resolve(records))
    for key in ("a1", "a2", "b1"):
        assert (out[key].keep, out[key].reason) == (False, "cross_identity_duplicate")
        assert out[key].identities == ("alice", "bob") and out[key].kept is None
        assert out[key].cluster == ("a1", "a2", "b1")
    assert out["b2"].keep
    assert (out["c1"].reason, out["d1"].reason) == ("cross_identity_duplicate", "cross_identity_duplicate")
    assert out["c1"].identities == ("carol", "dave")


def test_ties_are_broken_by_key_and_nan_quality_is_worst() -> None:
    tied = [Record("z", "p", _key(1), 0.5), Record("m", "p", _key(1, 2), 0.5), Record("q", "p", _key(1, 3), 0.5)]
    assert [d.key for d in resolve(tied) if d.keep] == ["m"]
    nan = [Record("a", "p", _key(1), float("nan")), Record("b", "p", _key(1, 2), -5.0)]
    assert [d.key for d in resolve(nan) if d.keep] == ["b"]


def test_decisions_do_not_depend_on_record_order() -> None:
    rng = random.Random(7)
    records = [Record(f"k{i}", f"id{i % 3}", _key(i % 10, rng.randrange(4)), rng.random()) for i in range(40)]
    expected = _by_key(resolve(records))
    for _ in range(5):
        rng.shuffle(records)
        assert _by_key(resolve(records)) == expected


def test_undecodable_records_are_dropped_and_keys_must_be_unique() -> None:
    out = resolve([Record("a", "p", None), Record("b", "p", _key(1))])
    assert [(d.key, d.keep, d.reason) for d in out] == [("a", False, "undecodable"), ("b", True, None)]
    with pytest.raises(ValueError, match="unique"):
        resolve([Record("a", "p", _key(1)), Record("a", "q", _key(2))])
    assert resolve([]) == []


def test_reason_codes_are_documented() -> None:
    assert set(REASONS) == {"duplicate", "near_duplicate", "cross_identity_duplicate", "undecodable"}


def test_windows_join_records_whose_keys_are_far() -> None:
    base = _key(1)
    records = [
        Record("a", "alice", base, 0.9, windows=(_key(9), _key(8))),
        Record("b", "bob", base ^ ((1 << 40) - 1), 0.5, windows=(_key(7), base ^ 0b111)),  # a window near a's key
        Record("c", "carol", base ^ ((1 << 40) - 1) << 100, 0.5),  # far, and no windows
    ]
    out = _by_key(resolve(records))
    assert out["a"].reason == out["b"].reason == "cross_identity_duplicate"
    assert out["c"].keep
    assert all(d.keep for d in resolve([replace(r, windows=()) for r in records]))


def test_real_photo_copies_end_to_end(photos: list[tuple[str, bytes]]) -> None:
    """Real photos, a resized copy filed under the same name and a cropped copy under another."""
    (alice, a), (bob, b), (carol, c) = photos[:3]
    records = [
        Record("a", alice, hash_image(a), 0.8),
        Record("a-small", alice, hash_image(COPIES["resized 0.6x"](_open(a))), 0.2),
        Record("b", bob, hash_image(b), 0.5),
        Record("b-as-carol", carol, hash_image(COPIES["cropped 3%"](_open(b))), 0.9),
        Record("c", carol, hash_image(c), 0.5),
    ]
    out = _by_key(resolve(records))
    assert out["a"].keep and (out["a-small"].reason, out["a-small"].kept) == ("near_duplicate", "a")
    assert out["b"].reason == out["b-as-carol"].reason == "cross_identity_duplicate"
    assert out["b"].identities == tuple(sorted((bob, carol)))
    assert out["c"].keep


# --- the same-face rule ----------------------------------------------------------------------------------


def _vector(seed: int, offset: float = 0.0) -> np.ndarray:
    """A 128-d vector; ``offset`` moves it that far (Euclidean) along the first axis."""
    vector = np.random.default_rng(seed).normal(0, 0.1, 128)
    vector[0] += offset
    return vector


def _far(key: int, bits: int, at: int = 0) -> int:
    """``key`` with ``bits`` bits flipped from bit ``at`` up: that far away (flips in disjoint ranges add up)."""
    return key ^ (((1 << bits) - 1) << at)


def test_same_face_joins_one_identitys_copies_whose_keys_are_beyond_the_key_rule() -> None:
    base, face = _key(1), _vector(1)
    records = [
        Record("a", "alice", base, 0.9, embedding=face),
        Record("a-jitter", "alice", _far(base, 40), 0.5, embedding=_vector(1, 0.1)),  # keys alone: apart
        Record("a-burst", "alice", _far(base, 70, 40), 0.5, embedding=_vector(1, 0.1)),  # keys beyond max_bits
        Record("a-other", "alice", _far(base, 30, 110), 0.5, embedding=_vector(1, 0.3)),  # another photo of her
        Record("a-no-face", "alice", _far(base, 24, 140), 0.5),  # no embedding: the keys alone decide
        Record("b", "bob", _far(base, 24, 164), 0.5, embedding=_vector(1, 0.05)),  # another name: the keys decide
        # far keys, no embedding, but the aligned faces agree (within 24 bits): one face drawn another way
        Record("c", "carol", _key(2), 0.9, face_key=_key(7)),
        Record("c-scene", "carol", _key(3), 0.5, face_key=_far(_key(7), 20)),
        Record("c-other", "carol", _key(4), 0.5, face_key=_far(_key(7), 30, 100)),  # aligned keys too far apart
        Record("d", "dave", _key(5), 0.5, face_key=_far(_key(7), 10)),  # another name
    ]
    out = _by_key(resolve(records, K, SameFace(0.18, 56, 24)))
    assert (out["a-jitter"].keep, out["a-jitter"].reason, out["a-jitter"].kept) == (False, "near_duplicate", "a")
    assert out["a"].keep and out["a"].cluster == ("a", "a-jitter")
    assert (out["c-scene"].keep, out["c-scene"].kept) == (False, "c") and out["c"].cluster == ("c", "c-scene")
    assert all(out[k].keep and not out[k].cluster for k in ("a-burst", "a-other", "a-no-face", "b", "c-other", "d"))
    assert all(d.keep for d in resolve(records, K))  # without the rule, every key is more than K apart


def test_same_face_pairs_equal_the_naive_all_pairs() -> None:
    rng = random.Random(3)
    rule = SameFace(0.2, 48, 20)
    records = []
    for i in range(60):
        person = rng.randrange(4)
        photo = rng.randrange(6)
        key = _far(_key(100 * person + photo), rng.randrange(0, 80))
        vector = _vector(100 * person + photo, rng.uniform(0, 0.35)) if rng.random() < 0.9 else None
        windows = tuple(_key(1000 + i + w) for w in range(rng.choice((0, 5))))
        face = _far(_key(500 + 100 * person + photo), rng.randrange(0, 40)) if rng.random() < 0.8 else None
        phash = key if rng.random() < 0.95 else None
        records.append(Record(f"r{i}", f"p{person}", phash, windows=windows, embedding=vector, face_key=face))

    def close(a: Record, b: Record) -> bool:
        faces = (a.face_key, b.face_key)
        if a.identity == b.identity and None not in faces and hamming(*faces) <= rule.max_aligned_bits:  # type: ignore[arg-type]
            return True
        if a.identity != b.identity or a.phash is None or b.phash is None or a.embedding is None or b.embedding is None:
            return False
        bits = min(
            [hamming(a.phash, b.phash)]
            + [hamming(w, b.phash) for w in a.windows]
            + [hamming(a.phash, w) for w in b.windows]
        )
        return (
            bool(np.linalg.norm(np.asarray(a.embedding) - np.asarray(b.embedding)) <= rule.max_distance)
            and bits <= rule.max_bits
        )

    expected = {(i, j) for i in range(60) for j in range(i + 1, 60) if close(records[i], records[j])}
    assert expected, "the oracle found no pair: the test would not test anything"
    assert {tuple(p) for p in same_face_pairs(records, rule).tolist()} == expected


def test_same_face_finds_a_real_crop_drawn_differently_and_not_another_photo(lfw_dev: Path) -> None:
    """A real face cropped twice, the second box shifted 6% and 10% larger (detector jitter), against another
    photo of the same person: the keys are beyond the key rule; the embeddings (with the keys) tell the copy from
    the other photo, and so do the aligned faces' keys, each test on its own."""
    from facescale.pipeline.embeddings import FaceEmbedder, decode_rgb

    embedder = FaceEmbedder()

    def crop(path: Path, cx: float, cy: float, side: float) -> bytes:
        image = Image.open(path).convert("RGB")
        box = (round(cx - side / 2), round(cy - side / 2), round(cx + side / 2), round(cy + side / 2))
        return _jpeg(image.crop(box).resize((128, 128), Image.BILINEAR), 90)

    people = sorted(d for d in lfw_dev.iterdir() if d.is_dir() and len(list(d.glob("*.jpg"))) >= 5)[:6]
    joined, apart, beyond_keys = Counter[str](), Counter[str](), 0
    for person in people:
        first, second = sorted(person.glob("*.jpg"))[:2]
        crops = {
            "a": crop(first, 125, 125, 150),
            "a-jitter": crop(first, 134, 131, 165),
            "other": crop(second, 125, 125, 150),
        }
        records = []
        for key, data in crops.items():
            keys = hash_image_keys(data)
            vector, chip = embedder.embed_and_align(decode_rgb(data))
            assert keys is not None and vector is not None and chip is not None
            face = dedup.image_key(Image.fromarray(chip))
            records.append(Record(key, person.name, keys.key, windows=keys.windows, embedding=vector, face_key=face))
        beyond_keys += all(d.keep for d in resolve(records, K))
        for test, only in (("embeddings", {"face_key": None}), ("aligned", {"embedding": None})):
            out = _by_key(resolve([replace(r, **only) for r in records], K, SameFace()))
            joined[test] += out["a-jitter"].cluster == ("a", "a-jitter")
            apart[test] += out["other"].keep and not out["other"].cluster
    assert beyond_keys >= 4  # the keys alone miss most of these copies
    assert joined == {"embeddings": len(people), "aligned": len(people)}
    assert apart == {"embeddings": len(people), "aligned": len(people)}
