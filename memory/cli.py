"""The `memory` command: operate and audit a data directory. A thin adapter over the domain."""

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from memory.errors import MemoryServiceError
from memory.identity import Identity
from memory.log import user_folder
from memory.logs import LogDirectory
from memory.signing import KeyRing

__all__ = ["main", "cli"]

_data_dir = click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("data"), show_default=True,
    envvar="MEMORY_DATA_DIR", help="Where the logs, projections and keys live.",
)
_database_url = click.option(
    "--database-url", metavar="URL", envvar="MEMORY_DATABASE_URL",
    help="postgresql://... : the logs live in this database (default: SQLite files under --data-dir).",
)
_keys_dir = click.option(
    "--keys-dir", type=click.Path(file_okay=False, path_type=Path), envvar="MEMORY_KEYS_DIR",
    help="The signing keys' directory (default: DATA_DIR/keys).",
)
_user = click.option(
    "--user", "user", metavar="USER",
    help="A local account name (alice), or ISSUER#SUBJECT for an account of another issuer.",
)


def _embedder():
    from projections.embedder import default_embedder

    # Loaded when first needed, not in the background: a command that ends while onnxruntime is
    # still loading aborts the process ("terminate called without an active exception").
    return default_embedder()


def _keys(data_dir: Path, keys_dir: Path | None) -> KeyRing:
    return KeyRing(data_dir, keys_dir=keys_dir)


def _open_logs(data_dir: Path, database_url: str | None, keys_dir: Path | None) -> LogDirectory:
    """The logs of record: the database `--database-url` names, else the SQLite files in `data_dir`."""
    from memory.logs import open_log_directory

    try:
        return open_log_directory(data_dir, _keys(data_dir, keys_dir), database_url)
    except (ValueError, MemoryServiceError) as exc:
        raise click.ClickException(str(exc)) from None


@contextmanager
def _logs(data_dir: Path, database_url: str | None, keys_dir: Path | None) -> Iterator[LogDirectory]:
    logs = _open_logs(data_dir, database_url, keys_dir)
    try:
        yield logs
    finally:
        logs.close()


def _known_owner(logs: LogDirectory, user: str) -> Identity:
    owner = Identity.parse(user)
    if not logs.exists(owner):
        raise click.ClickException(f"no log for user {user!r} in {logs}")
    return owner


def _owners(logs: LogDirectory, user: str | None) -> list[Identity]:
    if user:
        return [_known_owner(logs, user)]
    return [owner for _, owner in logs.list_logs()]


def _oauth_store(data_dir: Path, database_url: str | None):
    """The one place the CLI picks the OAuth and account store: PostgreSQL with --database-url
    (shared by every replica), else SQLite under the data dir."""
    from memory.server.shared import auth_store

    return auth_store(str(data_dir), database_url)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Operate and audit a memory service's data directory."""
    # Logs, projections, keys and the account database hold people's memories and secrets:
    # whatever a command creates is the service user's alone (0600 files, 0700 folders).
    os.umask(0o077)


@cli.command()
@_data_dir
@_database_url
@_keys_dir
@_user
@click.option("--to", "to_seq", type=click.IntRange(min=0), help="Stop after this seq (point in time).")
def replay(data_dir: Path, database_url: str | None, keys_dir: Path | None, user: str, to_seq: int | None) -> None:
    """Rebuild a user's projections (in --data-dir) from their log, optionally only up to --to SEQ."""
    from memory.userstore import build_projections
    from projections.base import PROJECTIONS_FILE, open_projection_db

    if not user:
        raise click.UsageError("--user is required")
    with _logs(data_dir, database_url, keys_dir) as logs:
        owner = _known_owner(logs, user)
        log = logs.open(owner)
        folder = user_folder(data_dir, owner)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        view = build_projections(open_projection_db(folder / PROJECTIONS_FILE), _embedder())
        total = min(to_seq, log.last_seq()) if to_seq is not None else log.last_seq()
        with click.progressbar(length=total, label=f"replaying {owner}", file=sys.stderr) as bar:
            applied = view.projections.rebuild(log, to_seq, bar.update)
        click.echo(f"{owner}: projections rebuilt from {applied} events (now at seq {view.checkpoint})")
        view.db.close()
        log.close()


