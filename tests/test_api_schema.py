"""Schemathesis against the server's own OpenAPI schema: generated requests, valid and invalid, never
get a 5xx, and every answer (status, content type, headers, body) matches what the schema documents."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings

from digitrec import load_recognizer
from digitrec.serving.server import ServerConfig, create_app

# The shipped model through ONNX Runtime: loading it takes well under a second, so at collection is fine.
app = create_app(load_recognizer(), ServerConfig(max_upload_bytes=200_000, ui=False))
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case) -> None:
    # Every check but one: the schema says "a binary file", and most random bytes are not an image,
    # so a schema-valid upload may rightly get 415 or 422.
    case.call_and_validate(excluded_checks=[schemathesis.checks.positive_data_acceptance])
