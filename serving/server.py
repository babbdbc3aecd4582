"""`facescale serve`: the API under uvicorn, following the registry from the served model on."""

from __future__ import annotations

import logging

import uvicorn

from facescale.config import ServingSettings
from facescale.serving.api import create_app
from facescale.serving.loading import ModelWatcher, load_recognizer
from facescale.serving.recognizer import Recognizer
from facescale.storage import DatasetStore, ModelRegistry

log = logging.getLogger(__name__)


def watcher_for(registry: ModelRegistry, store: DatasetStore, settings: ServingSettings) -> ModelWatcher:
    """A `ModelWatcher` over the registry: a fixed model id, or the newest registered one for ``latest``."""

    def latest_id() -> str | None:
        if settings.model != "latest":
            return settings.model
        newest = registry.latest()
        return newest.model_id if newest is not None else None

    def load(ref: str) -> Recognizer:
        recognizer = load_recognizer(registry, store, settings, ref)
        recognizer.warm()
        recognizer.batch_requests(settings.max_batch)
        return recognizer

    def revision(ref: str) -> str:  # an erasure rewrites a model's labels and galleries in place
        return ",".join(registry.get(ref).notes.get("erasures", []))

    return ModelWatcher(load, latest_id, settings.reload_interval_s, revision)


def run(registry: ModelRegistry, store: DatasetStore, settings: ServingSettings) -> None:
    """Serve until interrupted (prints the address; port 0 picks a free one)."""
    app = create_app(settings, watcher_for(registry, store, settings))
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info", workers=settings.workers)
    uvicorn.Server(config).run()
