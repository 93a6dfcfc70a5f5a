"""``hybrid-gateway report``, run in-process (test_usage runs it as a subprocess)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.ledger.plot import bucket_seconds
from gateway.ledger.store import COLUMN_NAMES, PAGE_ROWS
from tests.gateway.ledger.conftest import sample_rows, write_rows
from tests.gateway.ledger.rows import row

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_table_report(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--db", str(db), "--since", "all"]) == 0
    out = capsys.readouterr().out
    assert "requests: 6   degraded: 1   escalation rate: 33.3% (1 of 3 judged locally)" in out
    assert "window: the beginning to now" in out
    local = next(line for line in out.splitlines() if line.startswith("local "))
    # 3 requests, 50% share, ttft p50/p95/p99, total p50/p95/p99
    assert local.split() == ["local", "3", "50.0%", "0.200", "0.400", "0.400"] + [
        "2.000",
        "5.000",
        "5.000",
    ]
    assert "all-cloud counterfactual" in out
    assert "energy: not estimated" in out


def test_csv_has_one_row_per_record(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--db", str(db), "--since", "all", "--csv"]) == 0
    reader = csv.DictReader(io.StringIO(capsys.readouterr().out))
    rows = list(reader)
    assert reader.fieldnames == list(COLUMN_NAMES)
    assert len(rows) == 6
    assert [r["request_id"] for r in rows] == [f"s{i}" for i in range(6)]
    assert rows[4]["route"] == ""  # None as an empty cell


def test_jsonl_has_one_line_per_record(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--db", str(db), "--since", "all", "--jsonl"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6
    first = json.loads(lines[0])
    assert list(first) == list(COLUMN_NAMES)
    assert first["stream"] is False
    assert json.loads(lines[2])["route"] == "local->cloud"


def test_window_limits_the_export(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["report", "--db", str(db), "--jsonl"]
    assert main([*argv, "--since", "2026-09-21T14:23:20Z", "--until", "2026-09-21T14:43:20Z"]) == 0
    ids = [json.loads(line)["request_id"] for line in capsys.readouterr().out.splitlines()]
    assert ids == ["s1", "s2"]


def test_plot_writes_a_png(tmp_path: Path, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # more rows over three days so that the time panels have several buckets
    write_rows(db, sample_rows(start=1_790_100_000.0) + sample_rows(start=1_790_250_000.0))
    png = tmp_path / "usage.png"
    assert main(["report", "--db", str(db), "--since", "all", "--plot", str(png)]) == 0
    data = png.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 10_000
    assert f"wrote {png} (18 records)" in capsys.readouterr().err


def test_empty_ledger_says_so_and_still_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "empty.sqlite3"
    write_rows(db, [])
    png = tmp_path / "empty.png"
    assert main(["report", "--db", str(db), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "no records in this window" in out
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    assert main(["report", "--db", str(db), "--csv"]) == 0
    assert capsys.readouterr().out.splitlines() == [",".join(COLUMN_NAMES)]


def test_default_database_comes_from_the_environment(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_LEDGER__PATH", str(db))
    assert main(["report", "--since", "all", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["requests"] == 6


def test_missing_database_and_bad_window_fail_clearly(
    tmp_path: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    absent = tmp_path / "absent.sqlite3"
    assert main(["report", "--db", str(absent)]) == 1
    assert f"no ledger database at {absent}" in capsys.readouterr().err
    assert not absent.exists()  # not created by looking
    assert main(["report", "--db", str(db), "--since", "last week"]) == 2
    assert "invalid --since/--until" in capsys.readouterr().err


def test_bucket_width_keeps_the_share_panel_readable() -> None:
    assert bucket_seconds(0) == 60
    assert bucket_seconds(30 * 60) == 60
    assert bucket_seconds(2 * 3600) == 300
    assert bucket_seconds(24 * 3600) == 3600
    assert bucket_seconds(365 * 86400) == 7 * 86400


def test_exports_span_several_pages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "many.sqlite3"
    count = 2 * PAGE_ROWS + 500
    write_rows(db, [row(request_id=f"m{n}", started_at=1000.0 + n // 3) for n in range(count)])
    assert main(["report", "--db", str(db), "--since", "all", "--csv"]) == 0
    ids = [r["request_id"] for r in csv.DictReader(io.StringIO(capsys.readouterr().out))]
    assert ids == [f"m{n}" for n in range(count)]
    assert main(["report", "--db", str(db), "--since", "all", "--jsonl"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == count
