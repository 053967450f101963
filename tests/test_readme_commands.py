"""Every shell command the README shows runs as written against a real server: the first account, a
named token for Claude Code (whose own `claude mcp list` then says it is connected), Codex's config,
and curl on REST. Only the README's port and `.venv/bin/` are pointed at this test's server and venv."""

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from memory.server.process import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = ROOT / "tests" / "clients" / "node_modules" / ".bin"
README_URL = "http://127.0.0.1:8000"
PASSWORD = "correct horse battery staple"


def _shell_blocks() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    # `make serve` and `make test` are what CI itself runs on a fresh clone (.ci/run).
    return [block for block in blocks if not block.lstrip().startswith("make ")]


def test_every_shell_command_in_the_readme_runs_as_written(tmp_path):
    assert (CLIENTS / "claude").exists() and (CLIENTS / "codex").exists(), "run `make client-deps` first"
    blocks = _shell_blocks()
    script = "\n".join(blocks)
    for command in ("memory user add", "memory token", "claude mcp add", "codex mcp add", "curl"):
        assert command in script, f"the README no longer shows {command!r}"
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "PATH": f"{CLIENTS}{os.pathsep}{os.environ['PATH']}"}
    with ServerProcess(tmp_path / "data") as server:
        script = script.replace(".venv/bin/", f"{Path(sys.executable).parent}/").replace(README_URL, server.url)
        ran = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, input=f"{PASSWORD}\n",
                             capture_output=True, text=True, timeout=240)
        assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
        assert "I take my coffee black" in ran.stdout, "curl stored the memory over REST"

        health = subprocess.run(["claude", "mcp", "list"], cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=120)
        assert f"memory: {server.mcp_url} (HTTP) - ✔ Connected" in health.stdout, health.stdout + health.stderr

    codex = tomllib.loads((home / ".codex" / "config.toml").read_text())["mcp_servers"]["memory"]
    assert codex == {"url": server.mcp_url, "bearer_token_env_var": "MEMORY_TOKEN"}