def _echo_report(owner: Identity, report, detail: str = "") -> bool:
    """One line for a sound log, one per problem for a broken one; whether it was sound."""
    if report.ok:
        click.echo(f"ok {owner}: {report.event_count} events, head {report.head_hash[:16]}{detail}")
    for problem in report.problems:
        click.echo(f"FAIL {owner}: {problem.message}", err=True)
    return report.ok


@cli.command()
@_data_dir
@_database_url
@_keys_dir
@_user
def verify(data_dir: Path, database_url: str | None, keys_dir: Path | None, user: str | None) -> None:
    """Check every log's chain, signatures and seqs, and that projections agree with it.

    Says how many events each key signed; an event a key signed after it was marked compromised fails.
    """
    with _logs(data_dir, database_url, keys_dir) as logs:
        _verify_logs(data_dir, logs, user)


def _verify_logs(data_dir: Path, logs: LogDirectory, user: str | None) -> None:
    from memory.audit import verify_user

    keys = logs.keys
    compromised = {r["kid"] for r in keys.records() if r["compromised_at"]}
    owners = _owners(logs, user)
    embedder = _embedder()
    failed = 0
    for owner in owners:
        try:
            report = verify_user(data_dir, owner, keys, embedder, logs=logs)
        except MemoryServiceError as exc:
            failed += 1
            click.echo(f"FAIL {owner}: {exc}", err=True)
            continue
        # Which key signed what: after a leak, the events of a compromised key are the ones to look at.
        signers = ", ".join(f"{kid} ({count}{', compromised' if kid in compromised else ''})"
                            for kid, count in report.signed_by.items())
        failed += not _echo_report(owner, report, f", {len(report.redacted_seqs)} redacted"
                                                  + (f", signed by {signers}" if signers else ""))
    if failed:
        raise SystemExit(1)
    click.echo(f"verified {len(owners)} log(s)")


@cli.command()
@_data_dir
@_database_url
@_keys_dir
@_user
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True)
def export(data_dir: Path, database_url: str | None, keys_dir: Path | None, user: str, output: Path) -> None:
    """Write a user's self-contained, signed export bundle."""
    from memory.audit import export_user

    if not user:
        raise click.UsageError("--user is required")
    with _logs(data_dir, database_url, keys_dir) as logs:
        owner = _known_owner(logs, user)
        log = logs.open(owner)
        total = log.last_seq()
        log.close()
        with click.progressbar(length=total, label=f"exporting {owner}", file=sys.stderr) as bar:
            manifest = export_user(data_dir, owner, logs.keys, output, bar.update, logs=logs)
    click.echo(f"exported {manifest['event_count']} events of {owner} to {output}")


@cli.command("import")
@_data_dir
@_database_url
@_keys_dir
@_user
@click.option("--format", "format_name", required=True,
              type=click.Choice(["server-memory", "mem0", "jsonl", "export"]),
              help="What wrote FILE: the MCP reference memory server, mem0, our JSON lines, or a bundle.")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
def import_command(data_dir: Path, database_url: str | None, keys_dir: Path | None, user: str, format_name: str,
                   file: Path) -> None:
    """Import another tool's memories into a user's log (all of FILE, or nothing)."""
    from memory.importing import MAX_IMPORT_BYTES
    from memory.service import Caller, MemoryService

    if not user:
        raise click.UsageError("--user is required")
    if file.stat().st_size > MAX_IMPORT_BYTES:
        raise click.ClickException(f"{file} is larger than {MAX_IMPORT_BYTES} bytes")
    service = MemoryService(data_dir, _embedder(), logs=_open_logs(data_dir, database_url, keys_dir))
    try:
        report = service.import_memories(Caller(Identity.parse(user), client_id="memory-import"), format_name,
                                         file.read_bytes())
    except MemoryServiceError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        service.close()
    click.echo(f"imported {len(report.imported)} of {report.records} record(s) from {file} ({report.format}): "
               f"{report.already_imported} imported before, {len(report.duplicates)} duplicate(s), "
               f"{report.links} link(s)")
    for duplicate in report.duplicates:
        click.echo(f"  {duplicate.where}: duplicate of {duplicate.duplicate_of}")


