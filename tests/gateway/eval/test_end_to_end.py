"""``hybrid-gateway eval`` then ``calibrate`` with the real model on a handful of items,
then ``eval`` again with a real (loopback) cloud."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from gateway.eval.builtin import load_builtin
from gateway.eval.dataset import EvalItem
from gateway.eval.run import CLOUD_STAND_IN
from gateway.eval.split import select
from router import load_policy
from tests.integration.conftest import ServerThread

ROOT = Path(__file__).resolve().parents[3]


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.model
def test_eval_then_calibrate_on_the_real_model(tmp_path: Path, model_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["GATEWAY_LOCAL__MODEL_PATH"] = str(model_path)
    env["GATEWAY_LEDGER__PATH"] = str(tmp_path / "ledger.sqlite3")
    out = tmp_path / "out"
    common = ["builtin:triviaqa", "--limit", "6", "--max-tokens", "8", "--out", str(out)]

    done = _run(["eval", *common], env)
    assert done.returncode == 0, done.stderr
    assert CLOUD_STAND_IN in done.stdout
    result = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    assert result["items"] == 6
    assert result["dataset"] == "builtin:triviaqa"
    expected_ids = [item.id for item in select(load_builtin("triviaqa"), seed=0, limit=6)]
    assert [row["id"] for row in result["per_item"]] == expected_ids
    assert all(row["answer"] and 1 <= row["tokens"] <= 8 for row in result["per_item"])
    assert all(row["local_seconds"] > 0 for row in result["per_item"])
    assert result["routing"]["all_local"]["latency"]["all"]["measured"] is True
    assert result["routing"]["all_cloud"]["latency"]["all"]["mean_s"] is None
    assert (out / "eval.png").read_bytes().startswith(b"\x89PNG")
    cached = (out / "cache.jsonl").read_text(encoding="utf-8")
    assert len(cached.splitlines()) == 6
    # Every token's entropy is cached beside its log-probability.
    for line in cached.splitlines():
        answer = json.loads(line)["answer"]
        assert len(answer["entropies"]) == len(answer["logprobs"]) >= 1
        assert all(h >= 0 for h in answer["entropies"])
    assert result["auroc"].keys() >= {"neg_mean_entropy", "neg_entropy_quantile"}

    done = _run(
        ["calibrate", *common, "--signal", "min", "--target-cloud-share", "0.5"],
        env,
    )
    assert done.returncode == 0, done.stderr
    assert "HELD-OUT ONLY (3 items" in done.stdout
    # The answers came from eval's cache: nothing was generated again.
    assert (out / "cache.jsonl").read_text(encoding="utf-8") == cached
    written = out / "calibration-min-share0.5-seed0.json"
    calibration = json.loads(written.read_text(encoding="utf-8"))
    held = calibration["split"]["held_out_ids"]
    assert len(held) == 3
    assert set(held) < set(expected_ids)
    assert [row["id"] for row in calibration["per_item"]] == held
    policy = load_policy(out / "policy-min-share0.5-seed0.yaml")
    assert policy.gate.signal == "min"
    assert policy.gate.threshold == calibration["fitted"]["threshold"]

    # An entropy signal, from the same cache.
    done = _run(
        ["calibrate", *common, "--signal", "neg_max_entropy", "--target-cloud-share", "0.5"],
        env,
    )
    assert done.returncode == 0, done.stderr
    assert (out / "cache.jsonl").read_text(encoding="utf-8") == cached
    policy = load_policy(out / "policy-neg_max_entropy-share0.5-seed0.yaml")
    assert policy.gate.signal == "neg_max_entropy"
    assert policy.gate.threshold <= 0.0

    # The same items with a real cloud on loopback: local answers come from the cache,
    # the cloud's are asked for, scored and timed.
    items = select(load_builtin("triviaqa"), seed=0, limit=6)
    known = {_prompt(item): item.answers[0] for item in items[:4]}
    with ServerThread(_cloud_app(known)) as cloud:
        env["GATEWAY_CLOUD__BASE_URL"] = f"{cloud.url}/v1"
        env["GATEWAY_CLOUD__MODEL"] = "loopback-model"
        done = _run(["eval", *common], env)
    assert done.returncode == 0, done.stderr
    assert CLOUD_STAND_IN not in done.stdout
    result = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    assert result["cloud"] == f"loopback-model at {cloud.url}/v1"
    assert result["cloud_accuracy"] == pytest.approx(4 / 6)
    assert [row["cloud_correct"] for row in result["per_item"]] == [True] * 4 + [False] * 2
    all_cloud = result["routing"]["all_cloud"]
    assert all_cloud["cloud_usd_estimated"] is False
    assert all_cloud["latency"]["all"]["mean_s"] > 0
    lines = (out / "cache.jsonl").read_text(encoding="utf-8").splitlines()
    assert lines[:6] == cached.splitlines()
    assert len(lines) == 12


def _prompt(item: EvalItem) -> str:
    return item.chat_messages()[-1]["content"]


def _cloud_app(known: dict[str, str]) -> FastAPI:
    """An OpenAI-compatible chat endpoint that knows some answers."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(body: dict[str, Any]) -> dict[str, Any]:
        assert body["temperature"] == 0.0 and body["max_tokens"] == 8
        content = known.get(body["messages"][-1]["content"], "No idea.")
        return {
            "id": "c",
            "object": "chat.completion",
            "created": 1,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 30, "completion_tokens": 4, "total_tokens": 34},
        }

    return app
