"""Reading the JSON records a store keeps (run records, chunk records, manifests, the registry,
the exclusion list, model records): one parser, one error message shape.

A record that is not UTF-8, not JSON or not of its model is a `ManifestError` naming what it
is, where it lives (as a user would type it), and the first problem: ``malformed manifest
s3://bucket/datasets/v1/manifest.json: identities.0.label: Input should be a valid integer``.
"""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from facescale.errors import ManifestError

from .fs import Location

Record = TypeVar("Record", bound=BaseModel)


def parse_record(model: type[Record], data: bytes, what: str, where: str) -> Record:
    """``data`` as a ``model``, or a `ManifestError` "malformed <what> <where>: <problem>"."""
    try:
        return model.model_validate(json.loads(data))
    except UnicodeDecodeError as exc:
        raise ManifestError(f"malformed {what} {where}: not JSON (not UTF-8 text)") from exc
    except json.JSONDecodeError as exc:
        raise ManifestError(f"malformed {what} {where}: not JSON ({exc.msg}, line {exc.lineno})") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise ManifestError(f"malformed {what} {where}: {loc}: {first['msg']}") from exc


def read_document(location: Location, path: str, model: type[Record], what: str) -> Record:
    """The one-file document at ``path`` (the registry, the exclusion list) as ``model``; ``model()`` when absent."""
    if not location.exists(path):
        return model()
    return parse_record(model, location.read_bytes(path), what, location.display(path))
