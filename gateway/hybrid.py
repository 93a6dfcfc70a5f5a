"""Carrying out a routing decision: local, cloud, or local then the confidence gate.

The router decides; this module does what it says, and degrades (or fails,
as the policy chooses) when the cloud cannot take a request. Once the first
byte of a streamed answer has left, nothing switches any more.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from fastapi.responses import Response
from starlette.requests import Request

from gateway import cloud_route, local_route
from gateway.cloud_route import Cloud, CloudJob
from gateway.disconnect import ClientDisconnected, cancel_on_disconnect
from gateway.errors import (
    BudgetExhaustedError,
    CloudUnavailableError,
    ContextLengthExceededError,
    GatewayError,
    UpstreamError,
    UpstreamTimeoutError,
)
from gateway.jsonio import JSONBody
from gateway.local_route import HeldBack, LocalJob
from gateway.outcome import Outcome
from local_model import GenerationResult
from local_model.engine import Engine
from local_model.generation import Generation
from router import Decision, Policy

logger = logging.getLogger(__name__)

# Cloud failures that a "degrade" policy answers locally instead.
CLOUD_FAILURES = (CloudUnavailableError, UpstreamError, UpstreamTimeoutError)


@dataclass
class Call:
    """One validated request, ready to run on either side."""

    decision: Decision
    cloud: CloudJob
    #: the local job, built (and the prompt tokenized) only when a route needs it;
    #: raises ContextLengthExceededError when the prompt cannot fit the local context
    prepare_local: Callable[[], Awaitable[LocalJob]]
    #: the client key's daily cloud budget is spent: seconds until it resets (UTC midnight)
    budget_reset_s: float | None = None
    _local: LocalJob | None = field(default=None, init=False)
    _local_error: ContextLengthExceededError | None = field(default=None, init=False)

    async def local(self) -> LocalJob | None:
        """The local job, or None when the prompt is too long for it (see local_error)."""
        if self._local is None and self._local_error is None:
            try:
                self._local = await self.prepare_local()
            except ContextLengthExceededError as exc:  # the cloud may still take it
                self._local_error = exc
        return self._local

    @property
    def local_error(self) -> ContextLengthExceededError:
        """Why :meth:`local` gave None."""
        assert self._local_error is not None
        return self._local_error


def _breaker_open(cloud: Cloud) -> bool:
    return bool(cloud.breaker_state().get("state") == "open")


class Dispatcher:
    def __init__(self, engine: Engine, cloud: Cloud | None) -> None:
        self.engine = engine
        self.cloud = cloud

    async def serve(self, request: Request, call: Call, policy: Policy) -> Response:
        decision = call.decision
        if call.budget_reset_s is not None and decision.cloud_allowed and decision.route != "local":
            return await self._over_budget(request, call, policy, call.budget_reset_s)
        usable = self.cloud is not None and decision.cloud_allowed
        if decision.route == "cloud":
            return await self._cloud(request, call, policy, decision.reason)
        local = await call.local()
        if local is None:
            # Too long for the local model: the cloud may still take it.
            if not usable or decision.reason == "model-pinned-local":
                raise call.local_error
            return await self._cloud(request, call, policy, "exceeds-local-context")
        if decision.route == "local" or not decision.cloud_allowed:
            return await self._local(request, call, Outcome("local", decision.reason))
        if self.cloud is None and local.stream:
            if policy.on_cloud_unavailable == "degrade":
                # Holding tokens back would only delay the stream: nothing could change.
                return await self._local(request, call, Outcome("local", decision.reason))
        return await self._gated(request, call, policy)

    async def _over_budget(
        self, request: Request, call: Call, policy: Policy, reset_s: float
    ) -> Response:
        """A request that could reach the cloud, from a key whose cloud budget is spent."""
        if call.decision.reason == "model-pinned-cloud" or policy.on_budget_exhausted == "reject":
            raise BudgetExhaustedError(
                "This API key's daily cloud budget is spent; it resets at midnight UTC.",
                retry_after_seconds=reset_s,
            )
        # local_only: no cloud call, and no gate either (it could only escalate).
        outcome = Outcome("local", call.decision.reason, degraded="budget-exhausted")
        return await self._local(request, call, outcome)

    async def _local(self, request: Request, call: Call, outcome: Outcome) -> Response:
        local = await call.local()
        if local is None:
            raise call.local_error
        return await local_route.respond(request, self.engine, local, outcome)

    async def _cloud(self, request: Request, call: Call, policy: Policy, reason: str) -> Response:
        """The cloud answers; on failure degrade to local when the policy allows."""
        pinned = call.decision.reason == "model-pinned-cloud"
        if self.cloud is None or not call.decision.cloud_allowed:
            error: GatewayError = CloudUnavailableError(
                "no cloud endpoint is configured", retry_after_seconds=_retry_in(None)
            )
        else:
            try:
                return await self._cloud_answer(request, call.cloud, Outcome("cloud", reason))
            except CLOUD_FAILURES as exc:
                error = exc
        if pinned or policy.on_cloud_unavailable == "fail":
            raise error
        if await call.local() is None:
            # Neither side can take it: with no cloud at all, the prompt is what is wrong.
            raise call.local_error if isinstance(error, CloudUnavailableError) else error
        logger.warning("cloud failed (%s); answering locally", error.message)
        return await self._local(request, call, Outcome("local", reason, degraded=_why(error)))

    async def _cloud_answer(self, request: Request, job: CloudJob, outcome: Outcome) -> Response:
        assert self.cloud is not None
        if not job.stream:
            return await cloud_route.complete(request, self.cloud, job, outcome)
        opened = await cloud_route.open_stream(request, self.cloud, job)
        if opened is None:
            return Response(status_code=499)
        return cloud_route.stream_response(opened, job, outcome)

    async def _gated(self, request: Request, call: Call, policy: Policy) -> Response:
        """Local first; escalate to the cloud when the gate finds the answer weak.

        Without a usable cloud the gate still judges, and a weak answer is
        served degraded (or refused, as the policy says).
        """
        job = await call.local()
        assert job is not None
        gate = policy.gate
        can_escalate = self.cloud is not None and not _breaker_open(self.cloud)
        # Aborting early only saves compute if there is somewhere to escalate to.
        floor = gate.hard_floor if can_escalate else None
        generation = local_route.submit(self.engine, job)
        reason = call.decision.reason
        held: HeldBack | None = None
        result: GenerationResult | None = None
        try:
            if job.stream:
                held = await cancel_on_disconnect(
                    request.receive, local_route.hold_back(generation, gate.holdback_tokens, floor)
                )
                evidence = held.evidence
                aborted = held.aborted
            else:
                result, evidence = await cancel_on_disconnect(
                    request.receive, local_route.run_to_end(generation, floor)
                )
                aborted = result is None
        except ClientDisconnected:
            generation.cancel()
            return Response(status_code=499)
        except BaseException:
            generation.cancel()
            raise
        verdict = gate.judge(
            evidence.logprobs,
            prompt_tokens=len(job.request.prompt_tokens),
            entropies=evidence.entropies,
        )
        confidence = verdict.confidence
        if not (verdict.escalate or aborted):
            outcome = Outcome("local", reason, confidence, verdict.threshold)
            return _answer(generation, job, outcome, held, result)

        if not can_escalate:
            if policy.on_cloud_unavailable == "fail":
                generation.cancel()
                raise CloudUnavailableError(
                    "the cloud is unavailable" if self.cloud else "no cloud endpoint is configured",
                    retry_after_seconds=_retry_in(self.cloud),
                )
            # The local answer goes on as it is, marked: nothing better exists.
            kept = Outcome("local", reason, confidence, verdict.threshold, "cloud-unavailable")
            return _answer(generation, job, kept, held, result)

        generation.cancel()
        escalated = Outcome("local->cloud", reason, confidence, verdict.threshold)
        try:
            return await self._cloud_answer(request, call.cloud, escalated)
        except CLOUD_FAILURES as exc:
            if policy.on_cloud_unavailable == "fail" or aborted:
                # An aborted local answer is incomplete: there is nothing to fall back to.
                raise
            logger.warning("escalation failed (%s); answering locally", exc.message)
            degraded = Outcome("local", reason, confidence, verdict.threshold, _why(exc))
            if job.stream:
                # The held generation was stopped for the escalation: start again.
                return await local_route.respond(request, self.engine, job, degraded)
            return _answer(generation, job, degraded, held, result)


def _answer(
    generation: Generation,
    job: LocalJob,
    outcome: Outcome,
    held: HeldBack | None,
    result: GenerationResult | None,
) -> Response:
    """The judged local answer: the rest of the held stream, or the finished body."""
    if job.stream:
        return local_route.stream_response(generation, job, outcome, held)
    assert result is not None
    body = local_route.body_of(job, result, outcome.body_field())
    return JSONBody(body, headers=outcome.headers())


def _retry_in(cloud: Cloud | None) -> float | None:
    """Retry-After for a refused escalation: none when no cloud is configured at all."""
    if cloud is None:
        return None
    retry = cloud.breaker_state().get("retry_in_s")
    return float(retry) if isinstance(retry, int | float) else 5.0


def _why(error: GatewayError) -> str:
    return "cloud-unavailable" if isinstance(error, CloudUnavailableError) else "cloud-error"
