"""gateway.jsonio: orjson where it can, json's leniency where orjson refuses."""

from __future__ import annotations

import json
import math

import pytest

from gateway import jsonio


def test_round_trip_is_compact_utf8() -> None:
    value = {"a": [1, 2.5, None, True], "text": 'héllo \u2028 "quoted"', "nested": {"x": ""}}
    data = jsonio.dumps(value)
    assert data == json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    assert jsonio.loads(data) == value
    assert jsonio.loads(data.decode()) == value


def test_what_orjson_refuses_to_write_falls_back_to_json() -> None:
    huge = {"n": 2**80, 3: "int key"}
    assert json.loads(jsonio.dumps(huge)) == {"n": 2**80, "3": "int key"}


def test_non_finite_floats_are_written_as_null() -> None:
    assert jsonio.loads(jsonio.dumps([math.nan, math.inf, -math.inf])) == [None, None, None]


def test_nan_literals_are_read_as_json_reads_them() -> None:
    value = jsonio.loads(b'{"x": NaN, "y": -Infinity}')
    assert math.isnan(value["x"]) and value["y"] == -math.inf


def test_not_json_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        jsonio.loads(b"{not json")


def test_json_body_renders_with_orjson() -> None:
    body = jsonio.JSONBody({"a": "é", "b": 2**70}, status_code=201)
    assert body.body == '{"a":"é","b":1180591620717411303424}'.encode()
    assert body.status_code == 201 and body.media_type == "application/json"


def test_a_lone_surrogate_is_written_as_an_escape() -> None:
    value = {"model": json.loads('"a\\ud800b"'), "ok": "é"}  # as json decodes the escape
    data = jsonio.dumps(value)
    assert data == b'{"model":"a\\ud800b","ok":"\\u00e9"}'
    assert json.loads(data) == value
