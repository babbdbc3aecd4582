"""The recognizer: faces found and cropped as the dataset's were, identified, and verified."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facescale.pipeline.faces import CropParams, crop_face
from facescale.serving.images import ImageLimits, ImageRejected, load_image

LIMITS = ImageLimits()


def _photo(lfw_dev: Path, person: str, index: int) -> np.ndarray:
    return load_image(sorted((lfw_dev / person).glob("*.jpg"))[index].read_bytes(), LIMITS)


def _side_by_side(*images: np.ndarray) -> np.ndarray:
    return np.concatenate(images, axis=1)


def test_a_face_is_cropped_exactly_as_the_dataset_cropped_it(recognizer, lfw_dev: Path) -> None:
    """Same detector, box and crop as curation's `crop_face` (so the model sees what it trained on)."""
    import cv2

    path = sorted((lfw_dev / "Colin_Powell").glob("*.jpg"))[30]
    curated = crop_face(path.read_bytes(), CropParams())
    assert curated.ok
    image = load_image(path.read_bytes(), LIMITS)
    [box] = recognizer.detect(image)
    assert box == curated.face_box
    ours = recognizer.crop(image, box)
    theirs = cv2.imdecode(np.frombuffer(curated.image, np.uint8), cv2.IMREAD_COLOR)
    assert ours.shape == theirs.shape == (128, 128, 3)
    assert np.abs(ours.astype(int) - theirs).mean() < 3  # only JPEG round-off apart


def test_identify_reports_every_face_with_sorted_candidates(recognizer, lfw_dev: Path) -> None:
    left, right = _photo(lfw_dev, "Tony_Blair", 42), _photo(lfw_dev, "Colin_Powell", 40)
    assert len(recognizer.detect(left)) == len(recognizer.detect(right)) == 1
    matches = recognizer.identify(_side_by_side(left, right), top_k=3)
    assert len(matches) == 2
    lefts = sorted(m.box[0] for m in matches)
    assert lefts[0] < 250 <= lefts[1]  # one face in each half
    for match in matches:
        confidences = [c.confidence for c in match.candidates]
        assert len(confidences) == 3 and confidences == sorted(confidences, reverse=True)
        assert 0 < match.confidence == confidences[0] <= 1
        known = match.confidence >= recognizer.unknown_threshold
        assert (match.identity is not None) == known
        if known:
            assert match.identity == match.candidates[0].identity
        doc = match.to_json()
        assert doc["unknown"] == (match.identity is None) and len(doc["candidates"]) == 3


def test_identify_on_a_photo_without_faces_finds_none(recognizer) -> None:
    flat = np.full((240, 320, 3), 128, np.uint8)
    assert recognizer.identify(flat) == []


def test_single_face_refuses_no_face_and_several(recognizer, lfw_dev: Path) -> None:
    with pytest.raises(ImageRejected) as none:
        recognizer.single_face(np.full((240, 320, 3), 128, np.uint8))
    assert (none.value.reason, none.value.status) == ("no_face", 422)
    two = _side_by_side(_photo(lfw_dev, "Tony_Blair", 41), _photo(lfw_dev, "Donald_Rumsfeld", 41))
    with pytest.raises(ImageRejected) as several:
        recognizer.single_face(two, "group photo")
    assert several.value.reason == "several_faces" and "group photo: 2 faces" in str(several.value)
    assert recognizer.single_face(_photo(lfw_dev, "Tony_Blair", 41))  # one face: fine


def test_dlib_verification_tells_people_apart(recognizer, lfw_dev: Path) -> None:
    """With the pretrained backend and its calibrated threshold: same person vs different people."""
    a, b = _photo(lfw_dev, "Colin_Powell", 50), _photo(lfw_dev, "Colin_Powell", 51)
    other = _photo(lfw_dev, "Jacques_Chirac", 30)
    same = recognizer.verify_pair(a, b, "dlib")
    different = recognizer.verify_pair(a, other, "dlib")
    assert same["same"] and not different["same"]
    assert same["similarity"] > different["similarity"]
    assert same["threshold"] == different["threshold"] == recognizer.calibration.threshold("dlib", "pair")
    model = recognizer.verify_pair(a, b, "model")
    assert model["backend"] == "model" and -1.0001 <= model["similarity"] <= 1.0001


def test_verify_against_an_enrolled_identity(recognizer, lfw_dev: Path) -> None:
    photo = _photo(lfw_dev, "Tony_Blair", 60)  # not one of the enrolled photos (the first ones)
    yes = recognizer.verify_identity(photo, "Tony Blair", "dlib")
    no = recognizer.verify_identity(photo, "jacques-chirac", "dlib")  # by slug
    assert yes["same"] and not no["same"]
    assert yes["identity"] == "Tony Blair" and yes["enrolled_photos"] == 6
    with pytest.raises(ImageRejected) as unknown:
        recognizer.verify_identity(photo, "Nobody Known", "dlib")
    assert unknown.value.status == 404
