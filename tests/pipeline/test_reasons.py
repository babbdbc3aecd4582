"""One enum of curation's reason codes: every step's codes are in it, each with a one-line meaning."""

from __future__ import annotations

from facescale.pipeline import cleaning, dedup, faces
from facescale.pipeline.reasons import CLEANING_REASONS, CROP_REASONS, DEDUP_REASONS, MEANING, SHEET_REASONS, Reason


def test_every_reason_has_a_one_line_meaning_and_every_step_draws_from_the_enum() -> None:
    assert set(MEANING) == set(Reason)
    assert all(text and "\n" not in text for text in MEANING.values())
    assert set(faces.REASONS) == set(CROP_REASONS) and set(dedup.REASONS) == set(DEDUP_REASONS)
    assert set(cleaning.REASONS) == set(CLEANING_REASONS)
    assert set(cleaning.SHEET_REASONS) == set(SHEET_REASONS)
    assert Reason.WAITING in cleaning.SHEET_REASONS and Reason.NO_FACE not in cleaning.SHEET_REASONS


def test_a_code_reads_as_its_text() -> None:
    """Rows, notes and JSON hold the plain text; the text finds its meaning."""
    import json

    assert json.dumps({"reason": Reason.WRONG_PERSON}) == '{"reason": "wrong_person"}'
    assert cleaning.SHEET_REASONS["near_duplicate"] == MEANING[Reason.NEAR_DUPLICATE]
    assert faces.crop_face(b"", faces.CropParams()).error == "undecodable"
