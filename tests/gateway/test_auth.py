"""Client keys, the admin key, who may call what, CORS, and the keys command."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect

from gateway import Settings, create_app
from gateway.auth import keys as keys_module
from gateway.auth.keys import (
    KEY_PREFIX,
    AuthConfigurationError,
    KeyRing,
    Principal,
    hash_key,
    new_key,
)
from gateway.auth.middleware import AuthMiddleware, access_of, bearer_token
from gateway.cli import main
from gateway.settings import AuthSettings
from tests.fakes import FakeEngine

ALICE = new_key()
BOB = new_key()
ADMIN = new_key()
STRANGER = new_key()  # well-formed, configured nowhere
SCRIPT = Path(sys.executable).with_name("hybrid-gateway")

POLICY = "version: 1\ndefault: local\n"


def _bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def _chat(text: str = "hello") -> dict[str, Any]:
    return {"model": "hybrid", "messages": [{"role": "user", "content": text}]}


def _auth(**extra: Any) -> dict[str, Any]:
    auth: dict[str, Any] = {
        "disabled": False,
        "keys": [{"id": "alice", "hash": hash_key(ALICE)}, {"id": "bob", "hash": hash_key(BOB)}],
        "admin_key_hash": hash_key(ADMIN),
    }
    auth.update(extra)
    return auth


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "ledger.sqlite3"


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


Open = Callable[..., TestClient]


@pytest.fixture
def open_app(db: Path, policy_file: Path) -> Iterator[Open]:
    """A started app with authentication on; extra keyword arguments go to Settings."""
    clients: list[TestClient] = []

    def go(auth: dict[str, Any] | None = None, **settings: Any) -> TestClient:
        engine = FakeEngine()
        merged = Settings(
            auth=auth if auth is not None else _auth(),
            ledger={"path": db},
            policy={"file": policy_file},
            **settings,
        )
        client = TestClient(create_app(merged, engine_factory=lambda _: engine))
        client.__enter__()
        clients.append(client)
        return client

    yield go
    for client in clients:
        client.__exit__(None, None, None)


def _rows(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as connection:
        connection.row_factory = sqlite3.Row
        rows = [dict(r) for r in connection.execute("SELECT * FROM records ORDER BY id")]
    connection.close()
    return rows


def _assert_unauthorized(response: Any, message: str) -> None:
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["x-request-id"]
    assert response.json() == {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }


# --- keys ---------------------------------------------------------------------


def test_new_keys_are_random_and_hash_to_the_settings_form() -> None:
    key = new_key()
    assert key.startswith(KEY_PREFIX) and len(key) == len(KEY_PREFIX) + 43
    assert key != new_key()
    digest = hash_key(key)
    assert digest.startswith("sha256:") and len(digest) == 7 + 64
    assert hash_key(key.encode()) == digest
    assert AuthSettings(keys=[{"id": "a", "hash": digest.upper().replace("SHA256", "sha256")}])


def test_key_ring_compares_every_hash_without_stopping(monkeypatch: pytest.MonkeyPatch) -> None:
    ring = KeyRing(AuthSettings.model_validate(_auth()))
    calls: list[bytes] = []
    real = keys_module.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(b)
        return real(a, b)

    monkeypatch.setattr(keys_module.hmac, "compare_digest", counting)
    # The first configured key matches: the other key and the admin hash are still compared.
    assert ring.identify(ALICE.encode()) == Principal("client", "alice")
    assert len(calls) == 3
    calls.clear()
    assert ring.identify(ADMIN.encode()) == Principal("admin")
    assert ring.identify(STRANGER.encode()) is None
    assert len(calls) == 6


def test_hash_settings_never_echo_what_was_given() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(auth={"keys": [{"id": "alice", "hash": ALICE}], "admin_key_hash": ADMIN})
    text = str(caught.value)
    assert "auth.keys.0.hash" in text and "auth.admin_key_hash" in text
    assert ALICE not in text and ADMIN not in text


def test_duplicate_ids_and_hashes_are_refused() -> None:
    with pytest.raises(ValidationError, match="'alice' is configured twice"):
        AuthSettings(
            keys=[{"id": "alice", "hash": hash_key(ALICE)}, {"id": "alice", "hash": hash_key(BOB)}]
        )
    with pytest.raises(ValidationError, match="hash of another"):
        AuthSettings(
            keys=[{"id": "alice", "hash": hash_key(ADMIN)}], admin_key_hash=hash_key(ADMIN)
        )


def test_keys_file_adds_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(
        f'- {{"id": "carol", "hash": "{hash_key(BOB)}", "requests_per_minute": 5}}\n'
        f"- id: dave\n  hash: {hash_key(STRANGER)}\n"
    )
    auth = AuthSettings(keys=[{"id": "alice", "hash": hash_key(ALICE)}], keys_file=path)
    assert [key.id for key in auth.client_keys()] == ["alice", "carol", "dave"]
    assert auth.client_keys()[1].requests_per_minute == 5
    ring = KeyRing(auth)
    assert ring.identify(STRANGER.encode()) == Principal("client", "dave")


def test_bad_keys_file_names_the_file_and_the_entry(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(f"- id: carol\n  hash: {BOB}\n")
    with pytest.raises(ValidationError) as caught:
        AuthSettings(keys_file=path)
    assert "keys.yaml: 0.hash" in str(caught.value)
    assert BOB not in str(caught.value)
    with pytest.raises(ValidationError, match="keys_file cannot be read"):
        AuthSettings(keys_file=tmp_path / "absent.yaml")


# --- start-up -----------------------------------------------------------------


def test_no_keys_refuses_to_start_and_says_how_to_fix_it(db: Path) -> None:
    settings = Settings(auth={"disabled": False}, ledger={"path": db})
    with pytest.raises(AuthConfigurationError) as caught:
        create_app(settings, engine_factory=lambda _: FakeEngine())
    assert "hybrid-gateway keys create" in str(caught.value)
    assert "GATEWAY_AUTH__DISABLED=true" in str(caught.value)


def test_serve_without_keys_exits_with_the_message(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    result = subprocess.run(
        [str(SCRIPT), "serve", "--port", "0"], env=env, capture_output=True, timeout=60
    )
    assert result.returncode == 2
    assert b"hybrid-gateway keys create" in result.stderr
    assert b"GATEWAY_AUTH__DISABLED=true" in result.stderr
    assert b"Traceback" not in result.stderr
    not_json = subprocess.run(
        [str(SCRIPT), "serve", "--port", "0"],
        env={**env, "GATEWAY_AUTH__KEYS": '[{"id": oops'},
        capture_output=True,
        timeout=60,
    )
    assert not_json.returncode == 2
    assert b'"auth"' in not_json.stderr and b"expected JSON" in not_json.stderr
    assert b"Traceback" not in not_json.stderr


def test_disabled_auth_warns_at_every_start(
    db: Path, caplog: pytest.LogCaptureFixture, policy_file: Path
) -> None:
    settings = Settings(auth={"disabled": True}, ledger={"path": db})
    app = create_app(settings, engine_factory=lambda _: FakeEngine())
    with caplog.at_level(logging.WARNING, logger="gateway.auth.middleware"):
        for _ in range(2):
            with TestClient(app) as client:
                assert client.post("/v1/chat/completions", json=_chat()).status_code == 200
                # no admin key configured: the admin routes are open too
                assert client.get("/metrics").status_code == 200
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "AUTHENTICATION IS DISABLED" in warnings[0] and "/metrics" in warnings[0]


def test_disabled_auth_still_guards_a_configured_admin_key(open_app: Open) -> None:
    client = open_app(_auth(disabled=True))
    assert client.post("/v1/chat/completions", json=_chat()).status_code == 200
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=_bearer(ADMIN)).status_code == 200


# --- client routes ------------------------------------------------------------


def test_missing_wrong_and_malformed_keys_get_401(open_app: Open) -> None:
    client = open_app()
    missing = (
        "You didn't provide an API key. Send it in the Authorization header: "
        "'Authorization: Bearer YOUR_KEY'."
    )
    _assert_unauthorized(client.post("/v1/chat/completions", json=_chat()), missing)
    _assert_unauthorized(
        client.post("/v1/chat/completions", json=_chat(), headers=_bearer(STRANGER)),
        "Incorrect API key provided.",
    )
    for header in (f"Basic {ALICE}", "Bearer", "Bearer  ", ALICE):
        response = client.get("/v1/models", headers={"authorization": header})
        _assert_unauthorized(response, missing)
    # two Authorization headers: which one counts would be a guess
    doubled = client.get(
        "/v1/models", headers=[("authorization", f"Bearer {ALICE}"), ("authorization", "Bearer x")]
    )
    assert doubled.status_code == 401


def test_a_client_key_works_and_its_id_is_recorded(
    open_app: Open, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = open_app()
    with caplog.at_level(logging.DEBUG):
        ok = client.post(
            "/v1/chat/completions", json=_chat(), headers={**_bearer(ALICE), "x-request-id": "a-1"}
        )
        assert ok.status_code == 200
        scheme_case = client.get("/v1/models", headers={"authorization": f"bearer {BOB}"})
        assert scheme_case.status_code == 200
        refused = client.post(
            "/v1/chat/completions",
            json=_chat(),
            headers={**_bearer(STRANGER), "x-request-id": "s-1"},
        )
        admin_there = client.post("/v1/chat/completions", json=_chat(), headers=_bearer(ADMIN))
        metrics = client.get("/metrics", headers=_bearer(ADMIN)).text
    client.__exit__(None, None, None)  # flushes the ledger
    assert admin_there.status_code == 403
    rows = {row["request_id"]: row for row in _rows(db)}
    assert rows["a-1"]["key_id"] == "alice" and rows["a-1"]["status"] == 200
    # refused before the body was read, and still recorded, without a key id
    assert rows["s-1"]["key_id"] is None
    assert (rows["s-1"]["status"], rows["s-1"]["error"]) == (401, "invalid_api_key")
    access = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gateway.access"]
    assert {line["request_id"]: line["key_id"] for line in access}["a-1"] == "alice"
    # the keys themselves: nowhere
    everywhere = "\n".join(
        [caplog.text, metrics, refused.text, admin_there.text, json.dumps(list(rows.values()))]
    )
    for key in (ALICE, BOB, ADMIN, STRANGER):
        assert key not in everywhere


def test_public_paths_need_no_key_but_nothing_else_is_public(open_app: Open) -> None:
    client = open_app()
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    # exact matches only: a trailing slash or an unknown path falls to "client key needed"
    for path in ("/healthz/", "/nope", "/docs", "/openapi.json", "/v1/models/local"):
        assert client.get(path).status_code == 401, path
    assert client.get("/nope", headers=_bearer(ALICE)).status_code == 404


@pytest.mark.parametrize(
    ("path", "access"),
    [
        ("/healthz", "public"),
        ("/readyz", "public"),
        ("/healthz/", "client"),
        ("//healthz", "client"),
        ("/HEALTHZ", "client"),
        ("/metrics", "admin"),
        ("/metrics/", "client"),
        ("/admin", "admin"),
        ("/admin/policy/reload", "admin"),
        ("/administrator", "client"),
        ("/v1/usage", "usage"),
        ("/v1/chat/completions", "client"),
        ("", "client"),
    ],
)
def test_access_by_path(path: str, access: str) -> None:
    assert access_of(path) == access


async def test_the_asgi_path_decides_not_the_host_or_raw_path() -> None:
    ring = KeyRing(AuthSettings.model_validate(_auth()))
    reached: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(scope["path"])

    async def receive() -> Message:
        raise AssertionError("the body must not be read before authentication")

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {
        "type": "http",
        "method": "POST",
        "path": "/metrics",
        "raw_path": b"/healthz",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1"), (b"x-forwarded-prefix", b"/healthz")],
    }
    await AuthMiddleware(app, keys=ring)(scope, receive, send)
    assert reached == [] and sent[0]["status"] == 401
    await AuthMiddleware(app, keys=ring)({**scope, "path": "/healthz"}, receive, send)
    assert reached == ["/healthz"]


def test_bearer_token_parsing() -> None:
    def scope(*values: bytes) -> Scope:
        return {"headers": [(b"authorization", v) for v in values]}

    assert bearer_token(scope(b"Bearer abc")) == b"abc"
    assert bearer_token(scope(b"BEARER  abc ")) == b"abc"
    assert bearer_token(scope(b"Basic abc")) is None
    assert bearer_token(scope(b"Bearer")) is None
    assert bearer_token(scope()) is None
    assert bearer_token(scope(b"Bearer a", b"Bearer b")) is None


def test_websockets_are_refused_without_a_key(open_app: Open) -> None:
    client = open_app()
    with pytest.raises(WebSocketDisconnect), client.websocket_connect("/v1/ws"):
        pass


# --- admin routes -------------------------------------------------------------


def test_metrics_need_the_admin_key(open_app: Open) -> None:
    client = open_app()
    _assert_unauthorized(
        client.get("/metrics"),
        "You didn't provide an API key. Send it in the Authorization header: "
        "'Authorization: Bearer YOUR_KEY'.",
    )
    by_client = client.get("/metrics", headers=_bearer(ALICE))
    assert by_client.status_code == 403
    assert by_client.json()["error"]["code"] == "permission_denied"
    assert client.get("/metrics", headers=_bearer(ADMIN)).status_code == 200


def test_without_an_admin_key_admin_routes_answer_403(open_app: Open) -> None:
    client = open_app(_auth(admin_key_hash=None))
    for response in (
        client.get("/metrics"),
        client.get("/metrics", headers=_bearer(ALICE)),
        client.post("/admin/policy/reload", headers=_bearer(ALICE)),
    ):
        assert response.status_code == 403
        error = response.json()["error"]
        assert error["code"] == "admin_key_not_configured"
        assert "GATEWAY_AUTH__ADMIN_KEY_HASH" in error["message"]
    # a client key still sees its own usage
    assert client.get("/v1/usage", headers=_bearer(ALICE)).status_code == 200


def test_usage_is_everyone_for_the_admin_and_own_for_a_client(open_app: Open) -> None:
    client = open_app()
    for key, count in ((ALICE, 2), (BOB, 1)):
        for _ in range(count):
            answer = client.post("/v1/chat/completions", json=_chat(), headers=_bearer(key))
            assert answer.status_code == 200
    client.post("/v1/chat/completions", json=_chat(), headers=_bearer(STRANGER))

    def requests(key: str) -> int:
        response = client.get("/v1/usage", params={"since": "all"}, headers=_bearer(key))
        assert response.status_code == 200
        total: int = response.json()["requests"]
        return total

    assert requests(ADMIN) == 4  # the refused one included
    assert requests(ALICE) == 2
    assert requests(BOB) == 1
    assert client.get("/v1/usage").status_code == 401


def test_admin_reloads_the_policy(open_app: Open, policy_file: Path) -> None:
    client = open_app()
    assert client.post("/admin/policy/reload").status_code == 401
    assert client.post("/admin/policy/reload", headers=_bearer(ALICE)).status_code == 403
    policy_file.write_text(
        "version: 1\nrules:\n  - name: long\n    route: cloud\n"
        "    match: {prompt_tokens_over: 100}\ndefault: local_then_check\n"
    )
    done = client.post("/admin/policy/reload", headers=_bearer(ADMIN))
    assert done.status_code == 200
    body = done.json()
    assert body["reloaded"] is True and body["file"] == str(policy_file)
    assert (body["version"], body["rules"], body["default"]) == (1, ["long"], "local_then_check")

    policy_file.write_text("version: 1\ndefault: sideways\n")
    bad = client.post("/admin/policy/reload", headers=_bearer(ADMIN))
    assert bad.status_code == 400
    error = bad.json()["error"]
    assert error["code"] == "invalid_policy"
    assert "policy.yaml: default" in error["message"]
    # the previous policy stays in force
    ready = client.get("/readyz").json()["policy"]
    assert (ready["reloads"], ready["failed_reloads"]) == (1, 1)


def test_reload_without_a_policy_file_is_a_400(db: Path) -> None:
    settings = Settings(auth=_auth(), ledger={"path": db})
    with TestClient(create_app(settings, engine_factory=lambda _: FakeEngine())) as client:
        response = client.post("/admin/policy/reload", headers=_bearer(ADMIN))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "no_policy_file"


# --- CORS -----------------------------------------------------------------------

PREFLIGHT = {
    "origin": "https://app.example",
    "access-control-request-method": "POST",
    "access-control-request-headers": "authorization, content-type",
}


def test_cors_is_off_by_default(open_app: Open) -> None:
    client = open_app()
    preflight = client.options("/v1/chat/completions", headers=PREFLIGHT)
    assert "access-control-allow-origin" not in preflight.headers
    answer = client.post(
        "/v1/chat/completions",
        json=_chat(),
        headers={**_bearer(ALICE), "origin": "https://app.example"},
    )
    assert answer.status_code == 200
    assert "access-control-allow-origin" not in answer.headers


def test_cors_with_explicit_origins(open_app: Open) -> None:
    client = open_app(cors={"allow_origins": ["https://App.Example"]})
    preflight = client.options("/v1/chat/completions", headers=PREFLIGHT)
    assert preflight.status_code == 200  # no key needed for a preflight
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in preflight.headers
    other = client.options("/v1/chat/completions", headers={**PREFLIGHT, "origin": "https://x.io"})
    assert other.status_code == 400
    assert "access-control-allow-origin" not in other.headers
    # a browser can read the 401 (and the request id) too
    refused = client.post(
        "/v1/chat/completions", json=_chat(), headers={"origin": "https://app.example"}
    )
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == "https://app.example"
    assert "x-request-id" in refused.headers["access-control-expose-headers"]


@pytest.mark.parametrize("origin", ["*", "app.example", "https://app.example/path", "null"])
def test_cors_origins_must_be_explicit(origin: str) -> None:
    with pytest.raises(ValidationError, match="cors.allow_origins"):
        Settings(cors={"allow_origins": [origin]})


# --- the keys command -------------------------------------------------------------


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("#")]


def test_keys_create_prints_the_key_once_and_its_entry(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["keys", "create", "--id", "alice"]) == 0
    key, entry = _lines(capsys.readouterr().out)
    assert key.startswith(KEY_PREFIX)
    parsed = json.loads(entry)
    assert parsed == {"id": "alice", "hash": hash_key(key)}
    ring = KeyRing(AuthSettings(keys=[parsed]))
    assert ring.identify(key.encode()) == Principal("client", "alice")


def test_keys_create_admin(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "create", "--admin"]) == 0
    key, line = _lines(capsys.readouterr().out)
    name, value = line.split("=", 1)
    assert name == "GATEWAY_AUTH__ADMIN_KEY_HASH" and value == hash_key(key)


def test_keys_create_to_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "admin_key"
    assert main(["keys", "create", "--admin", "--out", str(out)]) == 0
    key = out.read_text().strip()
    printed = capsys.readouterr().out
    assert key not in printed and hash_key(key) in printed
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    # never over an existing file
    assert main(["keys", "create", "--id", "x", "--out", str(out)]) == 1
    assert out.read_text().strip() == key


def test_keys_create_needs_exactly_one_of_id_and_admin(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "create"]) == 2
    assert main(["keys", "create", "--id", "a", "--admin"]) == 2
    with pytest.raises(SystemExit):
        main(["keys", "create", "--id", "no spaces"])


def test_keys_hash_reads_stdin() -> None:
    result = subprocess.run(
        [str(SCRIPT), "keys", "hash"], input=f"{ALICE}\n".encode(), capture_output=True
    )
    assert result.returncode == 0
    assert result.stdout.decode().strip() == hash_key(ALICE)
    empty = subprocess.run([str(SCRIPT), "keys", "hash"], input=b"\n", capture_output=True)
    assert empty.returncode == 2
