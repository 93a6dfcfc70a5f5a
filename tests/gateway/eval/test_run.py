"""The eval pipeline end to end on a fake generator, and once on the real model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.eval.dataset import EvalItem, load_jsonl
from gateway.eval.report import format_table
from gateway.eval.run import CLOUD_STAND_IN, LocalAnswer, run_eval
from router import default_policy

ROOT = Path(__file__).resolve().parents[3]

# Right, wrong, right, wrong; min log-probs -0.2, -2.0, -4.0, -5.0.
ANSWERS = {
    "a": LocalAnswer("Paris.", (-0.1, -0.2), prompt_tokens=10),
    "b": LocalAnswer("Lyon", (-2.0, -0.5), prompt_tokens=30),
    "c": LocalAnswer("It is 4", (-0.3, -4.0), prompt_tokens=20),
    "d": LocalAnswer("blue", (-5.0,), prompt_tokens=40),
}
DATASET = [
    {"id": "a", "prompt": "Capital of France?", "answers": ["Paris"]},
    {"id": "b", "prompt": "Capital of Japan?", "answers": ["Tokyo"]},
    {"id": "c", "prompt": "2+2?", "answers": ["4"], "match": "number"},
    {
        "id": "d",
        "messages": [{"role": "user", "content": "Colour of grass?"}],
        "answers": ["green"],
    },
]


class FakeGenerator:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, item: EvalItem) -> LocalAnswer:
        self.calls.append(item.id)
        return ANSWERS[item.id]


def _items(tmp_path: Path) -> list[EvalItem]:
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in DATASET), encoding="utf-8")
    return load_jsonl(path)


def test_numbers_cache_and_plot(tmp_path: Path) -> None:
    items = _items(tmp_path)
    out = tmp_path / "out"
    generate = FakeGenerator()
    outputs = run_eval(items, default_policy(), generate, out=out, model="fake.gguf", max_tokens=8)
    assert generate.calls == ["a", "b", "c", "d"]

    result = json.loads(outputs.json_path.read_text(encoding="utf-8"))
    assert result["cloud_is_gold_stand_in"] is True
    assert CLOUD_STAND_IN in result["notes"]
    assert result["local_accuracy"] == 0.5
    assert result["cloud_accuracy"] == 1.0
    # Right answers score -0.2 and -4.0, wrong ones -2.0 and -5.0: 3 of 4 pairs ordered.
    assert result["auroc"]["min"] == 0.75
    assert [row["correct"] for row in result["per_item"]] == [True, False, True, False]

    # Gate on min: deferring d, c, b, a gives PGR 0, .5, .5, 1, 1 at shares 0 .. 1.
    policy_curve = result["curves"]["policy"]
    assert policy_curve["apgr"] == pytest.approx(0.625)
    assert policy_curve["cpt50"] == pytest.approx(0.25)
    assert policy_curve["cpt80"] == pytest.approx(0.65)
    assert result["curves"]["oracle"]["apgr"] == pytest.approx(0.75)
    assert result["curves"]["random"]["apgr"] == pytest.approx(0.5)
    # Share 0.65 of 4 rounds to 3 items: escalate below the 4th lowest min, -0.2.
    assert result["calibration"]["threshold"] == -0.2
    # The default threshold -3.0 escalates c and d.
    assert result["gate"]["cloud_share_at_threshold"] == 0.5

    png = outputs.png_path.read_bytes()
    assert len(png) > 1000
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    table = format_table(outputs.result)
    assert table.startswith(f"*** {CLOUD_STAND_IN}")

    # A second run reads every answer from the cache and agrees.
    again = FakeGenerator()
    rerun = run_eval(items, default_policy(), again, out=out, model="fake.gguf", max_tokens=8)
    assert again.calls == []
    assert rerun.result == outputs.result

    # Another max_tokens is another cache key.
    other = FakeGenerator()
    run_eval(items[:1], default_policy(), other, out=out, model="fake.gguf", max_tokens=16)
    assert other.calls == ["a"]


def test_interrupted_run_resumes(tmp_path: Path) -> None:
    items = _items(tmp_path)
    out = tmp_path / "out"
    run_eval(items[:2], default_policy(), FakeGenerator(), out=out, model="m", max_tokens=8)
    with (out / "cache.jsonl").open("a", encoding="utf-8") as cache:
        cache.write('{"id": "c", "model": "m", "max_t')  # killed mid-write
    generate = FakeGenerator()
    run_eval(items, default_policy(), generate, out=out, model="m", max_tokens=8)
    assert generate.calls == ["c", "d"]


@pytest.mark.model
def test_cli_on_the_real_model(tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    rows = [
        {"prompt": "What is the capital of France?", "answers": ["Paris"]},
        {"messages": [{"role": "user", "content": "What is 2+2?"}], "answers": ["4"]},
        {"messages": [{"role": "user", "content": "Capital of Japan?"}], "answers": ["Tokyo"]},
    ]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["GATEWAY_LEDGER__PATH"] = str(tmp_path / "ledger.sqlite3")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "gateway.cli", "eval", str(data), "--limit", "3"]
    done = subprocess.run(
        [*command, "--max-tokens", "8", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert (out / "eval.json").is_file()
    assert CLOUD_STAND_IN in done.stdout
    assert json.loads((out / "eval.json").read_text(encoding="utf-8"))["items"] == 3
