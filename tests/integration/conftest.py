import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from harness import Harness  # noqa: E402


@pytest.fixture
def h(tmp_path):
    """A harness whose processes are all stopped at the end of the test."""
    harness = Harness(tmp_path)
    try:
        yield harness
    finally:
        harness.cleanup()
    # Every keydrift process has exited: a sanitizer build reports leaks,
    # invalid accesses and undefined behaviour in its log. Any is a failure.
    reports = harness.sanitizer_reports()
    assert not reports, "\n\n".join(reports)
