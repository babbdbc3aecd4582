"""Loading registered models for serving, and following the registry.

`load_recognizer` turns a registry reference (an id or ``latest``) into a ready `Recognizer`:
files fetched (or used in place on a local store), the dataset version's crop parameters,
and the calibration stored when the model was registered. Nothing is measured here: a model
registered without one (before calibration moved to registration, or whose version could not
be calibrated) is served uncalibrated, by the ``model`` backend with a 0.5 unknown threshold,
until `facescale calibrate` stores one.
`ModelWatcher` keeps the newest registered model loaded for the API: a background thread
looks at the registry every ``reload_interval_s`` and swaps a newly registered model in once
it is fully loaded, so requests never wait for a load and never see half of one.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from facescale.config import ServingSettings
from facescale.errors import FacescaleError
from facescale.pipeline.faces import CropParams
from facescale.serving.calibration import load_calibration
from facescale.serving.images import ImageLimits
from facescale.serving.recognizer import Recognizer
from facescale.storage import DatasetStore, ModelRegistry

log = logging.getLogger(__name__)


def crop_params(store: DatasetStore, version_id: str) -> CropParams:
    """The crop parameters a dataset version was made with (its manifest's ``config.crop``)."""
    manifest = store.get(version_id)
    stored = manifest.config.get("crop") or {}
    known = {f.name for f in dataclasses.fields(CropParams)}
    return CropParams(**{k: v for k, v in stored.items() if k in known})


def image_limits(settings: ServingSettings) -> ImageLimits:
    return ImageLimits(max_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels)


def load_recognizer(
    registry: ModelRegistry,
    store: DatasetStore,
    settings: ServingSettings,
    ref: str = "latest",
    *,
    before_load: Callable[[], None] | None = None,
    warn_uncalibrated: bool = True,
) -> Recognizer:
    """A registered model, ready to serve (its Keras model is loaded on the ``model`` backend's first use).

    Args:
        registry: the model registry.
        store: the dataset store (the model's version gives the crop parameters).
        settings: the ``serving`` settings.
        ref: a model id or ``latest``.
        before_load: run before the Keras model loads (the CLI imports TensorFlow quietly).
        warn_uncalibrated: log a warning when the model has no calibration (not when loading it to calibrate it).
    """
    record = registry.resolve(ref)
    model_dir = registry.local_dir(record.model_id, Path(settings.cache_dir))
    calibration = load_calibration(model_dir)
    if calibration is None and warn_uncalibrated:
        log.warning(
            "model %s is not calibrated: identify answers with its softmax at 0.5, verify is unavailable "
            "(run `facescale calibrate %s`)", record.model_id, record.model_id,
        )
    return Recognizer.from_dir(
        model_dir, crop_params(store, record.version_id), model_id=record.model_id, calibration=calibration,
        before_load=before_load,
    )


class ModelWatcher:
    """Keeps the newest registered model loaded (see the module doc).

    Args:
        load: loads a model by reference (``load_recognizer`` bound to a store and settings).
        latest_id: the newest registered model's id, or None.
        interval_s: seconds between looks at the registry.
        revision: what changes when a registered model's files change in place (an erasure drops a person
            from its labels and galleries, `storage.erasure`): the served model is loaded again when it does.
    """

    def __init__(
        self,
        load: Callable[[str], Recognizer],
        latest_id: Callable[[], str | None],
        interval_s: float,
        revision: Callable[[str], str] | None = None,
    ) -> None:
        self._load = load
        self._latest_id = latest_id
        self._revision = revision
        self._served_revision = ""
        self.interval_s = interval_s
        self.current: Recognizer | None = None
        self.error: str | None = None
        self.loading: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed: set[str] = set()

    def refresh(self) -> bool:
        """Load the newest model if it is not the one served; True when a new one was swapped in."""
        try:
            newest = self._latest_id()
            revision = self._revision(newest) if self._revision is not None and newest is not None else ""
        except FacescaleError as exc:
            self.error = str(exc)
            return False
        if newest is None or f"{newest}@{revision}" in self._failed:
            return False
        if self.current and self.current.model_id == newest and revision == self._served_revision:
            return False
        self.loading = newest
        try:
            recognizer = self._load(newest)
        except Exception as exc:  # a broken model must not take the server down: keep serving the old one
            log.exception("cannot load model %s; still serving %s", newest, self.current and self.current.model_id)
            self._failed.add(f"{newest}@{revision}")
            self.error = f"model {newest} failed to load: {exc}"
            return False
        finally:
            self.loading = None
        self.current, self.error, self._served_revision = recognizer, None, revision
        log.info("now serving model %s%s", newest, f" (revision {revision})" if revision else "")
        return True

    def start(self) -> None:
        """Look at the registry every ``interval_s`` in a daemon thread (the first look is at once)."""
        def run() -> None:
            while True:
                self.refresh()
                if self._stop.wait(self.interval_s):
                    return

        self._thread = threading.Thread(target=run, name="facescale-model-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