@cli.command("verify-export", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def verify_export(args: tuple[str, ...]) -> None:
    """Verify an export bundle offline: BUNDLE [--json] [--expect-jwks FILE]."""
    from memory import verify_export as verifier

    raise SystemExit(verifier.main(list(args)))


@cli.command("isolation-check")
@_data_dir
@_database_url
@_keys_dir
def isolation_check(data_dir: Path, database_url: str | None, keys_dir: Path | None) -> None:
    """Every event belongs to its log's owner; no read returned another user's memory."""
    from memory.audit import isolation_check as check

    with _logs(data_dir, database_url, keys_dir) as logs:
        violations = check(data_dir, logs.keys, logs=logs)
        for v in violations:
            click.echo(f"VIOLATION {v.user}: {v.message}", err=True)
        if violations:
            raise SystemExit(1)
        click.echo(f"isolation holds across {sum(1 for _ in logs.list_logs())} log(s)")


@cli.command()
@_data_dir
@_database_url
@_keys_dir
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def stats(data_dir: Path, database_url: str | None, keys_dir: Path | None, as_json: bool) -> None:
    """Users, daily active users, memories and operations per user, OAuth flows."""
    import msgspec

    from memory.server.oauth.store import oauth_db_path
    from memory.stats import collect_stats, tool_calls

    with _logs(data_dir, database_url, keys_dir) as logs:
        report = collect_stats(logs)
    flows = None
    if oauth_db_path(data_dir).exists():
        with _oauth_store(data_dir, database_url) as store:
            flows = store.counts()
    if as_json:
        calls = tool_calls(flows or {})
        click.echo(json.dumps(msgspec.to_builtins(report) | {"oauth": flows, "tool_calls": {
            tool: {"ok": ok, "error": failed} for tool, (ok, failed) in sorted(calls.items())}}, indent=2))
        return
    click.echo(f"{'user':<30} {'events':>8} {'memories':>9} {'reads':>8}  last event")
    for r in report.per_user:
        click.echo(f"{r.user:<30} {r.events:>8} {r.memories:>9} {r.reads:>8}  {r.last_event_at}")
    click.echo(f"{report.users} user(s), {report.daily_active_users} active in the last 24 hours, "
               f"{report.events} events")
    click.echo(f"memories per user: min {report.memories_min}, median {report.memories_median:g}, "
               f"max {report.memories_max}")
    click.echo("operations: " + (", ".join(f"{k} {v}" for k, v in report.operations.items()) or "none"))
    if flows is not None:
        click.echo(f"OAuth flows: {flows['flows_started']} started, {flows['flows_completed']} completed")
        calls = tool_calls(flows)
        total = sum(ok + failed for ok, failed in calls.values())
        errors = sum(failed for _, failed in calls.values())
        click.echo(f"tool calls: {total}, {errors} failed ({errors / total:.1%} error rate)" if total else
                   "tool calls: none counted yet")
        if calls:
            click.echo("  " + ", ".join(f"{tool} {ok + failed}" + (f" ({failed} failed)" if failed else "")
                                        for tool, (ok, failed) in sorted(calls.items())))


@cli.command("backup")
@_data_dir
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="A new (or empty) directory for the backup.")
def backup_command(data_dir: Path, output: Path) -> None:
    """Back up every log, the OAuth store and the keys, safely while a server runs."""
    from memory.backup import BackupError, backup, backup_files
    from memory.server.oauth.store import OAUTH_FILE

    try:
        with click.progressbar(length=len(backup_files(data_dir, [OAUTH_FILE])), label="backing up",
                               file=sys.stderr) as bar:
            manifest = backup(data_dir, output, bar.update, shared=[OAUTH_FILE])
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"backed up {len(manifest.databases)} database(s) and {len(manifest.keys)} key file(s) to {output}")


