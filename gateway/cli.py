"""``hybrid-gateway``: the command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.app import create_app
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
    logging.basicConfig(
        level=settings.server.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    _configure_access_log(settings.server.access_log)
    uvicorn.run(
        create_app(settings),
        host=settings.server.host,
        port=settings.server.port,
        log_level=settings.server.log_level,
        access_log=not settings.server.access_log,
        timeout_graceful_shutdown=30,
    )
    return 0


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
    from gateway.settings import LedgerSettings

    now = time.time()
    try:
        since = parse_bound(args.since, now)
        until = parse_bound(args.until, now)
    except ValueError as exc:
        sys.stderr.write(f"invalid --since/--until: {exc}\n")
        return 2
    # Only the ledger's path, not the whole settings tree: a report must not fail on an
    # unrelated setting (an unreadable API key file, say).
    db = args.db or Path(os.environ.get("GATEWAY_LEDGER__PATH") or LedgerSettings().path)
    output: Output = "table"
    for name in ("csv", "jsonl", "json"):
        if getattr(args, name):
            output = name
    return report(
        db=db,
        since=since,
        until=until,
        output=output,
        plot=args.plot,
        out=sys.stdout,
        err=sys.stderr,
    )


def _eval(args: argparse.Namespace) -> int:
    import asyncio

    from gateway.app import load_llama_engine
    from gateway.eval.dataset import DatasetError, EvalItem, load_jsonl
    from gateway.eval.report import format_table
    from gateway.eval.run import LocalAnswer, run_eval
    from gateway.settings import Settings
    from local_model import ChatMessage, ModelNotFoundError
    from local_model.engine import Engine
    from local_model.model_path import resolve_model_path
    from local_model.types import GenerationRequest, SamplingParams
    from router import PolicyError, default_policy, load_policy

    try:
        items = load_jsonl(args.dataset)
        policy = load_policy(args.policy) if args.policy is not None else default_policy()
        # The gateway's own settings (GATEWAY_* and defaults), so the model and
        # context are what the gateway serves; decoding is greedy for reproducibility.
        settings = Settings()
        model_path = resolve_model_path(settings.local.model_path)
    except (DatasetError, PolicyError, ModelNotFoundError, ValidationError, OSError) as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    if args.limit is not None:
        items = items[: args.limit]
    defaults = settings.local.sampling
    sampling = SamplingParams(
        temperature=0.0, top_p=defaults.top_p, top_k=defaults.top_k, min_p=defaults.min_p
    )
    engines: list[Engine] = []

    def generate(item: EvalItem) -> LocalAnswer:
        if not engines:  # loaded on the first uncached item: a resumed run may need none
            engines.append(load_llama_engine(settings))
        engine = engines[0]
        if item.prompt is not None:
            prompt = engine.tokenizer.tokenize(item.prompt)
        else:
            turns = [
                ChatMessage(role=m["role"], content=m["content"]) for m in item.chat_messages()
            ]
            prompt = engine.tokenizer.tokenize_chat(turns)
        request = GenerationRequest(
            prompt_tokens=tuple(prompt), max_tokens=args.max_tokens, sampling=sampling
        )

        async def one() -> LocalAnswer:
            result = await engine.submit(request).result()
            logprobs = tuple(token.logprob for token in result.tokens)
            return LocalAnswer(text=result.text, logprobs=logprobs, prompt_tokens=len(prompt))

        return asyncio.run(one())

    try:
        outputs = run_eval(
            items,
            policy,
            generate,
            out=args.out,
            model=str(model_path),
            max_tokens=args.max_tokens,
            progress=sys.stderr,
        )
    finally:
        for engine in engines:
            asyncio.run(engine.aclose())
    sys.stdout.write(format_table(outputs.result))
    sys.stdout.write(f"wrote {outputs.json_path} and {outputs.png_path}\n")
    return 0


def _configure_access_log(enabled: bool) -> None:
    """Bare JSON lines, one per completion request, ready for a log shipper."""
    access = logging.getLogger("gateway.access")
    access.propagate = False
    if not enabled:
        access.disabled = True
        return
    # One write per line, on the event loop. A listener thread (QueueHandler) was
    # measured worse: at concurrency 16 its GIL hand-offs cost the loop 20% of
    # throughput (bench/ledger_overhead.py).
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access.addHandler(handler)
    access.setLevel(logging.INFO)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


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
        help="ledger SQLite file (default: GATEWAY_LEDGER__PATH, else "
        "hybrid-gateway-ledger.sqlite3)",
    )
    output = report.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="the summary as /v1/usage's JSON")
    output.add_argument("--csv", action="store_true", help="every record as CSV (with costs)")
    output.add_argument("--jsonl", action="store_true", help="every record as JSON lines")
    report.add_argument(
        "--plot", type=Path, metavar="PNG", help="also draw latency, spend and route share"
    )
    report.set_defaults(handler=_report)
    evaluate = commands.add_parser(
        "eval",
        help="answer a JSONL dataset with the local model (greedy), score the gate's "
        "signals and calibrate its threshold (no cloud calls yet: gold answers stand in)",
    )
    evaluate.add_argument("dataset", type=Path, help="the dataset (JSON lines)")
    evaluate.add_argument(
        "--policy", type=Path, help="routing policy YAML (default: the built-in policy)"
    )
    evaluate.add_argument("--limit", type=_positive, help="only the first N items")
    evaluate.add_argument(
        "--out",
        type=Path,
        default=Path("eval-out"),
        help="directory for cache.jsonl, eval.json and deferral.png (default: eval-out)",
    )
    evaluate.add_argument(
        "--max-tokens", type=_positive, default=64, help="completion tokens per item (default: 64)"
    )
    evaluate.set_defaults(handler=_eval)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = args.handler
    code: int = handler(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
