"""``hybrid-gateway``: the command line."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from gateway.eval.command import add_commands as add_eval_commands

if TYPE_CHECKING:
    from gateway.settings import LedgerSettings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway import access_log
    from gateway.app import create_app
    from gateway.auth.keys import AuthConfigurationError, check_configuration
    from gateway.settings import Settings, unknown_environment_variables
    from local_model import ModelNotFoundError
    from local_model.model_path import resolve_model_path
    from router import PolicyError, load_policy

    overrides: dict[str, Any] = {}
    server = {
        k: v
        for k, v in {"host": args.host, "port": args.port, "log_level": args.log_level}.items()
        if v is not None
    }
    if server:
        overrides["server"] = server
    if args.model_path is not None:
        overrides["local"] = {"model_path": args.model_path}
    unknown = unknown_environment_variables(os.environ)
    if unknown:
        sys.stderr.write(f"unknown settings in the environment: {', '.join(unknown)}\n")
        return 2
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        sys.stderr.write(f"invalid settings:\n{exc}\n")
        return 2
    except SettingsError as exc:  # a JSON-valued variable that is not JSON
        sys.stderr.write(f"invalid settings: {exc} (expected JSON)\n")
        return 2
    try:
        resolve_model_path(settings.local.model_path)
    except ModelNotFoundError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    if settings.policy.file is not None:
        # A bad policy must stop start-up with file, field and reason, not a traceback.
        try:
            load_policy(settings.policy.file)
        except PolicyError as exc:
            sys.stderr.write(f"invalid routing policy:\n{exc}\n")
            return 2
    try:
        check_configuration(settings.auth)
    except AuthConfigurationError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    logging.basicConfig(
        level=settings.server.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # httpx logs every upstream request at INFO: the access log already has each one,
        # and the line cost 3% of the gateway's CPU on the cloud route.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    access_log.configure(settings.server.access_log, sys.stderr)
    with _exit_zero_when_stopped():
        uvicorn.run(
            create_app(settings),
            host=settings.server.host,
            port=settings.server.port,
            log_level=settings.server.log_level,
            access_log=not settings.server.access_log,
            timeout_graceful_shutdown=settings.server.shutdown_grace_s,
        )
    return 0


class _Stopped(Exception):
    """SIGTERM or SIGINT, once uvicorn has shut down (or before it took the signals over)."""


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    raise _Stopped()


@contextlib.contextmanager
def _exit_zero_when_stopped() -> Iterator[None]:
    """A graceful stop exits 0, not by the signal that asked for it.

    uvicorn shuts down on SIGTERM/SIGINT, then restores the handlers it found and
    raises the signal again, so that the old handler decides how the process ends:
    with the default one, a clean shutdown would look like a death by SIGTERM.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, _raise_stopped) for sig in stops}
    try:
        yield
    except _Stopped:
        pass
    finally:
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)


def _policy_check(args: argparse.Namespace) -> int:
    from router import PolicyError, load_policy

    try:
        policy = load_policy(args.file)
    except PolicyError as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    sys.stdout.write(f"ok: {args.file} ({len(policy.rules)} rules)\n")
    return 0


def _policy_schema(args: argparse.Namespace) -> int:
    import json

    from router import Policy

    sys.stdout.write(json.dumps(Policy.model_json_schema(), indent=2) + "\n")
    return 0


def _report(args: argparse.Namespace) -> int:
    import time

    from gateway.ledger.report import Output, report
    from gateway.ledger.summary import parse_bound

    now = time.time()
    try:
        since = parse_bound(args.since, now)
        until = parse_bound(args.until, now)
    except ValueError as exc:
        sys.stderr.write(f"invalid --since/--until: {exc}\n")
        return 2
    ledger = _ledger_location(args.db)
    if ledger is None:
        return 2
    output: Output = "table"
    for name in ("csv", "jsonl", "json"):
        if getattr(args, name):
            output = name
    return report(
        ledger=ledger,
        since=since,
        until=until,
        output=output,
        plot=args.plot,
        out=sys.stdout,
        err=sys.stderr,
    )


def _ledger_location(db: Path | None) -> LedgerSettings | None:
    """Where the ledger is: ``--db`` (a SQLite file), else GATEWAY_LEDGER__URL / __PATH.

    Only those settings, not the whole tree: reading or migrating the ledger must not fail on
    an unrelated setting (an unreadable API key file, say). None after reporting an error.
    """
    from gateway.settings import LedgerSettings

    try:
        if db is not None:
            return LedgerSettings(path=db)
        location = {
            name: os.environ[f"GATEWAY_LEDGER__{name.upper()}"]
            for name in ("path", "url")
            if os.environ.get(f"GATEWAY_LEDGER__{name.upper()}")
        }
        return LedgerSettings.model_validate(location)
    except ValidationError as exc:
        sys.stderr.write(f"invalid ledger settings:\n{exc}\n")
        return None


def _ledger_migrate(args: argparse.Namespace) -> int:
    import asyncio

    from gateway.ledger.store import LedgerStoreError, Migration
    from gateway.ledger.stores import describe_store, open_store

    ledger = _ledger_location(args.db)
    if ledger is None:
        return 2

    async def migrate() -> Migration:
        store = open_store(ledger)
        try:
            return await store.migrate()
        finally:
            await store.aclose()

    sys.stdout.write(f"ledger: {describe_store(ledger)}\n")
    try:
        migration = asyncio.run(migrate())
    except LedgerStoreError as exc:
        sys.stderr.write(f"cannot migrate the ledger: {exc}\n")
        return 1
    sys.stdout.write(
        f"schema version before: {migration.before}\nschema version after: {migration.after}\n"
    )
    return 0


