"""``eval`` and ``calibrate`` output: the table on stdout and the deferral-curve PNG.

matplotlib is imported inside the function and used through ``Figure`` with
the Agg canvas, never pyplot (as in :mod:`gateway.ledger.plot`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_LABELS = {
    "policy": "policy gate",
    "calibrated": "calibrated",
    "length": "length-only",
    "random": "random",
    "oracle": "oracle",
}
_ROUTINGS = {
    "all_local": "all local",
    "all_cloud": "all cloud",
    "gate": "gate",
    "policy": "rules + gate",
}


#: fit-free signals, in table order; the entropy ones are listed only when measured
_SIGNALS = ("mean", "min", "quantile", "first_k_min")
_ENTROPY_SIGNALS = (
    "neg_mean_entropy",
    "neg_max_entropy",
    "neg_entropy_quantile",
    "neg_first_k_mean_entropy",
    "neg_first_k_max_entropy",
)


def _signals(result: dict[str, Any]) -> list[str]:
    measured = [name for name in _ENTROPY_SIGNALS if name in result["curves"]]
    return [*_SIGNALS, *measured, "logistic"]


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _banner(result: dict[str, Any]) -> str:
    return f"*** {result['notes'][0]} ***"


def _intro(result: dict[str, Any]) -> list[str]:
    cloud = "gold stand-in" if result["cloud_is_gold_stand_in"] else result["cloud"]
    return [
        _banner(result),
        f"dataset: {result['dataset']}   items: {result['items']}   seed: {result['seed']}   "
        f"model: {result['model']}   max tokens: {result['max_tokens']}   decoding: greedy",
        f"local accuracy: {_num(result['local_accuracy'])}   "
        f"cloud accuracy: {_num(result['cloud_accuracy'])} ({cloud})",
    ]


def _curve_table(result: dict[str, Any], names: list[str], beats: dict[str, Any]) -> list[str]:
    lines = [
        f"  {'router':<26} {'AUROC':>6} {'APGR':>6} {'gain':>6} {'CPT50':>6} {'CPT80':>6} "
        f"{'AUC':>6}" + ("  beaten by calibrated" if beats else "")
    ]
    for name in names:
        curve = result["curves"].get(name)
        if curve is None:
            lines.append(f"  {name:<26} (not available: cannot be fitted on these items)")
            continue
        label = _LABELS.get(name, name)
        if name in ("policy", "calibrated"):
            label = f"{label} ({result['gate' if name == 'policy' else 'fitted']['signal']})"
        mark = ""
        if name in beats:
            mark = {True: "  yes", False: "  NO", None: "  n/a"}[beats[name]]
        lines.append(
            f"  {label:<26} {_num(result['auroc'].get(name)):>6} {_num(curve['apgr']):>6} "
            f"{_num(curve['gain']):>6} {_num(curve['cpt50']):>6} {_num(curve['cpt80']):>6} "
            f"{_num(curve['auc']):>6}{mark}"
        )
    return lines


def _latency(summary: dict[str, Any]) -> str:
    overall = summary["latency"]["all"]
    if overall.get("measured"):
        return f"{overall['mean_s']:.2f} / {overall['p95_s']:.2f}"
    kept = summary["latency"]["local"]
    if kept["n"] and kept.get("measured"):
        return f"kept local {kept['mean_s']:.2f} / {kept['p95_s']:.2f}; cloud not measured"
    return "not measured"


def _routing_table(result: dict[str, Any]) -> list[str]:
    lines = [
        f"  {'routing':<13} {'accuracy':>8} {'to cloud':>8} {'$ per 1k':>10}  latency s mean / p95"
    ]
    for name, label in _ROUTINGS.items():
        summary = result["routing"][name]
        share = 1.0 - summary["share"]["local"]
        cost = f"{summary['usd_per_1k']:.4f}" + ("*" if summary["cloud_usd_estimated"] else " ")
        lines.append(
            f"  {label:<13} {_num(summary['accuracy']):>8} {_num(share, 2):>8} {cost:>10}  "
            f"{_latency(summary)}"
        )
    if any(result["routing"][name]["cloud_usd_estimated"] for name in _ROUTINGS):
        lines.append(
            "  * cloud cost estimated: local token counts at the cloud price (ledger prices)"
        )
    rules = result["rules"]
    lines.append(
        f"  the policy's rules send {_num(rules['cloud'], 2)} of items to the cloud before "
        f"generation, keep {_num(rules['local'], 2)} local and gate "
        f"{_num(rules['local_then_check'], 2)}"
    )
    return lines


def format_eval(result: dict[str, Any]) -> str:
    """The human summary of an eval.json dict; the cloud note comes first and last."""
    gate = result["gate"]
    names = ["policy", *_signals(result), "length", "random", "oracle"]
    lines = [
        *_intro(result),
        "",
        "How well each signal routes (AUROC: ranks right answers above wrong ones; gain: "
        "0 = random, 1 = oracle)",
        *_curve_table(result, names, {}),
        f"  ({result['notes'][2]})",
        "",
        f"At the policy's threshold ({gate['signal']} < {gate['threshold']:g}, "
        f"{_num(gate['cloud_share_at_threshold'], 2)} of items escalated):",
        *_routing_table(result),
        "",
        "To fit the gate on part of the data and measure it on the rest: hybrid-gateway calibrate",
        _banner(result),
    ]
    return "\n".join(lines) + "\n"


def format_calibration(result: dict[str, Any], policy_path: Path | None = None) -> str:
    """The human summary of a calibration.json dict: the fit, then held-out numbers only."""
    split, fitted, target = result["split"], result["fitted"], result["target"]
    at = result["at_threshold"]
    kind = "cloud share" if target["kind"] == "cloud_share" else "PGR"
    # The calibrated row is the fitted signal; its uncalibrated twin would repeat it.
    names = [
        "calibrated",
        *(name for name in _signals(result) if name != fitted["signal"]),
        "length",
        "random",
        "oracle",
    ]
    lines = [
        _banner(result),
        f"fitted on {split['calibration']['items']} calibration items "
        f"(fraction {split['calibration_fraction']:g}, seed {split['seed']}): signal "
        f"{fitted['signal']}, target {kind} {target['value']:g} -> threshold "
        f"{fitted['threshold']:.6g} (cloud share "
        f"{_num(split['calibration']['cloud_share_at_threshold'], 2)} on the calibration split)",
        "",
        f"HELD-OUT ONLY ({result['items']} items the fit never saw):",
        *_intro(result)[1:],
        *_curve_table(result, names, result["beats"]),
        "",
        f"At the fitted threshold: cloud share {_num(at['cloud_share'], 2)}, accuracy "
        f"{_num(at['accuracy'])}, PGR {_num(at['pgr'])}",
        *_routing_table(result),
    ]
    if policy_path is not None:
        lines += ["", f"policy with the fitted gate: {policy_path}"]
    lines.append(_banner(result))
    return "\n".join(lines) + "\n"


def plot_curves(result: dict[str, Any], path: Path, *, names: tuple[str, ...], title: str) -> None:
    """Write the named deferral curves (quality over cloud share) as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for name in names:
        curve = result["curves"].get(name)
        if curve is None:
            continue
        shares = [point[0] for point in curve["points"]]
        quality = [point[1] for point in curve["points"]]
        linestyle = "--" if name in ("random", "oracle") else "-"
        axes.plot(
            shares,
            quality,
            linestyle=linestyle,
            label=f"{_LABELS.get(name, name)} (APGR {_num(curve['apgr'])})",
        )
    axes.set_xlim(0, 1)
    axes.set_ylim(-0.02, 1.02)
    axes.set_xlabel("share of items sent to the cloud")
    axes.set_ylabel("accuracy")
    axes.set_title(f"{title}, {result['items']} items")
    # Where the cloud's answers came from must be visible on the picture too.
    stand_in = result["cloud_is_gold_stand_in"]
    figure.suptitle(result["notes"][0], fontsize=9, color="#b00020" if stand_in else "black")
    axes.legend(loc="lower right")
    figure.savefig(path, format="png")
