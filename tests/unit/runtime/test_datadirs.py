"""A worker killed with SIGKILL cannot remove its temporary Faust folder; the next worker to
start removes the folders of processes that no longer run, and no other."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from streams.runtime.app import FAUST_DIR_PREFIX, remove_orphaned_datadirs


def test_only_the_folders_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    orphan = tmp_path / f"{FAUST_DIR_PREFIX}{dead.stdout.strip()}-abc"
    mine = tmp_path / f"{FAUST_DIR_PREFIX}{os.getpid()}-def"
    unrelated = tmp_path / f"{FAUST_DIR_PREFIX}nopid"
    for folder in (orphan, mine, unrelated):
        (folder / "tables").mkdir(parents=True)
    assert remove_orphaned_datadirs(tmp_path) == [orphan]
    assert not orphan.exists() and mine.exists() and unrelated.exists()
