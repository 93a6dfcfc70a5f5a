"""``eval`` output: the table on stdout and the deferral-curve PNG.

matplotlib is imported inside the function and used through ``Figure`` with
the Agg canvas, never pyplot (as in :mod:`gateway.ledger.plot`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.eval.run import CLOUD_STAND_IN, CURVES, LOGISTIC_NOTE, SIGNALS

_LABELS = {
    "policy": "policy gate",
    "length": "length-only",
    "random": "random",
    "oracle": "oracle",
}


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def format_table(result: dict[str, Any]) -> str:
    """The human summary of an eval.json dict; the stand-in warning comes first and last."""
    banner = f"*** {CLOUD_STAND_IN} ***"
    gate, calibration = result["gate"], result["calibration"]
    lines = [
        banner,
        f"items: {result['items']}   model: {result.get('model', '?')}   "
        f"max tokens: {result.get('max_tokens', '?')}   decoding: greedy (temperature 0)",
        f"local accuracy: {_num(result['local_accuracy'])}   "
        f"cloud accuracy: {_num(result['cloud_accuracy'])} (gold stand-in)",
        "",
        "AUROC (does the signal rank right answers above wrong ones?)",
    ]
    for name in SIGNALS:
        note = f"   ({LOGISTIC_NOTE})" if name == "logistic" else ""
        lines.append(f"  {name:<12} {_num(result['auroc'][name])}{note}")
    lines += ["", f"  {'curve':<12} {'APGR':>6} {'CPT50':>6} {'CPT80':>6} {'AUC':>6}"]
    for name in CURVES:
        curve = result["curves"][name]
        lines.append(
            f"  {_LABELS[name]:<12} {_num(curve['apgr']):>6} {_num(curve['cpt50']):>6} "
            f"{_num(curve['cpt80']):>6} {_num(curve['auc']):>6}"
        )
    lines += [
        "",
        f"gate now: signal {gate['signal']}, threshold {gate['threshold']:g} "
        f"-> cloud share {_num(gate['cloud_share_at_threshold'])}",
        f"calibration: for CPT(80%) (cloud share {_num(calibration['cloud_share'])}) set "
        f"gate.threshold to {_num(calibration['threshold'], 4)} (signal {calibration['signal']})",
        banner,
    ]
    return "\n".join(lines) + "\n"


def plot_curves(result: dict[str, Any], path: Path) -> None:
    """Write the four deferral curves (quality over cloud share) as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for name in CURVES:
        curve = result["curves"][name]
        shares = [point[0] for point in curve["points"]]
        quality = [point[1] for point in curve["points"]]
        linestyle = "--" if name in ("random", "oracle") else "-"
        axes.plot(
            shares,
            quality,
            linestyle=linestyle,
            label=f"{_LABELS[name]} (APGR {_num(curve['apgr'])})",
        )
    axes.set_xlim(0, 1)
    axes.set_ylim(-0.02, 1.02)
    axes.set_xlabel("share of items sent to the cloud")
    axes.set_ylabel("accuracy")
    axes.set_title(f"deferral curves, {result['items']} items")
    # The stand-in must be visible on the picture too, not just in the JSON.
    figure.suptitle(CLOUD_STAND_IN, fontsize=9, color="#b00020")
    axes.legend(loc="lower right")
    figure.savefig(path, format="png")
