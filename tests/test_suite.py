"""The suite's own arrangement: run side by side (``make test``: pytest-xdist, ``--dist loadgroup``), the tests of a
module share a worker, so its module-scoped fixtures (a populated farm, a served dashboard) are made once and the
chaos tests run one after another (tests/conftest.py groups them). pytest-xdist does that through a suffix on each
test's node id; where it cannot add one (pytest 9 with pytest-xdist 3.8), every test goes to any worker."""

from __future__ import annotations

import pytest


def test_side_by_side_the_tests_of_a_module_are_grouped(request: pytest.FixtureRequest) -> None:
    # in a pytest-xdist worker, xdist sets the option loadgroup from --dist
    if getattr(request.config, "workerinput", None) is None or not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not run side by side with --dist loadgroup")
    assert request.node.nodeid.endswith("@tests/test_suite.py"), request.node.nodeid
