"""Issue #17: the README's sample output is what the current code prints (scripts/readme_samples.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_readme_sample_output_matches_the_code():
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "readme_samples.py"), "--check"], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, "README sample output drifted; run python scripts/readme_samples.py\n" + done.stdout[-3000:]
