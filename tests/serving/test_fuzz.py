"""schemathesis fuzzes every API operation from its OpenAPI schema: no 5xx, and answers match the schema.

Positive and negative cases (missing fields, wrong types, out-of-range numbers, random bytes as
images) for each route, checked for server errors, status codes and bodies the schema
declares, content types, and refusals of schema-violating requests.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from facescale.config import ServingSettings
from facescale.serving.api import create_app
from facescale.serving.loading import ModelWatcher

# The schema is read at collection time; the session's model is put in before the first case.
WATCHER = ModelWatcher(lambda ref: None, lambda: None, 3600)  # type: ignore[arg-type, return-value]
APP = create_app(ServingSettings(max_upload_bytes=200_000), WATCHER, start_watcher=False)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(autouse=True)
def _serve_the_session_model(recognizer) -> None:
    WATCHER.current = recognizer


@schema.parametrize()
@settings(max_examples=25, suppress_health_check=list(HealthCheck), deadline=None)
def test_no_server_errors_and_answers_match_the_schema(case: schemathesis.Case) -> None:
    # Every default check but one: a schema can say "binary", not "a decodable photo with a face",
    # so random bytes are schema-valid yet rightly refused (400/413/415/422 with a reason).
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
