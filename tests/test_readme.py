"""The README's promises are tested: the Python guide's snippet runs, and every CLI command is documented."""

import re
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from memory.cli import cli

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def test_the_python_guide_snippet_runs_as_written(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "python.md").read_text(), re.S)
    assert blocks, "docs/python.md lost its Python example"
    for block in blocks:
        result = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, timeout=300,
                                cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]


def test_every_cli_command_is_documented_in_the_readme():
    documented = README.read_text()
    result = CliRunner().invoke(cli, ["--help"])
    commands = re.findall(r"^  (\S+)\s", result.output.split("Commands:")[1], re.M)
    assert commands
    missing = [c for c in commands if f"`memory {c}" not in documented]
    assert not missing, f"undocumented commands: {missing}"


def test_the_readme_shows_the_two_commands_on_its_first_screen():
    first_screen = "\n".join(README.read_text().splitlines()[:25])
    assert "make serve" in first_screen and "make test" in first_screen
