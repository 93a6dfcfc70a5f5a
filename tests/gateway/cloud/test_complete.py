from __future__ import annotations

import httpx
import pytest

from gateway.cloud import CloudClient, CloudUsage
from gateway.errors import (
    CloudUnavailableError,
    ContextLengthExceededError,
    InvalidRequestError,
    UpstreamError,
    UpstreamRateLimitedError,
    UpstreamTimeoutError,
)
from gateway.settings import CloudSettings
from tests.gateway.cloud.conftest import (
    BASE_URL,
    CANARY_KEY,
    FakeSleep,
    MakeClient,
    Upstream,
    completion_body,
    dripping,
    ok,
    raises,
    sse,
    status,
    streamed,
)

CHAT = {"model": "hybrid", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}


async def test_success_rewrites_model_and_captures_usage(
    make_client: MakeClient, upstream: Upstream
) -> None:
    upstream.then(ok(completion_body("Hello!")))
    client = make_client(extra_headers={"OpenAI-Organization": "org-test"})

    result = await client.complete("chat", dict(CHAT), response_model="hybrid")

    assert result.body["model"] == "hybrid"
    assert result.body["choices"][0]["message"]["content"] == "Hello!"
    assert result.usage == CloudUsage(prompt_tokens=9, completion_tokens=3)
    assert result.attempts == 1
    (request,) = upstream.requests
    assert request.method == "POST"
    assert str(request.url) == f"{BASE_URL}/chat/completions"
    assert request.headers["authorization"] == f"Bearer {CANARY_KEY}"
    assert request.headers["openai-organization"] == "org-test"
    sent = upstream.bodies[0]
    assert sent["model"] == "gpt-4o-mini"
    assert sent["stream"] is False
    assert sent["messages"] == CHAT["messages"]
    assert sent["temperature"] == 0


@pytest.mark.parametrize("stream", [False, True])
async def test_headers_are_those_httpx_would_send(
    make_client: MakeClient, upstream: Upstream, stream: bool
) -> None:
    # The client builds its requests itself (for speed): the same headers as httpx's
    # AsyncClient.post / .stream would, Host and Content-Length included.
    chunk = {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]}
    upstream.then(streamed(sse([chunk, "[DONE]"])) if stream else ok(completion_body()))
    client = make_client(extra_headers={"OpenAI-Organization": "org-test"})
    if stream:
        async for _ in client.stream("chat", dict(CHAT), response_model="hybrid"):
            pass
    else:
        await client.complete("chat", dict(CHAT), response_model="hybrid")

    (sent,) = upstream.requests
    reference = httpx.AsyncClient(
        headers={"OpenAI-Organization": "org-test", "Authorization": f"Bearer {CANARY_KEY}"}
    ).build_request(
        "POST",
        f"{BASE_URL}/chat/completions",
        content=sent.content,
        headers={"Content-Type": "application/json"}
        | ({"Accept": "text/event-stream"} if stream else {}),
    )
    assert sorted(sent.headers.multi_items()) == sorted(reference.headers.multi_items())
    assert sent.headers["content-length"] == str(len(sent.content))


async def test_text_endpoint_and_no_stream_options_on_json(
    make_client: MakeClient, upstream: Upstream
) -> None:
    body = completion_body(usage=False)
    upstream.then(ok(body))
    payload = {"model": "hybrid", "prompt": "x", "stream_options": {"include_usage": True}}

    result = await make_client(model="up-model").complete("text", payload, response_model="local")

    assert str(upstream.requests[0].url) == f"{BASE_URL}/completions"
    assert "stream_options" not in upstream.bodies[0]
    assert upstream.bodies[0]["model"] == "up-model"
    assert payload["model"] == "hybrid"  # the caller's dict is not mutated
    assert result.usage is None
    assert result.body["model"] == "local"


async def test_request_fields_cannot_redirect_traffic(
    make_client: MakeClient, upstream: Upstream
) -> None:
    upstream.then(ok(completion_body()))
    payload = {**CHAT, "base_url": "https://evil.test", "api_key": "x", "url": "https://evil.test"}

    await make_client().complete("chat", payload, response_model="hybrid")

    assert upstream.requests[0].url.host == "cloud.test"
    assert upstream.requests[0].headers["authorization"] == f"Bearer {CANARY_KEY}"


async def test_upstream_cookies_are_not_sent_back(
    make_client: MakeClient, upstream: Upstream
) -> None:
    # One client serves every caller: a cookie one answer sets must not ride on the next
    # caller's request (httpx's client would keep it in its jar and send it).
    def with_cookie(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json=completion_body(),
            headers={"Set-Cookie": "session=abc123; Path=/; Domain=cloud.test"},
        )

    chunk = {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]}
    upstream.then(with_cookie, ok(completion_body()), streamed(sse([chunk, "[DONE]"])))
    client = make_client()
    for _ in range(2):
        await client.complete("chat", dict(CHAT), response_model="hybrid")
    async for _ in client.stream("chat", dict(CHAT), response_model="hybrid"):
        pass

    assert [r.headers.get("cookie") for r in upstream.requests] == [None, None, None]