@cli.command("restore")
@click.argument("backup_dir", metavar="BACKUP", type=click.Path(file_okay=False, exists=True, path_type=Path))
@_data_dir
@click.option("--force", is_flag=True, help="Replace the logs, keys and OAuth store of a non-empty data dir.")
def restore_command(backup_dir: Path, data_dir: Path, force: bool) -> None:
    """Restore BACKUP into --data-dir and verify every restored chain (projections rebuild on use)."""
    from memory.backup import BackupError, read_manifest, restore
    from memory.server.oauth.store import OAUTH_FILE

    try:
        total = len(read_manifest(backup_dir).databases)
        with click.progressbar(length=total, label="restoring", file=sys.stderr) as bar:
            reports = restore(backup_dir, data_dir, force=force, progress=bar.update, shared=[OAUTH_FILE])
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    failed = 0
    for owner, report in reports:
        failed += not _echo_report(owner, report)
    if failed:
        raise SystemExit(1)
    click.echo(f"restored and verified {len(reports)} log(s) into {data_dir}")


@cli.command("migrate")
@_data_dir
@click.option("--database-url", metavar="URL", envvar="MEMORY_DATABASE_URL", required=True,
              help="postgresql://... : the database to copy every log into.")
@_keys_dir
def migrate_command(data_dir: Path, database_url: str, keys_dir: Path | None) -> None:
    """Copy every SQLite log of --data-dir into PostgreSQL verbatim, then verify every chain there.

    The signed bytes are copied unchanged (redactions included); running it again changes nothing.
    """
    from memory.logs import is_database_url
    from memory.migrate import migrate, problems_of

    if not is_database_url(database_url):
        raise click.BadParameter("must be a postgresql:// URL", param_hint="--database-url")
    with _logs(data_dir, database_url, keys_dir) as logs:
        total = 0
        results = migrate(data_dir, logs)
        failed = 0
        for result in results:
            total += result.copied
            if result.ok:
                click.echo(f"ok {result.owner}: {result.events} events, {result.copied} copied now, "
                           f"{result.redacted} redacted now, head {result.report.head_hash[:16]}")
            else:
                failed += 1
                for problem in problems_of(result):
                    click.echo(f"FAIL {result.owner}: {problem.message}", err=True)
    if failed:
        raise SystemExit(1)
    click.echo(f"migrated and verified {len(results)} log(s) into {logs}: {total} event(s) copied")


@cli.command("rotate-key")
@_data_dir
@_keys_dir
@click.option("--compromised", is_flag=True,
              help="The old key leaked: refuse every token it signed at once (not only those issued after "
                   "the rotation) and flag events it signs from now on in `memory verify`.")
def rotate_key(data_dir: Path, keys_dir: Path | None, compromised: bool) -> None:
    """Make a new signing key the active one; old keys stay published so old events verify.

    A running server notices within a second: it signs with the new key and accepts tokens of
    the old one only if they were issued before the rotation (none, with --compromised).
    """
    keys = _keys(data_dir, keys_dir)
    old = keys.active_key_id
    new = keys.rotate(compromised=compromised)
    click.echo(f"rotated signing key {old} -> {new}" + (f" ({old} marked compromised)" if compromised else ""))


@cli.command()
@_data_dir
@_keys_dir
def jwks(data_dir: Path, keys_dir: Path | None) -> None:
    """Print the public keys (JWKS) that verify this server's events, exports and tokens."""
    click.echo(json.dumps(_keys(data_dir, keys_dir).jwks(), indent=2))