def _keys_create(args: argparse.Namespace) -> int:
    import json

    from gateway.auth.keys import hash_key, new_key

    if args.admin == (args.id is not None):
        sys.stderr.write("give either --id NAME (a client key) or --admin\n")
        return 2
    key = new_key()
    if args.out is not None:
        try:
            # Created for the owner only, and never over an existing file.
            fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            sys.stderr.write(f"cannot create {args.out}: {exc.strerror}\n")
            return 1
        with os.fdopen(fd, "w") as out:
            out.write(key + "\n")
        sys.stdout.write(f"# The key is in {args.out} (shown nowhere else).\n")
    else:
        sys.stdout.write("# The key, shown this once (the gateway keeps only its hash):\n")
        sys.stdout.write(key + "\n")
    if args.admin:
        sys.stdout.write("# Set in the gateway's environment:\n")
        sys.stdout.write(f"GATEWAY_AUTH__ADMIN_KEY_HASH={hash_key(key)}\n")
    else:
        entry = json.dumps({"id": args.id, "hash": hash_key(key)})
        sys.stdout.write(
            "# Add this entry to GATEWAY_AUTH__KEYS (a JSON list) or to the list in "
            "GATEWAY_AUTH__KEYS_FILE:\n"
        )
        sys.stdout.write(entry + "\n")
    return 0


def _keys_hash(args: argparse.Namespace) -> int:
    from gateway.auth.keys import hash_key

    key = sys.stdin.read().strip()
    if not key:
        sys.stderr.write("no key on standard input\n")
        return 2
    sys.stdout.write(hash_key(key) + "\n")
    return 0


def _key_id(text: str) -> str:
    import re

    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", text):
        raise argparse.ArgumentTypeError("1-64 characters of A-Za-z0-9._-")
    return text


_DB_HELP = (
    "ledger SQLite file (default: the Postgres ledger at GATEWAY_LEDGER__URL if set, else "
    "GATEWAY_LEDGER__PATH, else hybrid-gateway-ledger.sqlite3)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hybrid-gateway", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway (settings also come from GATEWAY_*)")
    serve.add_argument("--host", help="interface to bind (GATEWAY_SERVER__HOST)")
    serve.add_argument("--port", type=int, help="port to bind (GATEWAY_SERVER__PORT)")
    serve.add_argument("--model-path", type=Path, help="GGUF to serve (GATEWAY_LOCAL__MODEL_PATH)")
    serve.add_argument(
        "--log-level",
        choices=["critical", "error", "warning", "info", "debug"],
        help="GATEWAY_SERVER__LOG_LEVEL",
    )
    serve.set_defaults(handler=_serve)
    policy = commands.add_parser("policy", help="check routing policy files")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True)
    check = policy_commands.add_parser(
        "check", help="validate a policy file; print every problem with its field"
    )
    check.add_argument("file", help="the policy YAML file")
    check.set_defaults(handler=_policy_check)
    schema = policy_commands.add_parser("schema", help="print the policy file's JSON schema")
    schema.set_defaults(handler=_policy_schema)
    report = commands.add_parser(
        "report", help="summarize the request ledger, export its rows, or plot them"
    )
    window = "a duration back from now (90s, 30m, 24h, 7d), an ISO-8601 time (UTC unless it "
    report.add_argument(
        "--since", default="24h", help=window + "has an offset), or 'all' (default: 24h)"
    )
    report.add_argument("--until", help=window + "has an offset); default: now")
    report.add_argument(
        "--db",
        type=Path,
        help=_DB_HELP,
    )
    output = report.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="the summary as /v1/usage's JSON")
    output.add_argument("--csv", action="store_true", help="every record as CSV (with costs)")
    output.add_argument("--jsonl", action="store_true", help="every record as JSON lines")
    report.add_argument(
        "--plot", type=Path, metavar="PNG", help="also draw latency, spend and route share"
    )
    report.set_defaults(handler=_report)
    ledger = commands.add_parser("ledger", help="manage the request ledger's database")
    ledger_commands = ledger.add_subparsers(dest="ledger_command", required=True)
    migrate = ledger_commands.add_parser(
        "migrate",
        help="create or upgrade the ledger's tables (safe to repeat); prints the schema "
        "version before and after",
    )
    migrate.add_argument("--db", type=Path, help=_DB_HELP)
    migrate.set_defaults(handler=_ledger_migrate)
    keys = commands.add_parser("keys", help="create API keys and hash them for the settings")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_commands.add_parser(
        "create",
        help="make a new random key; print it once, and the settings entry with its hash",
    )
    create.add_argument("--id", type=_key_id, help="who the client key is for (A-Za-z0-9._-)")
    create.add_argument(
        "--admin", action="store_true", help="an admin key (/metrics, /v1/usage, /admin/*)"
    )
    create.add_argument(
        "--out", type=Path, help="write the key to this new file (mode 0600) instead of stdout"
    )
    create.set_defaults(handler=_keys_create)
    hash_command = keys_commands.add_parser(
        "hash", help="read a key from standard input and print its sha256: hash"
    )
    hash_command.set_defaults(handler=_keys_hash)
    # eval and calibrate: their arguments and handlers live with the evaluation code.
    add_eval_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = args.handler
    code: int = handler(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
