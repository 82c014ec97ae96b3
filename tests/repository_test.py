"""The repository itself: no file that git tracks carries an unresolved merge (conflict markers at a line start)."""

import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = re.compile(rb"^(<{7} |>{7} |={7}$)", re.MULTILINE)


@pytest.mark.skipif(shutil.which("git") is None or not os.path.isdir(os.path.join(ROOT, ".git")),
                    reason="needs a git checkout")
def test_no_tracked_file_holds_conflict_markers():
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    found = []
    for name in filter(None, tracked.decode().split("\0")):
        path = os.path.join(ROOT, name)
        if os.path.isfile(path) and not name.endswith((".gz", ".png", ".ipynb", ".model", ".safetensors")):
            with open(path, "rb") as f:
                if MARKER.search(f.read()):
                    found.append(name)
    assert not found, f"unresolved merge conflicts in {found}"
