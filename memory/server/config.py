"""Where a server's settings come from: a command-line flag beats a `MEMORY_*` environment variable,
which beats the TOML file (`--config FILE` or `$MEMORY_CONFIG`), which beats the default.

Every value is checked by msgspec against the type of its `ServerSettings` field, so a bad one
is refused with a message naming where it came from, before anything starts.
"""

import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec
from msgspec import inspect

from memory.server.settings import ServerSettings

__all__ = ["ConfigError", "LoadedSettings", "load_settings", "env_var", "CONFIG_ENV", "is_secret",
           "setting_names", "render", "record_public_url", "recorded_public_url", "public_url_settings"]

CONFIG_ENV = "MEMORY_CONFIG"
#: Where `memory serve` writes, at start, the public URL it runs under: `memory token` and friends read it.
SERVER_RECORD = "server.json"
_MAX_RECORD = 4096
#: The settings a server's public URL is made of: given any of them, a command builds the URL from them.
_URL_SETTINGS = ("public_url", "host", "port")
_SECRET = re.compile(r"secret|password|(^|_)token$|(^|_)key$")


class ConfigError(Exception):
    """One line an operator can act on: which setting, from where, what was expected."""


class LoadedSettings(msgspec.Struct, frozen=True):
    settings: ServerSettings
    #: Per setting: "default", "env MEMORY_PORT", "file /etc/memory.toml" or "flag".
    sources: dict[str, str]


def env_var(name: str) -> str:
    return f"MEMORY_{name.upper()}"


def is_secret(name: str) -> bool:
    return bool(_SECRET.search(name))


def setting_names() -> list[str]:
    return [f.name for f in msgspec.structs.fields(ServerSettings)]


def _describe(info: inspect.Type) -> str:
    if isinstance(info, inspect.UnionType):
        return " or ".join(_describe(t) for t in info.types if not isinstance(t, inspect.NoneType))
    if isinstance(info, inspect.IntType):
        if info.ge is not None and info.le is not None:
            return f"an integer between {info.ge} and {info.le}"
        return f"an integer of at least {info.ge}" if info.ge is not None else "an integer"
    if isinstance(info, inspect.BoolType):
        return "true or false"
    if isinstance(info, inspect.LiteralType):
        return "one of " + ", ".join(map(str, info.values))
    if isinstance(info, inspect.ListType):
        return "a list (comma-separated in the environment)"
    return "a string"


def _convert(raw: Any, field: msgspec.structs.FieldInfo, where: str, strict: bool) -> Any:
    try:
        return msgspec.convert(raw, field.type, strict=strict)
    except msgspec.ValidationError:
        raise ConfigError(f"{where}: expected {_describe(inspect.type_info(field.type))}, got {raw!r}") from None


def _from_env(raw: str, field: msgspec.structs.FieldInfo) -> Any:
    info = inspect.type_info(field.type)
    if isinstance(info, inspect.ListType):
        return [item.strip() for item in raw.split(",") if item.strip()]
    if isinstance(info, inspect.UnionType) and raw == "":
        return None  # an empty variable unsets an optional setting
    return raw


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def load_settings(flags: Mapping[str, Any] | None = None, *, config_file: str | Path | None = None,
                  environ: Mapping[str, str] | None = None) -> LoadedSettings:
    """The effective settings; `flags` holds only what was given on the command line."""
    environ = os.environ if environ is None else environ
    fields = {f.name: f for f in msgspec.structs.fields(ServerSettings)}
    values: dict[str, Any] = {}
    sources = dict.fromkeys(fields, "default")

    file = config_file or environ.get(CONFIG_ENV) or None
    if file:
        path = Path(file)
        for key, raw in _read_file(path).items():
            if key not in fields:
                raise ConfigError(f"{path}: unknown setting {key!r} (known: {', '.join(fields)})")
            values[key] = _convert(raw, fields[key], f"{path}: {key}", strict=False)
            sources[key] = f"file {path}"
    for name, field in fields.items():
        raw = environ.get(env_var(name))
        if raw is not None:
            values[name] = _convert(_from_env(raw, field), field, env_var(name), strict=False)
            sources[name] = f"env {env_var(name)}"
    for name, raw in (flags or {}).items():
        values[name] = _convert(raw, fields[name], f"--{name.replace('_', '-')}", strict=True)
        sources[name] = "flag"
    try:
        settings = ServerSettings(**values)
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from None
    return LoadedSettings(settings, sources)


def _toml_value(value: Any) -> str:
    # JSON's strings, numbers, booleans and arrays of strings are valid TOML too.
    return json.dumps(value)


def _password_masked(url: str) -> str:
    """A database URL with its password (if it carries one) replaced by asterisks."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":********@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def render(loaded: LoadedSettings) -> str:
    """TOML a `--config` file accepts, each line saying where its value came from; secrets masked."""
    lines = []
    for name in setting_names():
        value = getattr(loaded.settings, name)
        if value is not None and is_secret(name):
            value = "********"
        elif name == "database_url" and value is not None:
            value = _password_masked(value)
        line = f"# {name} is unset" if value is None else f"{name} = {_toml_value(value)}"
        lines.append(f"{line:<60} # {loaded.sources[name]}")
    return "\n".join(lines)


def record_public_url(settings: ServerSettings) -> None:
    """Write the server's effective public URL to `<data_dir>/server.json` (aside, then renamed in)."""
    path = Path(settings.data_dir) / SERVER_RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps({"public_url": settings.base_url}).encode())
    finally:
        os.close(fd)
    os.replace(draft, path)


def recorded_public_url(data_dir: str | Path) -> str | None:
    """The public URL the last server started on `data_dir` recorded; None when there is none that
    is sound (a missing, oversized or damaged record is ignored, never trusted in part)."""
    try:
        with (Path(data_dir) / SERVER_RECORD).open("rb") as f:
            raw = f.read(_MAX_RECORD + 1)
        url = json.loads(raw)["public_url"] if len(raw) <= _MAX_RECORD else None
        return ServerSettings(public_url=url).base_url if isinstance(url, str) else None
    except (OSError, ValueError, TypeError, KeyError):
        return None


def public_url_settings(data_dir: str | Path, public_url: str | None = None, *,
                        config_file: str | Path | None = None, environ: Mapping[str, str] | None = None
                        ) -> ServerSettings:
    """The settings a command uses to name the server of `data_dir` (`base_url`, `resource_url`): those
    of `memory serve` (`public_url` as a flag, then `MEMORY_*`, then the config file); when none of
    them says where the server is, the URL the server recorded at its last start; else the default."""
    loaded = load_settings({"data_dir": str(data_dir)} | ({"public_url": public_url} if public_url else {}),
                           config_file=config_file, environ=environ)
    if all(loaded.sources[name] == "default" for name in _URL_SETTINGS):
        recorded = recorded_public_url(data_dir)
        if recorded is not None:
            return msgspec.structs.replace(loaded.settings, public_url=recorded)
    return loaded.settings
