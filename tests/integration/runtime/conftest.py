"""Fixtures of the runtime tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A scratch folder the unprivileged user PostgreSQL runs as (when the tests run as root) can
    reach, as it can /tmp: pytest's own tmp_path is 0700, and a server whose data folder is inside
    it never starts. Removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="crowdpulse-test-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
