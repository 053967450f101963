"""The rules the code keeps, checked by their own tools: the layers (import-linter contracts in
pyproject.toml) and that every distribution the code imports is declared (deptry)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_the_layers_hold_as_the_import_linter_contracts_say():
    result = subprocess.run([str(BIN / "lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_every_distribution_the_code_imports_is_declared():
    result = subprocess.run([str(BIN / "deptry"), "memory", "projections"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
