"""Face detection and cropping: policy, crops, quality gates, reason codes, the Ray transform.

Real photos come from lfw-dev (``lfw_dev`` fixture); scenes, pairs and face-free pictures
are synthesised with the demo web's renderer (facescale.demoweb.scenes), so every true face
box is known. Everything but the last test runs without Ray.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pytest

from facescale.demoweb import scenes
from facescale.errors import ConfigError
from facescale.pipeline.faces import (
    OUTPUT_SCHEMA,
    REASONS,
    CropParams,
    CropResult,
    FaceCropper,
    crop_face,
    crop_square,
    decode,
    find_faces,
    load_cascade,
    quality,
)

Box = tuple[int, int, int, int]
PARAMS = CropParams()


def iou(a: Box, b: Box) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def encode(image: np.ndarray, quality: int = 95) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return data.tobytes()


def jpeg_image(result: CropResult) -> np.ndarray:
    assert result.image is not None
    image = cv2.imdecode(np.frombuffer(result.image, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


@pytest.fixture(scope="module")
def photos(lfw_dev: Path) -> list[bytes]:
    """Twelve real photos: the first photo of every 60th person, in name order."""
    folders = sorted(d for d in lfw_dev.iterdir() if d.is_dir())
    return [sorted(f.glob("*.jpg"))[0].read_bytes() for f in folders[::60][:12]]


@pytest.fixture(scope="module")
def demo_scenes(photos: list[bytes]) -> list[tuple[bytes, Box]]:
    """Each photo shrunk into a 640x480-800x600 scene (faces of about 55-95 px), with its true box."""
    out = []
    for variant, photo in enumerate(photos):
        size = scenes.image_size(photo)
        layout = scenes.scene_layout(variant, size)
        truth = scenes.map_box(scenes.face_box(size), layout.scale, layout.x, layout.y)
        out.append((scenes.render_scene(photo, variant), truth))
    return out


def _pair(first: bytes, second: bytes) -> tuple[bytes, list[Box]]:
    layout = scenes.pair_layout(scenes.image_size(first), scenes.image_size(second))
    boxes = [
        scenes.map_box(scenes.face_box(scenes.image_size(data)), 1.0, *corner)
        for data, corner in ((first, layout.first), (second, layout.second))
    ]
    return scenes.render_pair(first, second), boxes


def _shrunk(photo: bytes, scale: float) -> bytes:
    image = decode(photo)
    assert image is not None
    return encode(cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))


# -- parameters and reason codes --------------------------------------------------------------


def test_defaults_are_valid_and_serialisable() -> None:
    assert CropParams(**PARAMS.to_dict()) == PARAMS
    assert PARAMS.crop_size >= 96  # the training input


@pytest.mark.parametrize(
    "change",
    [
        {"scale_factor": 1.0},
        {"coarse_scale_factor": 0.9},
        {"min_neighbors": 0},
        {"min_face_fraction": 1.5},
        {"dominance": 0.5},
        {"crop_size": 8},
        {"jpeg_quality": 0},
        {"min_brightness": 200, "max_brightness": 100},
        {"detect_max_side": 10},
        {"tight_pad": -1},
    ],
)
def test_invalid_params_are_config_errors(change: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="invalid crop parameters"):
        dataclasses.replace(PARAMS, **change)


def test_unknown_cascade_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cannot load the Haar cascade"):
        load_cascade("no-such-cascade.xml")


def test_reason_codes_are_documented() -> None:
    assert set(REASONS) == {
        "undecodable",
        "no_face",
        "face_too_small",
        "multiple_faces",
        "underexposed",
        "overexposed",
        "low_contrast",
        "blurry",
    }
    assert all(text and "\n" not in text for text in REASONS.values())


# -- real photos, scenes, pairs, no face ------------------------------------------------------


def test_lfw_photos_give_centred_square_crops(photos: list[bytes]) -> None:
    true_box = scenes.face_box((250, 250))
    accepted = 0
    for photo in photos:
        result = crop_face(photo, PARAMS)
        if result.error == "multiple_faces":  # a real second face, over 1/2.5 of the area (one here)
            assert result.faces >= 2
            continue
        accepted += 1
        assert result.ok, result
        assert result.faces >= 1
        assert (result.width, result.height) == (128, 128)
        assert jpeg_image(result).shape == (128, 128, 3)
        assert result.face_box is not None and iou(result.face_box, true_box) >= 0.5
        assert result.sharpness is not None and result.sharpness >= PARAMS.min_sharpness
        assert result.brightness is not None
        assert PARAMS.min_brightness <= result.brightness <= PARAMS.max_brightness
        assert result.contrast is not None and result.contrast >= PARAMS.min_contrast
    assert accepted >= len(photos) - 1


def test_small_faces_in_large_scenes_are_found(demo_scenes: list[tuple[bytes, Box]]) -> None:
    cascade, proposer = load_cascade(PARAMS.cascade), load_cascade(PARAMS.proposal_cascade)
    accepted = 0
    for data, truth in demo_scenes:
        image = decode(data)
        assert image is not None
        found = find_faces(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), PARAMS, cascade, proposer)
        assert any(iou(face.box, truth) >= 0.5 for face in found), (truth, found)
        result = crop_face(data, PARAMS)
        if result.ok:
            accepted += 1
            assert result.face_box is not None and iou(result.face_box, truth) >= 0.5
            assert jpeg_image(result).shape == (128, 128, 3)
        else:  # a background false positive as large as the face: ambiguous, so rejected
            assert result.error == "multiple_faces"
    assert accepted >= len(demo_scenes) - 2


def test_two_faces_of_similar_size_are_rejected(photos: list[bytes]) -> None:
    for first, second in zip(photos[0:6:2], photos[1:6:2], strict=True):
        data, _ = _pair(first, second)
        result = crop_face(data, PARAMS)
        assert result.error == "multiple_faces"
        assert result.image is None and result.face_box is None and result.faces >= 2


def test_a_clearly_dominant_face_is_kept(photos: list[bytes]) -> None:
    # Half the side -> a quarter of the area: 4x >= dominance 2.5.
    data, (big, _small) = _pair(photos[0], _shrunk(photos[1], 0.5))
    result = crop_face(data, PARAMS)
    assert result.ok and result.faces >= 2  # both faces (a stray third box may join them)
    assert result.face_box is not None and iou(result.face_box, big) >= 0.5
    # ...but not when the rule asks for more than 4x.
    assert crop_face(data, dataclasses.replace(PARAMS, dominance=5.0)).error == "multiple_faces"


def test_face_free_pictures_have_no_face() -> None:
    for variant in range(8):
        result = crop_face(scenes.render_noface(variant), PARAMS)
        assert result == CropResult("no_face")


def test_faces_below_the_minimum_are_too_small(photos: list[bytes]) -> None:
    params = dataclasses.replace(PARAMS, min_face_px=200, detect_max_side=250)
    result = crop_face(photos[0], params)
    assert result.error == "face_too_small"
    assert result.face_box is not None and result.face_box[2] < 200 and result.image is None


def test_tight_face_crops_are_found_by_the_padded_retry(photos: list[bytes]) -> None:
    x, y, w, h = scenes.face_box((250, 250))
    side = round(w * 0.8)  # tighter than the cascade's own box: no context left around the face
    x0, y0 = x + (w - side) // 2, y + (h - side) // 2
    tight = []
    for photo in photos[:6]:
        image = decode(photo)
        assert image is not None
        tight.append(encode(image[y0 : y0 + side, x0 : x0 + side]))
    without_retry = dataclasses.replace(PARAMS, tight_pad=0.0)
    assert sum(crop_face(data, without_retry).error == "no_face" for data in tight) >= 3
    found = [r for r in (crop_face(data, PARAMS) for data in tight) if r.face_box is not None]
    assert len(found) >= 5
    for result in found:
        assert result.face_box is not None
        fx, fy, fw, fh = result.face_box
        assert fx >= 0 and fy >= 0 and fx + fw <= side and fy + fh <= side  # clipped to the image
        assert fw >= side // 2


# -- bad input and quality gates --------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [None, b"", b"\x00" * 100, b"<html><body>not an image</body></html>", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40],
)
def test_undecodable_input_is_a_reason_not_an_exception(data: bytes | None) -> None:
    assert crop_face(data, PARAMS) == CropResult("undecodable")


def test_truncated_jpeg_is_undecodable(photos: list[bytes]) -> None:
    data = photos[0]
    assert crop_face(data[: len(data) // 2], PARAMS).error == "undecodable"


def test_dark_copy_is_underexposed(photos: list[bytes]) -> None:
    image = decode(photos[2])
    assert image is not None
    result = crop_face(encode((image * 0.25).astype(np.uint8)), PARAMS)  # still a face to the cascade
    assert result.error == "underexposed"
    assert result.brightness is not None and result.brightness < PARAMS.min_brightness
    assert result.face_box is not None and result.image is None


def test_blurred_copy_is_blurry(photos: list[bytes]) -> None:
    image = decode(photos[0])
    assert image is not None
    result = crop_face(encode(cv2.GaussianBlur(image, (0, 0), 4)), PARAMS)
    assert result.error == "blurry"
    assert result.sharpness is not None and result.sharpness < PARAMS.min_sharpness
    sharp = crop_face(photos[0], PARAMS)
    assert sharp.sharpness is not None and sharp.sharpness > 3 * result.sharpness


def test_bright_and_flat_copies_fail_their_gates(photos: list[bytes]) -> None:
    image = decode(photos[1])
    assert image is not None
    bright = crop_face(encode(np.clip(image.astype(np.int16) + 150, 0, 255).astype(np.uint8)), PARAMS)
    assert bright.error in ("overexposed", "no_face")  # the cascade may not see a washed-out face
    gated = dataclasses.replace(PARAMS, max_brightness=60.0)
    assert crop_face(photos[1], gated).error == "overexposed"
    assert crop_face(photos[1], dataclasses.replace(PARAMS, min_contrast=250.0)).error == "low_contrast"


def test_gates_run_in_documented_order(photos: list[bytes]) -> None:
    strict = dataclasses.replace(
        PARAMS, min_brightness=250.0, max_brightness=255.0, min_contrast=250.0, min_sharpness=1e9
    )
    assert crop_face(photos[0], strict).error == "underexposed"
    assert crop_face(photos[0], dataclasses.replace(strict, min_brightness=0.0)).error == "low_contrast"


# -- crop geometry and metrics ----------------------------------------------------------------


def test_crop_square_replicates_edges_past_the_border() -> None:
    image = np.zeros((100, 100, 3), np.uint8)
    image[:, :50] = (0, 0, 255)  # left half red, right half black
    crop = crop_square(image, (-20, 30, 40, 40), margin=0.25, size=60)  # runs past the left edge
    assert crop.shape == (60, 60, 3)
    assert (crop[:, :10] == (0, 0, 255)).all()  # replicated red, never black
    crop = crop_square(image, (70, 70, 40, 40), margin=0.5, size=32)  # past the bottom-right corner
    assert crop.shape == (32, 32, 3)
    assert (crop[-1, -1] == image[-1, -1]).all()


def test_crop_is_centred_on_the_face_with_the_margin() -> None:
    image = np.zeros((200, 200), np.uint8)
    image[80:120, 80:120] = 255  # a 40 px "face"
    crop = crop_square(image, (80, 80, 40, 40), margin=0.25, size=60)  # 60 px square around it
    assert crop.shape == (60, 60)
    assert crop[10:50, 10:50].min() == 255 and crop[:10].max() == 0 and crop[50:].max() == 0


def test_quality_metrics() -> None:
    flat = np.full((64, 64), 120, np.uint8)
    assert quality(flat) == (0.0, 120.0, 0.0)
    checker = (np.indices((64, 64)).sum(axis=0) % 2 * 255).astype(np.uint8)
    sharpness, brightness, contrast = quality(cv2.cvtColor(checker, cv2.COLOR_GRAY2BGR))
    assert sharpness > 1e5 and brightness == pytest.approx(127.5, abs=0.6) and contrast == pytest.approx(127.5, abs=1)


# -- determinism ------------------------------------------------------------------------------


@pytest.fixture
def _restore_threads() -> Iterator[None]:
    threads = cv2.getNumThreads()
    yield
    cv2.setNumThreads(threads)


@pytest.mark.usefixtures("_restore_threads")
def test_results_are_deterministic(photos: list[bytes], demo_scenes: list[tuple[bytes, Box]]) -> None:
    inputs = photos[:3] + [data for data, _ in demo_scenes[:5]]
    first = [crop_face(d, PARAMS) for d in inputs]
    assert [crop_face(d, PARAMS) for d in inputs] == first
    # OpenCV hands back hits in an order that depends on its threads: results must not.
    cv2.setNumThreads(1)
    assert [crop_face(d, PARAMS) for d in inputs] == first
    cv2.setNumThreads(2)
    assert [crop_face(d, PARAMS) for d in inputs] == first
    assert [
        crop_face(d, PARAMS, load_cascade(), proposer=load_cascade(PARAMS.proposal_cascade)) for d in inputs
    ] == first


# -- FaceCropper without Ray ------------------------------------------------------------------


@pytest.mark.usefixtures("_restore_threads")
def test_face_cropper_numpy_batch(photos: list[bytes]) -> None:
    cropper = FaceCropper(PARAMS)
    assert cv2.getNumThreads() == 1
    images = np.empty(3, dtype=object)
    images[:] = [photos[0], None, scenes.render_noface(0)]
    out = cropper({"image": images, "id": np.arange(3)})
    assert list(out["id"]) == [0, 1, 2] and out["image"] is images  # the input columns stay
    assert list(out["crop_error"]) == [None, "undecodable", "no_face"]
    assert isinstance(out["crop"][0], bytes) and out["crop"][1] is None
    assert out["face_box"][0] == dict(zip("xywh", crop_face(photos[0], PARAMS).face_box or (), strict=True))
    assert out["face_box"][2] is None
    assert out["sharpness"].dtype == np.float32 and np.isnan(out["sharpness"][1])
    assert out["faces"].dtype == np.int32 and list(out["faces"]) == [1, 0, 0]


@pytest.mark.usefixtures("_restore_threads")
def test_face_cropper_arrow_batch_has_the_exact_schema(photos: list[bytes]) -> None:
    cropper = FaceCropper(PARAMS)
    table = pa.table({"id": [0, 1], "image": pa.array([b"junk", b"more junk"], pa.binary())})
    out = cropper(table)
    assert out.column_names == ["id", "image", *OUTPUT_SCHEMA.names]
    assert out.select(OUTPUT_SCHEMA.names).schema.equals(OUTPUT_SCHEMA)  # typed even when all null
    assert out.column("crop_error").to_pylist() == ["undecodable", "undecodable"]
    out = cropper(pa.table({"image": pa.array([photos[0]], pa.binary())}))
    row = out.to_pylist()[0]
    expected = crop_face(photos[0], PARAMS)
    assert row["crop"] == expected.image and row["crop_error"] is None
    assert row["face_box"] == dict(zip("xywh", expected.face_box or (), strict=True))
    assert row["sharpness"] == pytest.approx(expected.sharpness, rel=1e-6)


# -- Ray --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.mark.ray
@pytest.mark.usefixtures("ray_cluster")
@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")  # Ray's own DataContext fields
def test_face_cropper_on_ray_data(photos: list[bytes], demo_scenes: list[tuple[bytes, Box]]) -> None:
    import ray

    first, second = photos[2], photos[3]
    inputs = [photos[0], photos[1], demo_scenes[0][0], scenes.render_noface(1), _pair(first, second)[0], b"corrupt"]
    items = [{"id": i, "image": data} for i, data in enumerate(inputs)]
    expected = [crop_face(data, PARAMS) for data in inputs]

    ds = ray.data.from_items(items).map_batches(
        FaceCropper,
        fn_constructor_args=(PARAMS,),
        compute=ray.data.ActorPoolStrategy(size=1),  # Ray >= 2.51 spelling of concurrency=1
        batch_size=8,
    )
    rows = sorted(ds.take_all(), key=lambda r: r["id"])  # never assume output order
    assert [r["crop_error"] for r in rows] == [e.error for e in expected]
    assert [r["crop_error"] for r in rows] == [None, None, None, "no_face", "multiple_faces", "undecodable"]
    for row, want in zip(rows, expected, strict=True):
        assert row["crop"] == want.image
        box = row["face_box"]
        assert (None if box is None else (box["x"], box["y"], box["w"], box["h"])) == want.face_box
        assert row["faces"] == want.faces
        assert row["image"] == inputs[row["id"]]

    typed = ray.data.from_items(items).map_batches(
        FaceCropper,
        fn_constructor_args=(PARAMS,),
        compute=ray.data.ActorPoolStrategy(size=1),
        batch_size=8,
        batch_format="pyarrow",
    )
    schema = typed.schema()
    assert schema is not None
    assert dict(zip(schema.names, schema.types, strict=True))["face_box"] == OUTPUT_SCHEMA.field("face_box").type