_config_file = click.option(
    "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), envvar="MEMORY_CONFIG",
    metavar="FILE", help="A TOML file of settings (flags and MEMORY_* variables override it).",
)


def _load_settings(flags: dict, config_file: Path | None):
    from memory.server.config import ConfigError, load_settings

    try:
        return load_settings(flags, config_file=config_file)
    except ConfigError as exc:
        # One line and exit code 2, like a bad flag: a traceback would only hide which value was wrong.
        click.echo(f"Error: {exc}", err=True)
        raise SystemExit(2) from None


def _given(ctx: click.Context, params: dict, rename: dict[str, str]) -> dict:
    """The flags typed on the command line, by setting name (environment and file come from the loader)."""
    given = {}
    for param, value in params.items():
        if ctx.get_parameter_source(param) is click.core.ParameterSource.COMMANDLINE:
            given[rename.get(param, param)] = list(value) if isinstance(value, tuple) else value
    return given


_SERVE_FLAGS = {"access_token_ttl": "access_token_ttl_seconds",
                "personal_token_max_ttl": "personal_token_max_ttl_seconds",
                "oauth_rate_limit": "oauth_rate_limit_per_minute",
                "call_rate_limit": "call_rate_limit_per_minute"}


@cli.command()
@click.option("--host", help="Interface to listen on (default 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port to listen on (default 8000).")
@_data_dir
@_database_url
@_keys_dir
@_config_file
@click.option("--public-url", metavar="URL",
              help="The URL clients reach this server at (default http://HOST:PORT): the base of metadata "
                   "documents, token audiences and memory urls.")
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="HOST[:PORT]",
              help="Another Host header /mcp accepts (repeatable); the public URL's and loopback's always are.")
@click.option("--allowed-origin", "allowed_origins", multiple=True, metavar="ORIGIN",
              help="Another Origin header /mcp accepts (repeatable).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error", "critical"]),
              help="Default info.")
@click.option("--log-format", type=click.Choice(["auto", "json", "text"]),
              help="Default auto: text on a terminal, otherwise json (one object a line).")
@click.option("--forwarded-allow-ip", "forwarded_allow_ips", multiple=True, metavar="IP",
              help="A reverse proxy whose X-Forwarded-* headers are trusted (repeatable; default none).")
@click.option("--access-token-ttl", help="Lifetime of access tokens from the built-in authorization server: "
                                         "90s, 15m, 1h (default 15m).")
@click.option("--personal-token-max-ttl", help="The longest a `memory token` token may live; longer ones are "
                                               "refused: 12h, 30d (default 90d).")
@click.option("--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN",
              help="A browser origin allowed by CORS (repeatable; default https://chatgpt.com and "
                   "https://chat.openai.com).")
@click.option("--oauth-rate-limit", type=click.IntRange(min=1),
              help="Requests per minute and address to /register, /authorize, /token, /revoke and the login form "
                   "(default 60).")
@click.option("--call-rate-limit", type=click.IntRange(min=1),
              help="Requests per minute and person to /mcp and /api/v1, 429 beyond (default 3000).")
@click.option("--allow-loopback-client-metadata", is_flag=True,
              help="Accept client metadata documents over http on 127.0.0.1/localhost (development only).")
@click.option("--idp-issuer", metavar="URL",
              help="Use an external identity provider (Auth0, Keycloak): its issuer, exactly as in its tokens' iss.")
@click.option("--idp-jwks-url", metavar="URL",
              help="Where the external provider publishes its signing keys (required with --idp-issuer).")
@click.option("--idp-audience", metavar="AUD",
              help="The aud the provider's access tokens carry for this server (default: PUBLIC_URL/mcp).")
@click.option("--workers", type=click.IntRange(1, 64),
              help="Server processes on this port over the one data directory (default 1).")
@click.option("--widget/--no-widget", default=None,
              help="Memory cards inside ChatGPT and other MCP Apps hosts (default on); text-only hosts see no change.")
