"""The recognizer: faces found and cropped as the dataset's were, identified by either backend, and verified."""

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
    matches = recognizer.identify(_side_by_side(left, right), top_k=3, backend="model")
    assert len(matches) == 2
    lefts = sorted(m.box[0] for m in matches)
    assert lefts[0] < 250 <= lefts[1]  # one face in each half
    for match in matches:
        confidences = [c.confidence for c in match.candidates]
        assert len(confidences) == 3 and confidences == sorted(confidences, reverse=True)
        assert 0 < match.confidence == confidences[0] <= 1
        known = match.confidence >= recognizer.unknown_threshold("model")
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


# -- the gallery backend and the default ---------------------------------------------------------------
HELD_APART = {"Colin_Powell": (30, 40, 50, 60), "Tony_Blair": (30, 40, 50, 60),
              "Donald_Rumsfeld": (30, 40, 50, 60), "Jacques_Chirac": (20, 25, 30, 35)}
STRANGERS = ("Hans_Blix", "Naomi_Watts", "Kofi_Annan", "Amelie_Mauresmo", "Jennifer_Aniston", "Vladimir_Putin")


def test_the_gallery_names_held_apart_photos_of_enrolled_people(recognizer, lfw_dev: Path) -> None:
    """The dlib gallery (6 enrolled training photos a person) on photos the version never held."""
    assert recognizer.default_backend == "dlib"  # the untrained Inception V3 measured worse on val
    answers = []
    for person, indexes in HELD_APART.items():
        for index in indexes:
            match = _centre(recognizer.identify(_photo(lfw_dev, person, index)))
            assert match.backend == "dlib" and match.threshold == recognizer.unknown_threshold("dlib")
            answers.append(match.identity == person.replace("_", " "))
    assert sum(answers) >= len(answers) - 1, answers  # 16 photos: at most one unknown or wrong


def test_the_gallery_says_unknown_for_strangers(recognizer, lfw_dev: Path) -> None:
    """People nobody enrolled fall under the unknown threshold chosen on val (leave-one-identity-out)."""
    matches = [_centre(recognizer.identify(_photo(lfw_dev, person, i))) for person in STRANGERS for i in (0, 1)]
    unknown = [m.identity is None for m in matches]
    assert sum(unknown) >= len(unknown) - 1, [(m.identity, m.confidence) for m in matches]
    # The softmax of the same (untrained) model names someone for most of them: the default matters.
    ours = [_centre(recognizer.identify(_photo(lfw_dev, person, 0), backend="model")) for person in STRANGERS]
    assert all(m.backend == "model" for m in ours)


def _centre(matches):
    """The face LFW frames: the one nearest the 250x250 photo's centre (some show a second face at the edge)."""
    assert matches
    return min(matches, key=lambda m: abs(m.box[0] + m.box[2] / 2 - 125) + abs(m.box[1] + m.box[3] / 2 - 125))


def test_gallery_scores_are_the_nearest_enrolled_photo() -> None:
    from facescale.serving.calibration import Gallery

    gallery = Gallery(np.array([1, 0, 1]), np.eye(3, dtype=np.float32))
    scores = gallery.identity_scores(np.array([[0.0, 0.6, 0.8], [1.0, 0.0, 0.0]], np.float32), classes=3)
    np.testing.assert_allclose(scores[:, :2], [[0.6, 0.8], [0.0, 1.0]])
    assert np.isneginf(scores[:, 2]).all()  # label 2 has nobody enrolled


def test_a_second_detector_pass_finds_what_the_haar_pass_missed(recognizer, lfw_dev: Path) -> None:
    """lfw-dev photos whose face the cascade misses (bench/bench_detect.py lists them): dlib's HOG pass finds
    it, near the centre where LFW frames it, and the crop embeds close to the person's other photos."""
    from facescale.serving.recognizer import hog_to_haar, second_pass_faces

    path = lfw_dev / "Vladimir_Putin" / "Vladimir_Putin_0040.jpg"
    image = load_image(path.read_bytes(), LIMITS)
    assert recognizer.faces.detect(image, second_pass=False) == []
    boxes = recognizer.detect(image)
    assert boxes and len(boxes) == len(second_pass_faces(image))  # the HOG pass's faces (clipped to the photo)
    box = min(boxes, key=lambda b: abs(b[0] + b[2] / 2 - 125) + abs(b[1] + b[3] / 2 - 125))
    centre = (box[0] + box[2] / 2, box[1] + box[3] / 2)
    assert abs(centre[0] - 125) < 30 and abs(centre[1] - 125) < 40 and 70 < box[2] < 180
    crop = recognizer.crop(image, box)
    others = [recognizer.crop(im, recognizer.faces.centre_face(im))
              for im in (_photo(lfw_dev, "Vladimir_Putin", i) for i in (1, 2, 3))]
    vectors = recognizer.embed([crop, *others], "dlib")
    assert (vectors[1:] @ vectors[0]).min() > recognizer.threshold("dlib", "pair")
    # The mapping moves a HOG box onto the cascade's convention: bigger, centre higher.
    _, y, w, h = hog_to_haar((100, 100, 80, 80))
    assert w == h > 80 and y + h / 2 < 140
