"""The whole REST API, property-based, from its own OpenAPI schema (schemathesis, in process over ASGI).

Every operation under /api/v1 gets its documented examples, schemathesis' coverage cases and a bounded number of
generated requests, valid and invalid, with the bearer token (so writes are exercised too). Whatever comes in,
the server never answers 5xx, and its answers match the schema it publishes: status codes, media types, bodies.

The store is a real one (jobs run by a worker, artifacts on disk), on SQLite and on PostgreSQL, where NUL bytes
and integers beyond 32 bits are refused by the database itself. The worker is stopped before the run, so
batches submitted by it stay queued: nothing heavy is trained while requests are generated.
"""

from __future__ import annotations

from typing import cast

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from scheduler.control import ControlPlane
from scheduler.web.app import create_app
from tests.api.conftest import AUTH, TOKEN, Farm

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

# The schema as the API publishes it (an app over no store serves it, to those with the token); the requests go to
# each farm's app.
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(cast(ControlPlane, None), TOKEN),
                                        headers=AUTH).include(path_regex=r"^/api/v1/")


@pytest.mark.timeout(300)
@schema.parametrize()
@settings(max_examples=30, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_api_conforms_to_its_schema(case: schemathesis.Case, idle_farm: Farm) -> None:
    case.call_and_validate(headers=AUTH, checks=CHECKS, app=idle_farm.app)
