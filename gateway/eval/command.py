"""``hybrid-gateway eval`` and ``hybrid-gateway calibrate``: arguments and wiring.

Importing this module is cheap (argparse only): the model, the cloud client,
pyarrow and matplotlib are imported when a command runs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

if TYPE_CHECKING:
    from gateway.eval.answering import Answered
    from gateway.eval.costs import Prices
    from gateway.eval.dataset import EvalItem
    from gateway.eval.run import RunInfo
    from gateway.settings import Settings
    from router import Policy

DEFAULT_MAX_TOKENS = 64
DEFAULT_TARGET_PGR = 0.8


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _unit(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def _open_unit(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be strictly between 0 and 1, got {value}")
    return value


def _features(text: str) -> tuple[str, ...]:
    from router.gate import Feature

    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in get_args(Feature)]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"a comma-separated list of {', '.join(get_args(Feature))}"
            + (f"; unknown: {', '.join(unknown)}" if unknown else "")
        )
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError("a feature is listed twice")
    return names


def _common(parser: argparse.ArgumentParser, out: str) -> None:
    parser.add_argument(
        "dataset",
        help="a JSON Lines file (see docs/routing-eval.md), or builtin:NAME with NAME one of "
        "triviaqa, sciq, arc_easy, boolq, arithmetic, gsm8k",
    )
    parser.add_argument(
        "--policy", type=Path, help="routing policy YAML (default: the built-in policy)"
    )
    parser.add_argument(
        "--limit", type=_positive, help="only N items, drawn by a seeded shuffle (default: all)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the item shuffle and the splits (default: 0)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(out),
        help=f"directory for cache.jsonl and the results (default: {out}); "
        "eval and calibrate can share one, and its cache",
    )
    parser.add_argument(
        "--max-tokens",
        type=_positive,
        help=f"completion tokens per item (default: the built-in dataset's, else "
        f"{DEFAULT_MAX_TOKENS})",
    )


def add_commands(commands: Any) -> None:
    """Add ``eval`` and ``calibrate`` to the CLI's subcommands."""
    from router.gate import Signal

    evaluate = commands.add_parser(
        "eval",
        help="answer a labelled dataset with the local model and the cloud (or the gold "
        "answer in its place) and measure how the policy routes it",
    )
    _common(evaluate, "eval-out")
    evaluate.set_defaults(handler=eval_command)

    calibrate = commands.add_parser(
        "calibrate",
        help="fit the gate on a calibration split, report on the held-out split only, and "
        "write the policy with the fitted gate",
    )
    _common(calibrate, "eval-out")
    calibrate.add_argument(
        "--signal",
        choices=get_args(Signal),
        default="logistic",
        help="the gate's signal: a threshold on one log-probability or entropy summary, or the "
        "logistic model over all of them (default: logistic)",
    )
    calibrate.add_argument(
        "--features",
        type=_features,
        metavar="A,B,...",
        help="the features the logistic model weighs (default: every one the answers support: "
        "the log-probability summaries, length, log_prompt_tokens and the neg_* entropy "
        "summaries); the output files' names then end in -A+B+...",
    )
    target = calibrate.add_mutually_exclusive_group()
    target.add_argument(
        "--target-cloud-share", type=_unit, metavar="X", help="escalate this share of answers"
    )
    target.add_argument(
        "--target-pgr",
        type=_unit,
        metavar="X",
        help=f"recover this fraction of the local-cloud quality gap at the smallest cloud share "
        f"(default: {DEFAULT_TARGET_PGR})",
    )
    calibrate.add_argument(
        "--calibration-fraction",
        type=_open_unit,
        default=0.5,
        help="share of the items to fit on; the rest is held out (default: 0.5)",
    )
    calibrate.add_argument(
        "--write-policy",
        type=Path,
        metavar="YAML",
        help="where to write the policy with the fitted gate (default: "
        "OUT/policy-SIGNAL-TARGET-seedS.yaml, e.g. policy-logistic-pgr0.8-seed0.yaml)",
    )
    calibrate.set_defaults(handler=calibrate_command)


@dataclass(frozen=True)
class _Run:
    items: list[EvalItem]
    policy: Policy
    settings: Settings
    info: RunInfo
    prices: Prices


def _prepare(args: argparse.Namespace) -> _Run | None:
    """Load everything a run needs; None after reporting a problem on stderr."""
    from pydantic import ValidationError

    from gateway.eval.builtin import BuiltinDatasetError, load_dataset
    from gateway.eval.costs import Prices
    from gateway.eval.dataset import DatasetError
    from gateway.eval.run import RunInfo
    from gateway.eval.split import select
    from gateway.settings import Settings
    from local_model import ModelNotFoundError
    from local_model.model_path import resolve_model_path
    from router import PolicyError, default_policy, load_policy

    try:
        dataset = load_dataset(args.dataset)
        policy = load_policy(args.policy) if args.policy is not None else default_policy()
        # The gateway's own settings (GATEWAY_* and defaults): the same model, context,
        # cloud and prices as the gateway; decoding is greedy for reproducibility.
        settings = Settings()
        model_path = resolve_model_path(settings.local.model_path)
    except (
        BuiltinDatasetError,
        DatasetError,
        PolicyError,
        ModelNotFoundError,
        ValidationError,
        OSError,
    ) as exc:
        sys.stderr.write(f"{exc}\n")
        return None
    cloud = settings.cloud
    info = RunInfo(
        dataset=dataset.name,
        model=str(model_path),
        max_tokens=args.max_tokens or dataset.max_tokens or DEFAULT_MAX_TOKENS,
        seed=args.seed,
        cloud=f"{cloud.model} at {cloud.base_url}" if cloud.configured else None,
    )
    return _Run(
        items=select(dataset.items, seed=args.seed, limit=args.limit),
        policy=policy,
        settings=settings,
        info=info,
        prices=Prices.from_settings(settings.ledger, cloud.model),
    )


