"""The access log: straight to the stream under serve's set-up, through logging otherwise."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from gateway import access_log
from gateway.ledger.record import LedgerRecord
from tests.gateway.ledger.rows import record

FIELDS = {"request_id": "req_1", "status": 200, "total_seconds": 0.25, "route": "cloud"}


def _line(fields: dict[str, object]) -> bytes:
    return json.dumps(fields).encode() + b"\n"


@pytest.fixture(autouse=True)
def pristine_logger() -> Iterator[logging.Logger]:
    """The access logger as the test found it, whatever the test configured."""
    logger = access_log.logger
    saved = (logger.handlers[:], logger.filters[:], logger.propagate, logger.disabled, logger.level)
    yield logger
    logger.handlers[:], logger.filters[:] = saved[0], saved[1]
    logger.propagate, logger.disabled = saved[2], saved[3]
    logger.setLevel(saved[4])


class Counting(logging.Filter):
    """Lets everything through, counting the records it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def filter(self, record: logging.LogRecord) -> bool:
        self.seen += 1
        return True


def test_serve_setup_writes_bare_json_lines_without_log_records() -> None:
    stream = io.StringIO()
    access_log.configure(True, stream)
    (handler,) = access_log.logger.handlers
    spy = Counting()
    handler.addFilter(spy)  # any filter takes the logging path: check both ways
    access_log.write(_line(FIELDS))
    handler.removeFilter(spy)
    access_log.write(_line({**FIELDS, "request_id": "req_2"}))

    lines = stream.getvalue().splitlines()
    assert [json.loads(line) for line in lines] == [FIELDS, {**FIELDS, "request_id": "req_2"}]
    assert spy.seen == 1  # the first line went through a record, the second did not


def test_other_setups_get_log_records(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.access")
    assert access_log.enabled()
    access_log.write(_line(FIELDS))
    (record,) = [r for r in caplog.records if r.name == "gateway.access"]
    assert record.levelno == logging.INFO
    assert json.loads(record.getMessage()) == FIELDS


def test_a_logger_filter_is_honoured_under_serve_setup() -> None:
    stream = io.StringIO()
    access_log.configure(True, stream)

    class DropAll(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return False

    access_log.logger.addFilter(DropAll())
    access_log.write(_line(FIELDS))
    assert stream.getvalue() == ""


def test_disabled_means_not_enabled_and_nothing_written() -> None:
    stream = io.StringIO()
    access_log.configure(False, stream)
    assert not access_log.enabled()
    assert stream.getvalue() == ""


def test_a_failing_stream_falls_back_to_logging_error_handling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Broken(io.StringIO):
        def write(self, s: str) -> int:
            raise OSError("disk full")

    access_log.configure(True, Broken())
    reported: list[logging.LogRecord | None] = []
    (handler,) = access_log.logger.handlers
    monkeypatch.setattr(handler, "handleError", reported.append)
    access_log.write(_line(FIELDS))  # must not raise into the request
    assert len(reported) == 1 and reported[0] is not None
    assert json.loads(reported[0].getMessage()) == FIELDS


def _record(**fields: object) -> LedgerRecord:
    return replace(
        record(route="cloud", reason="long", cloud_model="m", ttft_seconds=0.01), **fields
    )


def _by_hand(rec: LedgerRecord, cost: float, savings: float) -> dict[str, object]:
    fields = {k: v for k, v in asdict(rec).items() if k not in ("prompt_text", "completion_text")}
    return {**fields, "cost_usd": cost, "savings_usd": savings}


@pytest.mark.parametrize(
    "rec",
    [
        _record(),
        _record(prompt_text="user: secret", completion_text="answer"),  # the dict way
        _record(route=None, reason=None, error="invalid_request_error", status=400),
    ],
)
def test_a_line_has_every_field_but_content_then_the_costs(rec: LedgerRecord) -> None:
    data = access_log.line(rec, cost_usd=0.00125, savings_usd=-1e-06)
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    parsed = json.loads(data)
    assert parsed == _by_hand(rec, 0.00125, -1e-06)
    assert list(parsed) == list(_by_hand(rec, 0.00125, -1e-06))  # the same order too


def test_serve_setup_on_stderr_writes_to_its_descriptor_in_order(tmp_path: Path) -> None:
    path = tmp_path / "stderr"
    # What sys.stderr is: a text layer writing through to an unbuffered file.
    stream = io.TextIOWrapper(io.FileIO(path, "w"), write_through=True)
    try:
        access_log.configure(True, stream)
        (handler,) = access_log.logger.handlers
        assert isinstance(handler, access_log.JsonLinesHandler) and handler._fd is not None
        stream.write("before\n")
        access_log.write(_line(FIELDS))
        stream.write("after\n")
    finally:
        stream.close()
    assert path.read_text().splitlines() == ["before", json.dumps(FIELDS), "after"]


def test_a_field_utf8_cannot_carry_still_gives_a_json_line() -> None:
    rec = _record(request_id="req-\ud800")  # a lone surrogate, as json can decode one
    data = access_log.line(rec, cost_usd=0.0, savings_usd=0.0)
    assert json.loads(data) == _by_hand(rec, 0.0, 0.0)