@click.pass_context
def serve(ctx: click.Context, config_file: Path | None, **params) -> None:
    """Serve MCP at /mcp and the REST API at /api/v1 (the embedding model loads in the background).

    Every setting also comes from a MEMORY_* environment variable or the --config file; see
    `memory config show`.
    """
    import uvicorn

    from memory.server.app import create_app

    for duration in ("access_token_ttl", "personal_token_max_ttl"):
        if params[duration] is not None:
            params[duration] = _duration(params[duration])
    for path in ("data_dir", "keys_dir"):
        if params[path] is not None:
            params[path] = str(params[path])
    settings = _load_settings(_given(ctx, params, _SERVE_FLAGS), config_file).settings
    if (settings.idp_issuer is None) != (settings.idp_jwks_url is None):
        raise click.UsageError("--idp-issuer and --idp-jwks-url go together")
    forwarded = settings.forwarded_allow_ips
    # log_config=None: the app's logging config (JSON lines by default) formats uvicorn's own lines too.
    # access_log=False: the app logs each request itself, without the query string (a search's words).
    options = dict(log_level=settings.log_level, lifespan="on", log_config=None, access_log=False,
                   proxy_headers=bool(forwarded), forwarded_allow_ips=forwarded or None,
                   server_header=False, timeout_graceful_shutdown=5)
    if settings.workers > 1:
        from memory.server.workers import serve_workers

        serve_workers(settings, **options)
        return
    from memory.pgpool import DatabaseUnavailable
    from memory.userstore import remove_replicas

    remove_replicas(settings.data_dir, keep=1)  # what other workers of an earlier start left
    try:
        app = create_app(settings)
    except (MemoryServiceError, DatabaseUnavailable) as exc:  # the database cannot be reached or used
        click.echo(f"Error: {exc}", err=True)
        raise SystemExit(1) from None
    config = uvicorn.Config(app, host=settings.host, port=settings.port, **options)

    class _Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets)
            if self.started:
                # Once the port answers, a person who just ran `make serve` learns what to do next.
                logging.getLogger("memory.server").log(*_next_step(settings))

    _Server(config).run()


def _next_step(settings) -> tuple[int, str]:
    """What a person who just started the server does next: the first account (a warning: until
    then nobody can sign in), or the page to open."""
    page = f"{settings.base_url}/"
    if settings.external_idp:
        return logging.INFO, f"Ready: assistants connect to {settings.resource_url} with tokens of {settings.idp_issuer}"
    with _oauth_store(Path(settings.data_dir), settings.database_url) as store:
        has_accounts = bool(store.users())
    if has_accounts:
        return logging.INFO, f"Ready at {page} (sign in there); assistants connect to {settings.resource_url}"
    command = os.path.relpath(sys.argv[0]) if Path(sys.argv[0]).is_file() else "memory"
    command = command if "/" in command or command == "memory" else f"./{command}"
    return logging.WARNING, (f"Ready. Next: create your account with `{command} user add NAME --data-dir {settings.data_dir}`, "
            f"then open {page} and sign in")


@cli.group("config")
def config_group() -> None:
    """The server's settings: flags over MEMORY_* variables over the --config file over defaults."""


@config_group.command("show")
@_config_file
def config_show(config_file: Path | None) -> None:
    """Print the effective settings as TOML, each with where it came from (secrets masked)."""
    from memory.server.config import render

    click.echo(render(_load_settings({}, config_file)))


def _public_settings(data_dir: Path, public_url: str | None, config_file: Path | None = None):
    """The settings that name the server of `data_dir`, as `memory serve` reads them: --public-url,
    then MEMORY_* (MEMORY_PUBLIC_URL, MEMORY_PORT...), then the $MEMORY_CONFIG file; when none of
    them places the server, the URL it recorded at its last start; else http://127.0.0.1:8000."""
    from memory.server.config import ConfigError, public_url_settings

    try:
        return public_url_settings(data_dir, public_url, config_file=config_file)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


