"""``eval`` and ``calibrate`` arguments: bad input stops before any model is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import build_parser, main


def test_arguments_and_defaults() -> None:
    args = build_parser().parse_args(["calibrate", "builtin:triviaqa"])
    assert args.signal == "logistic"
    assert args.target_pgr is None and args.target_cloud_share is None
    assert args.calibration_fraction == 0.5
    assert args.seed == 0
    assert args.out == Path("eval-out")
    assert args.max_tokens is None  # the dataset decides
    args = build_parser().parse_args(["eval", "data.jsonl", "--limit", "5", "--seed", "3"])
    assert (args.dataset, args.limit, args.seed) == ("data.jsonl", 5, 3)


@pytest.mark.parametrize(
    "argv",
    [
        ["calibrate", "d", "--target-pgr", "0.5", "--target-cloud-share", "0.2"],
        ["calibrate", "d", "--target-pgr", "1.5"],
        ["calibrate", "d", "--calibration-fraction", "1"],
        ["calibrate", "d", "--signal", "loudest"],
        ["eval", "d", "--limit", "0"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(argv)
    assert caught.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_unknown_builtin_and_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["eval", "builtin:mmlu", "--out", str(tmp_path)]) == 2
    assert "choose one of triviaqa, sciq, arc_easy, boolq, arithmetic, gsm8k" in (
        capsys.readouterr().err
    )
    assert main(["calibrate", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path)]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
    assert not (tmp_path / "cache.jsonl").exists()


def test_a_bad_policy_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("gate:\n  threshold: 2\n", encoding="utf-8")
    argv = ["eval", "builtin:arc_easy", "--policy", str(policy), "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "gate.threshold" in capsys.readouterr().err