async def test_no_key_sends_no_authorization(make_client: MakeClient, upstream: Upstream) -> None:
    upstream.then(ok(completion_body()))
    await make_client(api_key=None).complete("chat", dict(CHAT), response_model="hybrid")
    assert "authorization" not in upstream.requests[0].headers


async def test_not_configured_fails_without_network() -> None:
    def no_network(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request expected")

    client = CloudClient(CloudSettings(), transport=httpx.MockTransport(no_network))
    with pytest.raises(CloudUnavailableError) as info:
        await client.complete("chat", dict(CHAT), response_model="hybrid")
    assert info.value.status_code == 503
    assert "Retry-After" not in info.value.headers
    with pytest.raises(CloudUnavailableError):
        client.stream("chat", dict(CHAT), response_model="hybrid")
    await client.aclose()


async def test_5xx_retried_with_bounded_backoff(
    make_client: MakeClient, upstream: Upstream, sleep: FakeSleep
) -> None:
    upstream.then(status(503), status(502), status(500), ok(completion_body()))
    client = make_client(max_attempts=4, backoff_initial_s=0.5, backoff_max_s=1.5)

    result = await client.complete("chat", dict(CHAT), response_model="hybrid")

    assert result.attempts == 4
    assert len(upstream.requests) == 4
    assert len(sleep.delays) == 3
    for retry, delay in enumerate(sleep.delays):
        assert 0 <= delay <= min(1.5, 0.5 * 2**retry)
    assert result.seconds == pytest.approx(sum(sleep.delays))


async def test_5xx_gives_up_after_max_attempts(
    make_client: MakeClient, upstream: Upstream, sleep: FakeSleep
) -> None:
    upstream.then(status(503), status(503), status(503))
    with pytest.raises(UpstreamError) as info:
        await make_client().complete("chat", dict(CHAT), response_model="hybrid")
    assert info.value.status_code == 502
    assert info.value.code == "upstream_error"
    assert "503" in info.value.message
    assert len(upstream.requests) == 3
    assert len(sleep.delays) == 2


async def test_retry_budget_bounds_the_total_wait(
    make_client: MakeClient, upstream: Upstream, sleep: FakeSleep
) -> None:
    upstream.then(*[status(500)] * 10)
    client = make_client(max_attempts=10, backoff_initial_s=1, backoff_max_s=1, retry_budget_s=1.5)
    with pytest.raises(UpstreamError):
        await client.complete("chat", dict(CHAT), response_model="hybrid")
    assert sum(sleep.delays) <= 1.5 + 1e-9


async def test_retry_after_is_honoured(
    make_client: MakeClient, upstream: Upstream, sleep: FakeSleep
) -> None:
    upstream.then(status(429, headers={"Retry-After": "2"}), ok(completion_body()))
    result = await make_client().complete("chat", dict(CHAT), response_model="hybrid")
    assert sleep.delays == [2.0]
    assert result.attempts == 2


async def test_retry_after_beyond_budget_is_passed_on(
    make_client: MakeClient, upstream: Upstream, sleep: FakeSleep
) -> None:
    upstream.then(status(429, headers={"Retry-After": "30"}))
    with pytest.raises(UpstreamRateLimitedError) as info:
        await make_client(retry_budget_s=10).complete("chat", dict(CHAT), response_model="hybrid")
    assert sleep.delays == []
    assert len(upstream.requests) == 1
    error = info.value
    assert error.status_code == 429
    assert error.headers == {"Retry-After": "30"}
    assert error.body()["error"]["code"] == "upstream_rate_limited"
    assert error.body()["error"]["type"] == "rate_limit_error"


async def test_retry_after_http_date(make_client: MakeClient, upstream: Upstream) -> None:
    upstream.then(status(429, headers={"Retry-After": "Wed, 21 Oct 2065 07:28:00 GMT"}))
    with pytest.raises(UpstreamRateLimitedError) as info:
        await make_client().complete("chat", dict(CHAT), response_model="hybrid")
    assert int(info.value.headers["Retry-After"]) > 10


async def test_connection_refused_is_retried_then_upstream_error(
    make_client: MakeClient, upstream: Upstream, sleep: FakeSleep
) -> None:
    upstream.then(*[raises(httpx.ConnectError, "[Errno 111] Connection refused")] * 3)
    with pytest.raises(UpstreamError) as info:
        await make_client().complete("chat", dict(CHAT), response_model="hybrid")
    assert len(upstream.requests) == 3
    assert len(sleep.delays) == 2
    assert info.value.status_code == 502
    assert isinstance(info.value.__cause__, httpx.ConnectError)


async def test_read_timeout_is_upstream_timeout_not_retried(
    make_client: MakeClient, upstream: Upstream
) -> None:
    upstream.then(raises(httpx.ReadTimeout))
    with pytest.raises(UpstreamTimeoutError) as info:
        await make_client().complete("chat", dict(CHAT), response_model="hybrid")
    assert info.value.status_code == 504
    assert info.value.code == "upstream_timeout"
    assert len(upstream.requests) == 1


async def test_connect_timeout_is_retried(make_client: MakeClient, upstream: Upstream) -> None:
    upstream.then(raises(httpx.ConnectTimeout), ok(completion_body()))
    result = await make_client().complete("chat", dict(CHAT), response_model="hybrid")
    assert result.attempts == 2


async def test_drip_feed_hits_the_total_deadline(upstream: Upstream) -> None:
    upstream.then(dripping(b'{"choices": []}' * 10, interval_s=0.05))
    # The real clock: the deadline is enforced by asyncio, not by our fake time.
    client = CloudClient(
        CloudSettings(base_url=BASE_URL, total_timeout_s=0.3), transport=upstream.transport()
    )
    with pytest.raises(UpstreamTimeoutError, match="0.3s"):
        await client.complete("chat", dict(CHAT), response_model="hybrid")
    await client.aclose()


async def test_malformed_json_is_upstream_error(
    make_client: MakeClient, upstream: Upstream
) -> None:
    upstream.then(lambda request: httpx.Response(200, content=b"{not json"))
    with pytest.raises(UpstreamError, match="malformed"):
        await make_client().complete("chat", dict(CHAT), response_model="hybrid")


async def test_json_that_is_not_a_completion_is_upstream_error(
    make_client: MakeClient, upstream: Upstream
) -> None:
    upstream.then(ok({"object": "list", "data": []}))
    with pytest.raises(UpstreamError):
        await make_client().complete("chat", dict(CHAT), response_model="hybrid")


async def test_upstream_400_is_invalid_request_with_its_message(
    make_client: MakeClient, upstream: Upstream
) -> None:
    error = {"message": "Invalid value for 'temperature'.", "param": "temperature", "code": None}
    upstream.then(status(400, {"error": error}, headers={"x-secret-trace": "abc"}))
    with pytest.raises(InvalidRequestError) as info:
        await make_client().complete("chat", dict(CHAT), response_model="hybrid")
    assert info.value.status_code == 400
    assert info.value.message == "Invalid value for 'temperature'."
    assert info.value.param == "temperature"
    assert info.value.headers == {}
    assert len(upstream.requests) == 1


async def test_upstream_context_length_keeps_its_code(
    make_client: MakeClient, upstream: Upstream
) -> None:
    error = {"message": "too long", "param": "messages", "code": "context_length_exceeded"}
    upstream.then(status(400, {"error": error}))
    with pytest.raises(ContextLengthExceededError):
        await make_client().complete("chat", dict(CHAT), response_model="hybrid")


async def test_upstream_422_with_non_openai_body(
    make_client: MakeClient, upstream: Upstream
) -> None:
    upstream.then(status(422, {"detail": "bad field"}))
    with pytest.raises(InvalidRequestError, match="bad field"):
        await make_client().complete("chat", dict(CHAT), response_model="hybrid")


@pytest.mark.parametrize("code", [401, 403])
async def test_upstream_auth_failure_does_not_leak(
    make_client: MakeClient, upstream: Upstream, code: int
) -> None:
    message = f"Incorrect API key provided: {CANARY_KEY[:8]}***{CANARY_KEY[-4:]}."
    upstream.then(status(code, {"error": {"message": message, "code": "invalid_api_key"}}))
    with pytest.raises(UpstreamError) as info:
        await make_client().complete("chat", dict(CHAT), response_model="hybrid")
    assert info.value.status_code == 502
    text = str(info.value.body())
    assert "Incorrect" not in text and CANARY_KEY[-4:] not in text
    assert len(upstream.requests) == 1


async def test_redirect_is_not_followed(make_client: MakeClient, upstream: Upstream) -> None:
    upstream.then(status(307, {}, headers={"Location": "https://elsewhere.test/v1"}))
    with pytest.raises(UpstreamError, match="307"):
        await make_client().complete("chat", dict(CHAT), response_model="hybrid")
    assert len(upstream.requests) == 1


async def test_retries_stop_at_the_total_deadline(
    make_client: MakeClient, upstream: Upstream, sleep: FakeSleep
) -> None:
    busy = status(503, headers={"Retry-After": "0.6"})
    upstream.then(busy, busy)
    client = make_client(total_timeout_s=1.0, max_attempts=5)
    with pytest.raises(UpstreamError, match="503"):
        await client.complete("chat", dict(CHAT), response_model="hybrid")
    assert sleep.delays == [0.6]  # a second wait would end past the deadline


async def test_full_pool_is_503_and_not_an_upstream_failure(
    make_client: MakeClient, upstream: Upstream
) -> None:
    upstream.then(raises(httpx.PoolTimeout))
    client = make_client(breaker_failures=1)
    with pytest.raises(CloudUnavailableError) as info:
        await client.complete("chat", dict(CHAT), response_model="hybrid")
    assert info.value.headers == {"Retry-After": "1"}
    assert client.breaker_state()["state"] == "closed"


async def test_each_retry_is_logged(
    make_client: MakeClient, upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="gateway.cloud")
    upstream.then(status(503), raises(httpx.ConnectError), ok(completion_body()))
    await make_client().complete("chat", dict(CHAT), response_model="hybrid")
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 2
    assert "HTTP 503" in retries[0] and "ConnectError" in retries[1]
