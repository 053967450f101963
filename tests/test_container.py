"""The container image, checked without a Docker engine: the Dockerfile passes hadolint and has
the shape the project promises, and its install and start steps, run in a fresh virtualenv exactly
as the image runs them, give a server that answers its health check and a tool call."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from memory.server.process import free_port

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"


def instructions(stage: int | None = None) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuations joined; only those of stage N when given."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    parsed = [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]
    if stage is None:
        return parsed
    starts = [i for i, (op, _) in enumerate(parsed) if op == "FROM"] + [len(parsed)]
    return parsed[starts[stage]:starts[stage + 1]]


def only(stage: list[tuple[str, str]], op: str) -> str:
    (found,) = [args for name, args in stage if name == op]
    return found


def image_env() -> dict[str, str]:
    env = {}
    for op, args in instructions(1):
        if op == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(args))
    return env


def test_the_dockerfile_passes_hadolint():
    result = subprocess.run([str(HADOLINT), str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_is_multi_stage_slim_non_root_with_a_data_volume_health_check_and_memory_serve():
    froms = [args for op, args in instructions() if op == "FROM"]
    assert froms == ["python:3.11-slim AS build", "python:3.11-slim"]
    final = instructions(1)
    user = only(final, "USER")
    assert re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", user), f"a numeric non-root user, got {user}"
    assert json.loads(only(final, "VOLUME")) == ["/data"] and only(final, "EXPOSE") == "8000"
    assert "/healthz" in only(final, "HEALTHCHECK")
    assert json.loads(only(final, "ENTRYPOINT")) == ["memory", "serve"]
    env = image_env()
    # Configured through the environment alone, and the model is never fetched at run time.
    assert env["MEMORY_DATA_DIR"] == "/data" and env["MEMORY_PORT"] == "8000" and env["HF_HUB_OFFLINE"] == "1"
    assert only(instructions(0), "RUN").startswith("sh docker/install.sh ")
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "data", ".git", "tests"} <= set(ignored)


def _copy_build_context(target: Path) -> None:
    """What the build stage's COPY lines put in its WORKDIR."""
    for op, args in instructions(0):
        if op == "COPY":
            *sources, dest = shlex.split(args)
            for source in sources:
                where = target / dest
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, where, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    where = where / source if dest.endswith("/") else where
                    where.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(ROOT / source, where)


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except OSError:
        return None


@pytest.mark.slow
@pytest.mark.anyio
async def test_the_image_install_and_start_steps_serve_a_tool_call(tmp_path):
    source, venv = tmp_path / "src", tmp_path / "venv"
    _copy_build_context(source)
    run = only(instructions(0), "RUN").split()
    assert run[:2] == ["sh", "docker/install.sh"]
    # The build step, with the image's /opt/venv moved into tmp (and the pip cache allowed, for speed).
    built = subprocess.run(["sh", "docker/install.sh", str(venv), *run[3:]], cwd=source, timeout=600,
                           env={**os.environ, "PYTHON": sys._base_executable}, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    port = free_port()
    env = {**image_env(), "MEMORY_DATA_DIR": str(tmp_path / "data"), "MEMORY_PORT": str(port),
           "PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    # The final stage's own steps in exec form (deriving the model's int8 form), as the image runs them.
    for step in [json.loads(args) for op, args in instructions(1) if op == "RUN" and args.startswith("[")]:
        done = subprocess.run(step, env=env, executable=str(venv / "bin" / step[0]), capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    entrypoint = json.loads(only(instructions(1), "ENTRYPOINT"))
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(entrypoint, env=env, stdout=log, stderr=subprocess.STDOUT,
                              executable=str(venv / "bin" / entrypoint[0]))
    try:
        deadline = time.monotonic() + 60
        while _status(f"http://127.0.0.1:{port}/healthz") != 200:
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.1)
        healthcheck = json.loads(only(instructions(1), "HEALTHCHECK").split("CMD", 1)[1])
        assert subprocess.run(healthcheck, env=env, timeout=30).returncode == 0
        token = subprocess.run(["memory", "token", "--user", "alice", "--public-url", f"http://127.0.0.1:{port}"],
                               env=env, check=True, capture_output=True, text=True, timeout=60).stdout.strip()
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
            async with Client(streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http)) as client:
                stored = await client.call_tool("store_memory", {"text": "The container remembers this"})
                found = await client.call_tool("retrieve_context", {"query": "what does the container remember?"})
        assert not stored.is_error and not found.is_error
        assert found.structured_content["memories"][0]["id"] == stored.structured_content["id"]
        # The image asks for JSON logs: every line the server wrote parses (INFO lines are there too).
        lines = [json.loads(line) for line in (tmp_path / "server.log").read_text().splitlines() if line.strip()]
        assert any(line.get("tool") == "store_memory" for line in lines)
    finally:
        server.terminate()
        server.wait(15)
        log.close()