async def _answer(run: _Run, out: Path) -> list[Answered]:
    from gateway.app import load_llama_engine
    from gateway.eval.answering import AnswerCache, answer_all
    from gateway.eval.models import CloudModel, LocalModel
    from local_model.types import SamplingParams

    settings = run.settings
    defaults = settings.local.sampling
    sampling = SamplingParams(
        temperature=0.0, top_p=defaults.top_p, top_k=defaults.top_k, min_p=defaults.min_p
    )
    local = LocalModel(
        lambda: load_llama_engine(settings), max_tokens=run.info.max_tokens, sampling=sampling
    )
    client = None
    cloud = None
    if settings.cloud.configured:
        from gateway.cloud import CloudClient

        client = CloudClient(settings.cloud)
        cloud = CloudModel(client, max_tokens=run.info.max_tokens, top_p=defaults.top_p)
    try:
        return await answer_all(
            run.items,
            local,
            cloud,
            cache=AnswerCache(out / "cache.jsonl"),
            model=run.info.model,
            cloud=run.info.cloud,
            max_tokens=run.info.max_tokens,
            progress=sys.stderr,
        )
    finally:
        await local.aclose()
        if client is not None:
            await client.aclose()


def _answered(run: _Run, out: Path) -> list[Answered] | None:
    from gateway.errors import GatewayError
    from local_model import LocalModelError

    try:
        return asyncio.run(_answer(run, out))
    except (GatewayError, LocalModelError) as exc:
        # GatewayError messages never carry the key (gateway.cloud redacts it).
        sys.stderr.write(
            f"answering failed: {exc}\n(answers so far are cached in {out}; rerun to resume)\n"
        )
        return None


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def eval_command(args: argparse.Namespace) -> int:
    from gateway.eval.report import format_eval
    from gateway.eval.run import PLOTTED, evaluate, write_outputs

    run = _prepare(args)
    if run is None:
        return 2
    answered = _answered(run, args.out)
    if answered is None:
        return 1
    result = evaluate(answered, run.policy, run.prices, run.info)
    outputs = write_outputs(result, args.out, "eval", plotted=PLOTTED, title="deferral curves")
    sys.stdout.write(format_eval(result))
    sys.stdout.write(f"wrote {outputs.json_path} and {outputs.png_path}\n")
    return 0


def calibrate_command(args: argparse.Namespace) -> int:
    from gateway.eval.calibrate import CALIBRATED, CalibrationError, Target, calibrate
    from gateway.eval.policy_file import write_policy
    from gateway.eval.report import format_calibration
    from gateway.eval.run import write_outputs
    from router import PolicyError

    if args.target_cloud_share is not None:
        target = Target("cloud_share", args.target_cloud_share)
    else:
        pgr = DEFAULT_TARGET_PGR if args.target_pgr is None else args.target_pgr
        target = Target("pgr", pgr)
    run = _prepare(args)
    if run is None:
        return 2
    if len(run.items) < 2:
        sys.stderr.write("calibrate needs at least two items (one to fit, one to hold out)\n")
        return 2
    answered = _answered(run, args.out)
    if answered is None:
        return 1
    try:
        result, gate = calibrate(
            answered,
            run.policy,
            run.prices,
            run.info,
            signal=args.signal,
            target=target,
            fraction=args.calibration_fraction,
            features=args.features,
        )
    except CalibrationError as exc:
        sys.stderr.write(f"cannot calibrate: {exc}\n")
        return 1
    # Named by what was fitted, so calibrations in one directory (sharing its cache)
    # do not overwrite each other.
    kind = "share" if target.kind == "cloud_share" else "pgr"
    stem = f"{args.signal}-{kind}{target.value:g}-seed{args.seed}"
    if args.features is not None:
        stem += "-" + "+".join(args.features)
    destination = args.write_policy or args.out / f"policy-{stem}.yaml"
    held = result["split"]["held_out"]
    comment = (
        f"gate fitted by hybrid-gateway calibrate on {run.info.dataset} "
        f"({result['split']['calibration']['items']} calibration items, seed {run.info.seed}),\n"
        f"target {target.describe()}; on {held['items']} held-out items: cloud share "
        f"{held['cloud_share_at_threshold']:.3f}, APGR {_fmt(result['curves'][CALIBRATED]['apgr'])}"
    )
    try:
        write_policy(destination, args.policy, gate, comment)
    except (PolicyError, OSError) as exc:
        sys.stderr.write(f"cannot write the policy: {exc}\n")
        return 1
    outputs = write_outputs(
        result,
        args.out,
        f"calibration-{stem}",
        plotted=(
            CALIBRATED,
            *(["min"] if args.signal != "min" else []),
            "length",
            "random",
            "oracle",
        ),
        title="held-out deferral curves",
    )
    sys.stdout.write(format_calibration(result, destination))
    sys.stdout.write(f"wrote {outputs.json_path} and {outputs.png_path}\n")
    return 0