def _duration(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        seconds = int(number) * units[unit]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a duration like 90s, 30m, 1h or 7d") from None
    if seconds <= 0:
        raise click.BadParameter("the duration must be positive")
    return seconds


def _local_user(user: str | None) -> str:
    from memory.identity import LOCAL_ISSUER

    if not user:
        raise click.UsageError("--user is required")
    if Identity.parse(user).iss != LOCAL_ISSUER:
        raise click.UsageError("tokens of this server are for local accounts: give a plain name like alice")
    return user


def _utc(seconds: float | None) -> str:
    from datetime import UTC, datetime

    return "never" if seconds is None else datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M")


@cli.group(invoke_without_command=True)
@_data_dir
@_database_url
@_keys_dir
@_user
@click.option("--name", default="cli", show_default=True, metavar="NAME",
              help="What the token is for (claude-code, codex, a script): how it is listed and revoked, "
                   "and the client your timeline names.")
@click.option("--scope", "scopes", default="memories:read memories:write", show_default=True,
              help="Space-separated scopes: memories:read, memories:write.")
@click.option("--ttl", default="1h", show_default=True,
              help="Lifetime: 90s, 30m, 1h, 7d (at most personal_token_max_ttl_seconds, default 90d).")
@click.option("--public-url", metavar="URL",
              help="The server's public URL (default: as `memory serve` reads it from MEMORY_* and "
                   "$MEMORY_CONFIG, else the URL the server on --data-dir recorded when it started).")
@_config_file
@click.pass_context
def token(ctx: click.Context, data_dir: Path, database_url: str | None, keys_dir: Path | None, user: str | None,
          name: str, scopes: str, ttl: str, public_url: str | None, config_file: Path | None) -> None:
    """Print a named, revocable bearer token for a local account, signed with this data directory's key.

    `memory token list` and `memory token revoke` show and revoke them.
    """
    from memory.server.auth import ALL_SCOPES, issue_personal_token

    if ctx.invoked_subcommand is not None:
        return
    user = _local_user(user)
    unknown = sorted(set(scopes.split()) - set(ALL_SCOPES))
    if unknown or not scopes.split():
        raise click.BadParameter(f"scopes must be among {' '.join(ALL_SCOPES)} (got {scopes!r})")
    settings = _public_settings(data_dir, public_url, config_file)
    cap = settings.personal_token_max_ttl_seconds
    with _oauth_store(data_dir, database_url) as store:
        try:
            printed = issue_personal_token(_keys(data_dir, keys_dir), store, issuer=settings.base_url,
                                           audience=settings.resource_url, user=user, name=name,
                                           scopes=scopes.split(), ttl_seconds=_duration(ttl), max_ttl_seconds=cap)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(printed)


@token.command("list")
@_data_dir
@_database_url
@_user
def token_list(data_dir: Path, database_url: str | None, user: str | None) -> None:
    """The live personal tokens of --user: name, created, expires, last used (UTC)."""
    user = _local_user(user)
    with _oauth_store(data_dir, database_url) as store:
        tokens = store.personal_tokens_of(user)
    click.echo(f"{'name':<24} {'created':<17} {'expires':<17} last used")
    for t in tokens:
        click.echo(f"{t.name:<24} {_utc(t.created_at):<17} {_utc(t.expires_at):<17} {_utc(t.last_used)}")


@token.command("revoke")
@_data_dir
@_database_url
@_user
@click.argument("name")
def token_revoke(data_dir: Path, database_url: str | None, user: str | None, name: str) -> None:
    """Revoke every live personal token of --user named NAME (refused at once, also by a running server)."""
    user = _local_user(user)
    with _oauth_store(data_dir, database_url) as store:
        revoked = store.revoke_personal_tokens(user, name)
    if not revoked:
        raise click.ClickException(f"{user} has no live token named {name!r} "
                                   f"(see `memory token list --user {user}`)")
    click.echo(f"revoked {revoked} token(s) named {name} of {user}")


@cli.group()
def user() -> None:
    """Accounts of the built-in authorization server (who may sign in when an assistant connects)."""


def _new_password() -> str:
    """A new password from stdin, or prompted for twice on a terminal."""
    from memory.server.oauth.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH

    if sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise click.ClickException(f"the password must have between {MIN_PASSWORD_LENGTH} and "
                                   f"{MAX_PASSWORD_LENGTH} characters")
    return password


@user.command("add")
@_data_dir
@_database_url
@_keys_dir
@click.argument("name")
@click.option("--reclaim", is_flag=True,
              help="Take over the memories of a removed account of the same name, on purpose.")
def user_add(data_dir: Path, database_url: str | None, keys_dir: Path | None, name: str, reclaim: bool) -> None:
    """Create account NAME; the password is read from stdin, or prompted for on a terminal.

    NAME's memories are those of `memory token --user NAME`: the same log. The log of a removed
    account NAME is handed to the new one only with --reclaim.
    """
    from memory.identity import LOCAL_ISSUER
    from memory.server.oauth.passwords import hash_password
    from memory.server.oauth.store import RemovedAccount, valid_username

    if not valid_username(name):
        raise click.BadParameter(f"{name!r}: use letters, digits, '.', '_', '@' or '-' (at most 64)")
    password = _new_password()
    # A removed account's name without memories left on disk holds nothing to take over.
    with _logs(data_dir, database_url, keys_dir) as logs:
        orphaned = logs.exists(Identity(LOCAL_ISSUER, name))
    with _oauth_store(data_dir, database_url) as store:
        try:
            store.add_user(name, hash_password(password), reclaim=reclaim or not orphaned)
        except RemovedAccount:
            raise click.ClickException(
                f"account {name!r} was removed and its memories are still in {data_dir}: a new account "
                f"{name!r} would read them. To give them to the new account on purpose, run `memory user add "
                f"{name} --reclaim`; otherwise choose another name") from None
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"added account {name}")


