"""The identity registry: name normalisation, safe slugs, stable labels, locked edits."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import re
import tempfile
import unicodedata
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from facescale.errors import InvalidIdentityError, ManifestError, NotFoundError
from facescale.storage import IdentityRegistry, Location, make_slug, normalize_name
from facescale.storage.identities import name_key

SLUG_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")

# Pieces that stress a slugger: path tricks, dots, emoji (with ZWJ), CJK, RTL, combining marks.
TRICKY = [
    "/", "\\", "../", "..", ".", "./", "~", "-", "--", "_", " ", "  ", "\t", "\n", "\u00a0", "\u3000",
    "🙂", "👩\u200d👩\u200d👧", "🏳️\u200d🌈", "東京", "李小龍", "한국", "مرحبا", "שלום", "\u200f", "\u202e",
    "é", "e\u0301", "ß", "ẞ", "İ", "\u0131", "ᾈ", "ǅ", "ﬁ", "Ⅻ", "①", "½", "José", "Martí", "O'Brien", "x",
    "?", "???", "#", "%2e%2e%2f", "CON", "nul", "a" * 70,
]
SPACES = " \t\n\r\f\v\u00a0\u2028\u3000"
CONTROL = ["\x00", "\x07", "\x1b", "\x7f", "\x9f", "\u0378", "\ue000", "\U000f0000"]  # Cc, Cn, Co

fragments = st.one_of(st.sampled_from(TRICKY), st.text(max_size=12))
any_text = st.one_of(
    st.lists(fragments, max_size=12).map("".join),
    st.text(max_size=1000),
    st.text(st.sampled_from("aA-. /é東🙂"), min_size=60, max_size=1000),
)


def _normal_length(name: str) -> int:
    return len(" ".join(unicodedata.normalize("NFC", name).split()))


valid_chars = st.characters(categories=["L", "M", "N", "P", "S", "Zs"])
valid_names = st.one_of(
    st.lists(st.sampled_from(TRICKY), min_size=1, max_size=8).map("".join),
    st.text(valid_chars, min_size=1, max_size=200),
).filter(lambda s: 0 < _normal_length(s) <= 200)
# Few characters, so distinct names often share a base slug ("a", "A!", "a?" -> "a").
colliding_names = st.text(st.sampled_from("aAbß -!?🙂é"), min_size=1, max_size=5).filter(str.strip)


def _tree(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative path -> digest)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _registry(root: Path | str) -> IdentityRegistry:
    return IdentityRegistry(Location.from_uri(str(root)))


def _check_slug(slug: str) -> None:
    assert SLUG_RE.fullmatch(slug), slug
    assert len(slug) <= 64
    assert ".." not in slug and "/" not in slug


# -- names and slugs (property-based) -----------------------------------------------------------
@given(any_text)
@example("../../etc/passwd")
@example("..")
@example("🙂")
@example("x" * 200)
def test_every_accepted_name_gets_a_safe_deterministic_slug(name: str) -> None:
    try:
        normal = normalize_name(name)
    except InvalidIdentityError:
        return
    assert normal == normal.strip() and "  " not in normal and 0 < len(normal) <= 200
    assert normalize_name(normal) == normal  # idempotent
    slug = make_slug(name)
    _check_slug(slug)
    assert make_slug(name) == slug
    assert make_slug(normal) == slug


@given(valid_names)
def test_valid_names_are_accepted(name: str) -> None:
    assert normalize_name(name) == " ".join(unicodedata.normalize("NFC", name).split())
    _check_slug(make_slug(name))


@given(valid_names, st.sampled_from(["upper", "lower", "swapcase", "spaces", "nfd", "casefold"]))
@example("ᾈ", "casefold")  # casefold("ᾈ") == "ἀι": one identity, so one slug
@example("Straße", "upper")
def test_names_that_are_one_identity_share_one_slug(name: str, variant: str) -> None:
    other = {
        "upper": name.upper(),
        "lower": name.lower(),
        "swapcase": name.swapcase(),
        "spaces": "  " + "\t ".join(name.split(" ")) + "\n",
        "nfd": unicodedata.normalize("NFD", name),
        "casefold": name.casefold(),
    }[variant]
    try:
        same = name_key(other) == name_key(name)
    except InvalidIdentityError:  # e.g. upper() made it longer than 200 characters
        return
    assume(same)
    assert make_slug(other) == make_slug(name)


@given(st.text(st.sampled_from(SPACES), max_size=50))
def test_empty_and_whitespace_only_names_are_rejected(name: str) -> None:
    with pytest.raises(InvalidIdentityError, match="empty"):
        normalize_name(name)


@given(valid_names, st.sampled_from(CONTROL), st.integers(min_value=0))
def test_names_with_control_or_unassigned_characters_are_rejected(name: str, bad: str, at: int) -> None:
    at %= len(name) + 1
    with pytest.raises(InvalidIdentityError, match="control"):
        normalize_name(name[:at] + bad + name[at:])


@given(st.text(st.sampled_from("aZ9-./é東京🙂א"), min_size=201, max_size=1000), st.sampled_from(["", " ", "\n "]))
def test_names_longer_than_200_characters_are_rejected(name: str, pad: str) -> None:
    with pytest.raises(InvalidIdentityError, match="longer than 200"):
        normalize_name(pad + name + pad)


def test_non_text_names_are_rejected() -> None:
    with pytest.raises(InvalidIdentityError, match="must be text"):
        normalize_name(42)  # type: ignore[arg-type]


# -- names and slugs (examples) -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("José Martí", "jose-marti"),
        ("  Ada   Lovelace ", "ada-lovelace"),
        ("Ada\nLovelace", "ada-lovelace"),
        ("a/b", "a-b"),
        ("../../etc/passwd", "etc-passwd"),
        ("Straße", "strasse"),
        ("東京", "dong-jing"),
    ],
)
def test_slug_examples(name: str, slug: str) -> None:
    assert make_slug(name) == slug


@pytest.mark.parametrize("name", ["???", "🙂", "..", "../..", "—", "\u200f"])
def test_names_that_slugify_to_nothing_get_a_hash_slug(name: str) -> None:
    slug = make_slug(name)
    assert re.fullmatch(r"id-[0-9a-f]{12}", slug), slug
    assert slug == make_slug(f"  {name} ")


def test_hash_slugs_differ_between_names() -> None:
    assert make_slug("???") != make_slug("!!!")


def test_over_long_slugs_end_in_a_hash_of_the_name() -> None:
    a, b = make_slug("a" * 100), make_slug("a" * 101)
    _check_slug(a)
    _check_slug(b)
    assert a != b
    assert a.startswith("a" * 50)


def test_colliding_slugs_get_numbered_suffixes(tmp_path: Path) -> None:
    # Four different names (case aside) whose base slugs collide: "ada", "ada", "ada", "ada-2".
    results = _registry(tmp_path).add(["Ada", "ADA!", "ada?", "Ada 2"])
    assert [(i.name, i.slug, i.label, changed) for i, changed in results] == [
        ("Ada", "ada", 0, True),
        ("ADA!", "ada-2", 1, True),
        ("ada?", "ada-3", 2, True),
        ("Ada 2", "ada-2-2", 3, True),
    ]


def test_slug_suffixes_keep_the_length_limit(tmp_path: Path) -> None:
    long = "a" * 64  # slugifies to exactly 64 characters: no hash tail
    registry = _registry(tmp_path)
    registry.add([long, long + "!", long + "?"])
    slugs = [i.slug for i in registry.list()]
    assert slugs == [long, "a" * 62 + "-2", "a" * 62 + "-3"]
    for slug in slugs:
        _check_slug(slug)


def test_case_and_whitespace_variants_are_one_identity(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    [(ada, added)] = registry.add(["Ada Lovelace"])
    assert added
    again = registry.add(["ada lovelace", "  ADA\tLOVELACE "])
    assert [(i, changed) for i, changed in again] == [(ada, False), (ada, False)]
    assert [i.name for i in registry.list()] == ["Ada Lovelace"]
    assert registry.get("ADA  lovelace") == ada
    assert registry.get("ada-lovelace") == ada  # by slug


def test_a_name_equal_to_another_identitys_slug_is_a_new_identity(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    registry.add(["José Martí"])
    [(other, added)] = registry.add(["jose-marti"])
    assert added
    assert (other.name, other.slug, other.label) == ("jose-marti", "jose-marti-2", 1)


# -- registry (property-based) ------------------------------------------------------------------
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.one_of(colliding_names, valid_names), max_size=25),
    st.integers(min_value=0, max_value=25),
)
def test_any_registry_has_distinct_slugs_and_dense_labels(names: list[str], cut: int) -> None:
    with tempfile.TemporaryDirectory() as root:
        registry = _registry(root)
        registry.add(names[:cut])
        registry.add(names[cut:])
        identities = registry.list(include_removed=True)
        reloaded = _registry(root).list(include_removed=True)

    first_seen: list[str] = []
    for name in names:
        if name_key(name) not in first_seen:
            first_seen.append(name_key(name))
    assert [i.label for i in identities] == list(range(len(first_seen)))
    assert [name_key(i.name) for i in identities] == first_seen
    assert len({i.slug for i in identities}) == len(identities)
    for identity in identities:
        _check_slug(identity.slug)
        assert identity.slug.startswith(make_slug(identity.name)[:50])
    assert reloaded == identities


# -- label stability ----------------------------------------------------------------------------
def test_labels_and_slugs_survive_removal_and_re_adding(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    registry.add(["Alice Able", "Bob Baker"])
    a = registry.get("Alice Able")
    [removed] = registry.remove(["alice-able"])  # by slug
    assert (removed.label, removed.status) == (a.label, "removed")
    assert removed.removed_at is not None
    assert [i.name for i in registry.list()] == ["Bob Baker"]
    assert registry.labels() == {"bob-baker": 1}

    [(c, _)] = registry.add(["Carol Cole"])
    assert c.label == 2  # never A's freed label
    [(again, changed)] = registry.add(["ALICE ABLE"])
    assert changed and again.active and again.removed_at is None
    assert (again.name, again.slug, again.label) == ("Alice Able", a.slug, 0)

    on_disk = _registry(tmp_path)  # a fresh reader sees the same thing
    assert {i.name: i.label for i in on_disk.list()} == {"Alice Able": 0, "Bob Baker": 1, "Carol Cole": 2}
    assert on_disk.labels() == {"alice-able": 0, "bob-baker": 1, "carol-cole": 2}
    assert on_disk.list() == registry.list()


def test_removed_slugs_stay_reserved(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    registry.add(["Ada"])
    registry.remove(["Ada"])
    [(other, _)] = registry.add(["ADA!"])  # same base slug, different name
    assert (other.slug, other.label) == ("ada-2", 1)
    assert len(registry.list(include_removed=True)) == 2


def test_removing_twice_is_harmless_and_unknown_names_are_errors(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    registry.add(["Ada"])
    assert len(registry.remove(["Ada"])) == 1
    assert registry.remove(["Ada"]) == []
    before = _tree(tmp_path)
    with pytest.raises(NotFoundError, match="Nobody"):
        registry.remove(["Ada", "Nobody"])
    assert _tree(tmp_path) == before
    with pytest.raises(NotFoundError):
        registry.get("Nobody")


def test_remove_on_an_empty_root_leaves_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        _registry(tmp_path).remove(["Nobody"])
    assert list(tmp_path.iterdir()) == []


def test_registry_file_round_trips(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    registry.add(["José Martí", "李小龍", "🙂"])
    registry.remove(["🙂"])
    path = tmp_path / "registry" / "identities.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["format"] == 1
    assert [(i["name"], i["slug"], i["label"], i["status"]) for i in data["identities"]] == [
        ("José Martí", "jose-marti", 0, "active"),
        ("李小龍", "li-xiao-long", 1, "active"),
        ("🙂", make_slug("🙂"), 2, "removed"),
    ]
    assert _registry(tmp_path).list(include_removed=True) == registry.list(include_removed=True)
    before = path.read_bytes()
    registry.add(["José Martí"])  # no change: the file is not rewritten
    assert path.read_bytes() == before


# -- failures write nothing ---------------------------------------------------------------------
MALFORMED = {
    "not json": b"{not json",
    "empty": b"",
    "wrong shape": b'{"format": 1, "identities": {"a": 1}}',
    "bad slug": json.dumps(
        {"format": 1, "identities": [{"name": "Ada", "slug": "../x", "label": 0}]}
    ).encode(),
    "duplicate labels": json.dumps(
        {
            "format": 1,
            "identities": [
                {"name": "Ada", "slug": "ada", "label": 0},
                {"name": "Bob", "slug": "bob", "label": 0},
            ],
        }
    ).encode(),
    "unknown format": b'{"format": 2, "identities": []}',
}


@pytest.mark.parametrize("content", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_registry_is_reported_and_never_overwritten(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "registry" / "identities.json"
    path.parent.mkdir()
    path.write_bytes(content)
    before = _tree(tmp_path)
    registry = _registry(tmp_path)
    with pytest.raises(ManifestError, match="malformed identity registry"):
        registry.list()
    with pytest.raises(ManifestError):
        registry.add(["Carol"])
    with pytest.raises(ManifestError):
        registry.remove(["Ada"])
    assert _tree(tmp_path) == before


def test_one_invalid_name_fails_the_whole_add(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    with pytest.raises(InvalidIdentityError):
        registry.add(["Ada", "   ", "Bob"])
    assert list(tmp_path.iterdir()) == []  # nothing created, not even the registry folder

    registry.add(["Ada"])
    before = _tree(tmp_path)
    with pytest.raises(InvalidIdentityError):
        registry.add(["Bob", "Eve\x00", "Carol"])
    assert _tree(tmp_path) == before
    assert [i.name for i in registry.list()] == ["Ada"]


def test_an_unwritable_root_is_a_storage_error(tmp_path: Path) -> None:
    from facescale.errors import StorageError

    (tmp_path / "afile").write_text("x")
    with pytest.raises(StorageError, match="cannot access"):
        _registry(tmp_path / "afile" / "data").add(["Ada"])
    assert (tmp_path / "afile").read_text() == "x"


# -- concurrency --------------------------------------------------------------------------------
def _add_one_by_one(root: str, prefix: str, start: Barrier) -> None:
    registry = _registry(root)
    start.wait()
    for n in range(20):
        registry.add([f"{prefix} {n}"])


def test_concurrent_adds_from_two_processes_are_serialised(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(2)
    procs = [ctx.Process(target=_add_one_by_one, args=(str(tmp_path), p, start)) for p in ("Left", "Right")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    identities = _registry(tmp_path).list()
    assert len(identities) == 40
    assert sorted(i.label for i in identities) == list(range(40))
    assert len({i.slug for i in identities}) == 40
    for prefix in ("Left", "Right"):  # each process's own adds keep their order
        labels = [i.label for i in identities if i.name.startswith(prefix)]
        assert labels == sorted(labels) and len(labels) == 20
