"""Where settings come from: a flag over a MEMORY_* variable over the --config file over the default,
every value checked against its type, and a bad one stops the start with one line naming it."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from memory.server.config import ConfigError, load_settings, render

MEMORY = str(Path(sys.executable).parent / "memory")


def test_a_flag_beats_the_environment_which_beats_the_file_which_beats_the_default(tmp_path):
    config = tmp_path / "memory.toml"
    config.write_text('port = 9001\nhost = "0.0.0.0"\nlog_format = "text"\n')
    loaded = load_settings({"port": 9003}, config_file=config,
                           environ={"MEMORY_PORT": "9002", "MEMORY_HOST": "127.0.0.2"})
    assert loaded.settings.port == 9003 and loaded.sources["port"] == "flag"
    assert loaded.settings.host == "127.0.0.2" and loaded.sources["host"] == "env MEMORY_HOST"
    assert loaded.settings.log_format == "text" and loaded.sources["log_format"] == f"file {config}"
    assert loaded.settings.call_rate_limit_per_minute == 3000 and loaded.sources["call_rate_limit_per_minute"] == "default"


def test_the_config_file_may_also_come_from_memory_config(tmp_path):
    config = tmp_path / "memory.toml"
    config.write_text('public_url = "https://mem.example.com"\n')
    loaded = load_settings(environ={"MEMORY_CONFIG": str(config)})
    assert loaded.settings.resource_url == "https://mem.example.com/mcp"


def test_environment_strings_become_typed_values_and_lists_split_on_commas():
    loaded = load_settings(environ={"MEMORY_CORS_ORIGINS": "https://a.example, https://b.example",
                                    "MEMORY_ALLOW_LOOPBACK_CLIENT_METADATA": "true",
                                    "MEMORY_FORWARDED_ALLOW_IPS": "10.0.0.1",
                                    "MEMORY_MAX_BODY_BYTES": "65536"})
    settings = loaded.settings
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.allow_loopback_client_metadata is True
    assert settings.forwarded_allow_ips == ["10.0.0.1"] and settings.max_body_bytes == 65536


@pytest.mark.parametrize(("environ", "message"), [
    ({"MEMORY_PORT": "abc"}, "MEMORY_PORT: expected an integer between 1 and 65535, got 'abc'"),
    ({"MEMORY_PORT": "70000"}, "MEMORY_PORT: expected an integer between 1 and 65535, got '70000'"),
    ({"MEMORY_LOG_FORMAT": "xml"}, "MEMORY_LOG_FORMAT: expected one of auto, json, text, got 'xml'"),
    ({"MEMORY_CALL_RATE_LIMIT_PER_MINUTE": "0"}, "MEMORY_CALL_RATE_LIMIT_PER_MINUTE: expected an integer of at least 1"),
    ({"MEMORY_PUBLIC_URL": "ftp://x"}, "public URL must be an http(s) URL"),
])
def test_a_bad_environment_value_is_refused_naming_the_variable(environ, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        load_settings(environ=environ)


def test_an_unknown_key_in_the_file_is_refused_naming_the_file(tmp_path):
    config = tmp_path / "memory.toml"
    config.write_text("prot = 8000\n")
    with pytest.raises(ConfigError, match=f"{config}: unknown setting 'prot'"):
        load_settings(config_file=config, environ={})


def test_serve_with_a_bad_variable_exits_2_with_one_line_and_no_traceback(tmp_path):
    result = subprocess.run([MEMORY, "serve", "--data-dir", str(tmp_path)], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "MEMORY_PORT": "abc"}, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == "Error: MEMORY_PORT: expected an integer between 1 and 65535, got 'abc'"


def test_config_show_prints_each_value_with_its_source_and_masks_secrets(tmp_path):
    config = tmp_path / "memory.toml"
    config.write_text('metrics_token = "hunter2-very-secret"\nlog_level = "debug"\n')
    result = subprocess.run([MEMORY, "config", "show", "--config", str(config)], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "MEMORY_PORT": "8123"}, timeout=60, check=True)
    lines = {line.split(" ")[0]: line for line in result.stdout.splitlines()}
    assert "hunter2" not in result.stdout
    assert lines["metrics_token"].startswith('metrics_token = "********"') and f"# file {config}" in lines["metrics_token"]
    assert lines["port"].startswith("port = 8123") and lines["port"].endswith("# env MEMORY_PORT")
    assert lines["log_level"].startswith('log_level = "debug"')
    assert lines["host"].startswith('host = "127.0.0.1"') and lines["host"].endswith("# default")
    # What it prints is itself a config file.
    assert tomllib.loads(result.stdout)["port"] == 8123


def test_config_show_masks_the_password_of_a_database_url_and_keeps_the_rest():
    loaded = load_settings(environ={"MEMORY_DATABASE_URL": "postgresql://memory:s3cr%40t@db.internal:5432/memory"})
    shown = {line.split(" ")[0]: line for line in render(loaded).splitlines()}["database_url"]

    assert "s3cr" not in shown and "env MEMORY_DATABASE_URL" in shown
    assert shown.startswith('database_url = "postgresql://memory:********@db.internal:5432/memory"')
    no_password = load_settings(environ={"MEMORY_DATABASE_URL": "postgresql:///memory?host=/run/postgresql"})
    assert "postgresql:///memory?host=/run/postgresql" in render(no_password)