@user.command("passwd")
@_data_dir
@_database_url
@click.argument("name")
def user_passwd(data_dir: Path, database_url: str | None, name: str) -> None:
    """Set account NAME's password (read like `user add` does) and sign it out of every web session."""
    from memory.server.oauth.passwords import hash_password

    password = _new_password()
    with _oauth_store(data_dir, database_url) as store:
        if not store.set_password(name, hash_password(password)):
            raise click.ClickException(f"no account {name!r}")
    click.echo(f"changed the password of {name}; its web sessions are ended")


@user.command("list")
@_data_dir
@_database_url
def user_list(data_dir: Path, database_url: str | None) -> None:
    """The accounts, one a line."""
    with _oauth_store(data_dir, database_url) as store:
        for name in store.users():
            click.echo(name)


@user.command("remove")
@_data_dir
@_database_url
@click.argument("name")
def user_remove(data_dir: Path, database_url: str | None, name: str) -> None:
    """Remove account NAME: end its sessions, revoke its grants and personal tokens (its memories stay in its log)."""
    with _oauth_store(data_dir, database_url) as store:
        if not store.remove_user(name):
            raise click.ClickException(f"no account {name!r}")
    click.echo(f"removed account {name}")


def main() -> None:
    # Before numpy loads: a multithreaded BLAS fighting the embedder for two cores made a 10k
    # vector search take 8 ms instead of 0.2 ms. An operator's own setting wins.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    _few_malloc_arenas()
    cli(prog_name="memory")


def _few_malloc_arenas() -> None:
    """glibc gives each thread that allocates its own arena (up to 8 per core) and keeps what is
    freed in it: with the model's working memory allocated per run on several threads, a server
    at 1k memories sat at 665 MB instead of 384 MB. MALLOC_ARENA_MAX, when set, wins."""
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return  # not glibc (musl has no arenas to cap)
    libc.mallopt(-8, 2)  # M_ARENA_MAX
