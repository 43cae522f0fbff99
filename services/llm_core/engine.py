"""Chat generation over OpenAI-compatible endpoints: routing, failover, retries
of what is safe to retry, streaming, resume from a snapshot and time slices.

Plain domain code: it speaks `openai` and raises AiosError; no gRPC here.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import openai

from services.llm_core.config import EndpointConfig
from services.runtime import errors, logs

log = logs.get("llm_core")

# How long an endpoint that refused a connection is skipped before a retry.
DOWN_BACKOFF_SECONDS = 2.0
# Sessions remembered for cache-affine routing.
AFFINITY_ENTRIES = 100_000


@dataclass
class ChatRequest:
    """One generation, in OpenAI's vocabulary."""

    model: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    sampling: dict[str, Any] = field(default_factory=dict)  # temperature, top_p, stop, seed
    max_tokens: int | None = None
    session_id: str = ""
    # A snapshot of an interrupted generation to continue.
    resume_text: str = ""
    resume_tokens: int = 0
    # Stop after this many new tokens (the scheduler's time slice); 0 = none.
    slice_tokens: int = 0


@dataclass
class Completion:
    text: str = ""
    tool_calls: list[dict[str, str]] = field(default_factory=list)
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    model: str = ""
    endpoint: str = ""


@dataclass
class Delta:
    """A piece of a streamed generation; the last one has `final` set."""

    text: str = ""
    final: Completion | None = None


class Endpoint:
    def __init__(self, config: EndpointConfig) -> None:
        self.config = config
        api_key = os.environ.get(config.api_key_env, "") if config.api_key_env else ""
        self.client = openai.AsyncOpenAI(
            base_url=config.base_url,
            api_key=api_key or "unused",
            max_retries=0,  # retries are ours: only the safe ones, inside the deadline
        )
        self.in_flight = 0
        self.down_until = 0.0
        self.last_error = ""

    @property
    def name(self) -> str:
        return self.config.name

    def healthy(self, now: float) -> bool:
        return now >= self.down_until

    def load(self) -> float:
        return self.in_flight / self.config.max_concurrency

    def mark_down(self, why: str) -> None:
        self.down_until = time.monotonic() + DOWN_BACKOFF_SECONDS
        self.last_error = why

    def mark_up(self) -> None:
        self.down_until = 0.0
        self.last_error = ""


class Router:
    """Least-loaded healthy endpoint of a model, preferring the one that served
    the same session before while its load allows (its prefix cache)."""

    def __init__(self, endpoints: list[Endpoint]) -> None:
        self.by_model: dict[str, list[Endpoint]] = {}
        for ep in endpoints:
            self.by_model.setdefault(ep.config.model, []).append(ep)
        self._affinity: OrderedDict[str, str] = OrderedDict()

    def models(self) -> list[str]:
        return list(self.by_model)

    def candidates(self, model: str, session_id: str = "") -> list[Endpoint]:
        eps = self.by_model.get(model)
        if not eps:
            known = ", ".join(sorted(self.by_model)) or "none"
            raise errors.NotFound(
                f"unknown model {model!r} (configured: {known})", reason="UNKNOWN_MODEL", field="model"
            )
        now = time.monotonic()
        # Healthy ones by load (random tie-break), then the ones marked down,
        # which are still worth a try when nothing else is left.
        ranked = sorted(eps, key=lambda e: (not e.healthy(now), e.load(), random.random()))
        preferred = self._affinity.get(session_id) if session_id else None
        if preferred:
            for i, ep in enumerate(ranked):
                if ep.name == preferred and ep.healthy(now) and ep.in_flight < ep.config.max_concurrency:
                    ranked.insert(0, ranked.pop(i))
                    break
        return ranked

    def remember(self, session_id: str, endpoint: Endpoint) -> None:
        if not session_id:
            return
        self._affinity[session_id] = endpoint.name
        self._affinity.move_to_end(session_id)
        while len(self._affinity) > AFFINITY_ENTRIES:
            self._affinity.popitem(last=False)


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, (openai.APIConnectionError,)) and not isinstance(exc, openai.APITimeoutError):
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code in (429, 503)


def map_error(exc: Exception, endpoint: Endpoint) -> errors.AiosError:
    """An openai exception as the status the caller should see."""
    name = endpoint.name
    if isinstance(exc, openai.APITimeoutError):
        return errors.DeadlineExceeded(f"endpoint {name} did not answer within the deadline")
    if isinstance(exc, openai.APIConnectionError):
        return errors.Unavailable(f"endpoint {name} is unreachable", reason="ENDPOINT_UNREACHABLE")
    if isinstance(exc, openai.APIStatusError):
        status, detail = exc.status_code, _backend_message(exc)
        if status in (401, 403):
            return errors.FailedPrecondition(
                f"endpoint {name} refused our credentials (HTTP {status})", reason="BACKEND_AUTH"
            )
        if status == 404:
            return errors.NotFound(f"endpoint {name}: {detail}", reason="BACKEND_NOT_FOUND")
        if status == 429:
            retry = _retry_after(exc) or 1.0
            return errors.ResourceExhausted(
                f"endpoint {name} is rate limited", reason="BACKEND_RATE_LIMITED", retry_after=retry
            )
        if 400 <= status < 500:
            return errors.InvalidArgument(f"endpoint {name} rejected the request: {detail}",
                                          reason="BACKEND_REJECTED")
        return errors.Unavailable(f"endpoint {name} failed (HTTP {status}): {detail}",
                                  reason="BACKEND_ERROR")
    return errors.Internal(f"endpoint {name}: {type(exc).__name__}: {exc}")


def _backend_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        msg = body.get("message") or (body.get("error") or {}).get("message") if isinstance(
            body.get("error"), dict) else body.get("message")
        if msg:
            return str(msg)[:500]
    return str(exc.message)[:500]


def _retry_after(exc: openai.APIStatusError) -> float | None:
    try:
        return float(exc.response.headers.get("retry-after", ""))
    except (TypeError, ValueError):
        return None


class LlmEngine:
    def __init__(self, endpoints: list[EndpointConfig]) -> None:
        self.endpoints = [Endpoint(c) for c in endpoints if c.kind == "chat"]
        self.router = Router(self.endpoints)

    async def close(self) -> None:
        for ep in self.endpoints:
            await ep.client.close()

    def _params(self, req: ChatRequest, ep: Endpoint) -> dict[str, Any]:
        messages = list(req.messages)
        if req.resume_text:
            # Assistant prefill: the engine continues the partial answer.
            messages.append({"role": "assistant", "content": req.resume_text})
        params: dict[str, Any] = {"model": ep.config.model_id, "messages": messages, **req.sampling}
        if req.max_tokens is not None:
            params["max_tokens"] = max(1, req.max_tokens - req.resume_tokens)
        if req.response_format:
            params["response_format"] = req.response_format
        if req.tools:
            params["tools"] = req.tools
            if req.tool_choice is not None:
                params["tool_choice"] = req.tool_choice
        return params

    async def _with_endpoint(self, req: ChatRequest, deadline: float | None, attempt):
        """Run `attempt(endpoint, timeout)` on the best endpoint, failing over
        to the next on what is safe to retry, with backoff inside the deadline."""
        last: errors.AiosError | None = None
        backoff = 0.05
        tried = 0
        while True:
            for ep in self.router.candidates(req.model, req.session_id):
                timeout = None if deadline is None else deadline - time.monotonic()
                if timeout is not None and timeout <= 0:
                    raise last or errors.DeadlineExceeded("deadline passed before the model answered")
                ep.in_flight += 1
                try:
                    result = await attempt(ep, timeout)
                except Exception as exc:  # noqa: BLE001 - mapped below
                    mapped = map_error(exc, ep)
                    if not _retryable(exc):
                        raise mapped from exc
                    if isinstance(exc, openai.APIConnectionError):
                        ep.mark_down(str(mapped))
                    log.warning("endpoint failed, trying the next", endpoint=ep.name, error=str(mapped))
                    last = mapped
                    tried += 1
                    continue
                finally:
                    ep.in_flight -= 1
                ep.mark_up()
                self.router.remember(req.session_id, ep)
                return result
            # Every endpoint failed retryably: back off and go round again.
            if deadline is None and tried >= 3 * len(self.router.by_model[req.model]):
                raise last  # type: ignore[misc]
            sleep = min(backoff, max(0.0, (deadline or float("inf")) - time.monotonic()))
            if deadline is not None and sleep <= 0:
                raise last  # type: ignore[misc]
            await asyncio.sleep(sleep)
            backoff = min(backoff * 2, 1.0)

    async def generate(self, req: ChatRequest, deadline: float | None = None) -> Completion:
        if req.slice_tokens:
            # A time slice needs to watch tokens as they come.
            final = None
            async for delta in self.stream(req, deadline):
                final = delta.final or final
            assert final is not None
            return final

        async def attempt(ep: Endpoint, timeout: float | None) -> Completion:
            resp = await ep.client.chat.completions.create(**self._params(req, ep), timeout=timeout)
            choice = resp.choices[0]
            usage = resp.usage
            content = choice.message.content or ""
            if req.resume_text and content.startswith(req.resume_text):
                # Some engines (llama.cpp) echo the prefilled part in a
                # non-streamed reply; streamed replies carry only new text.
                content = content[len(req.resume_text):]
            out = Completion(
                text=req.resume_text + content,
                tool_calls=[
                    {"id": tc.id, "name": tc.function.name, "arguments": tc.function.arguments}
                    for tc in (choice.message.tool_calls or [])
                ],
                finish_reason=choice.finish_reason or "stop",
                model=resp.model or ep.config.model_id,
                endpoint=ep.name,
            )
            _account(out, req, usage)
            return out

        return await self._with_endpoint(req, deadline, attempt)

    async def stream(self, req: ChatRequest, deadline: float | None = None) -> AsyncIterator[Delta]:
        # Open the stream with failover; once tokens flow, no retry (they were seen).
        async def attempt(ep: Endpoint, timeout: float | None):
            ep.in_flight += 1  # held until the stream ends (released below)
            try:
                stream = await ep.client.chat.completions.create(
                    **self._params(req, ep), stream=True,
                    stream_options={"include_usage": True}, timeout=timeout,
                )
            except BaseException:
                ep.in_flight -= 1
                raise
            return ep, stream

        ep, stream = await self._with_endpoint(req, deadline, attempt)
        out = Completion(text=req.resume_text, model=ep.config.model_id, endpoint=ep.name)
        new_tokens = 0
        usage = None
        tool_parts: dict[int, dict[str, str]] = {}
        try:
            async with asyncio.timeout_at(_loop_deadline(deadline)):
                async for chunk in stream:
                    if chunk.usage is not None:
                        usage = chunk.usage
                    if not chunk.choices:
                        continue
                    choice = chunk.choices[0]
                    delta = choice.delta
                    for tc in delta.tool_calls or []:
                        part = tool_parts.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                        part["id"] = tc.id or part["id"]
                        if tc.function is not None:
                            part["name"] += tc.function.name or ""
                            part["arguments"] += tc.function.arguments or ""
                    if delta.content:
                        out.text += delta.content
                        new_tokens += 1
                        yield Delta(text=delta.content)
                    if choice.finish_reason:
                        out.finish_reason = choice.finish_reason
                    at_limit = req.max_tokens is not None and req.resume_tokens + new_tokens >= req.max_tokens
                    if (req.slice_tokens and new_tokens >= req.slice_tokens and not choice.finish_reason
                            and not at_limit):
                        # At the limit the engine is about to finish on its own
                        # (and report usage): let it, rather than preempt.
                        out.finish_reason = "preempted"
                        break
        except TimeoutError:
            raise errors.DeadlineExceeded(f"endpoint {ep.name} did not finish within the deadline") from None
        except openai.APIError as exc:
            raise map_error(exc, ep) from exc
        finally:
            # Closing the response aborts the HTTP request, freeing the engine's slot.
            await stream.close()
            ep.in_flight -= 1
        out.tool_calls = [tool_parts[i] for i in sorted(tool_parts)]
        if usage is None:
            out.completion_tokens = req.resume_tokens + new_tokens
        _account(out, req, usage)
        yield Delta(final=out)

    async def probe(self, ep: Endpoint, timeout: float = 2.0) -> bool:
        """Whether an endpoint answers /models now."""
        try:
            await ep.client.models.list(timeout=timeout)
        except openai.APIStatusError as exc:
            # It answered; an auth failure still means reachable but unusable.
            ep.last_error = str(map_error(exc, ep))
            return exc.status_code not in (401, 403)
        except Exception as exc:  # noqa: BLE001 - any failure means unreachable
            ep.mark_down(f"unreachable: {type(exc).__name__}")
            return False
        ep.mark_up()
        return True


def _account(out: Completion, req: ChatRequest, usage) -> None:
    """Token counts of the whole generation, a resumed snapshot counted once."""
    if usage is None:
        return
    new = usage.completion_tokens or 0
    out.completion_tokens = req.resume_tokens + new
    # The snapshot was sent back as prompt; it is already counted as output.
    out.prompt_tokens = max(0, (usage.prompt_tokens or 0) - req.resume_tokens)
    details = getattr(usage, "prompt_tokens_details", None)
    out.cached_tokens = (getattr(details, "cached_tokens", 0) or 0) if details else 0


def _loop_deadline(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    return asyncio.get_running_loop().time() + (deadline - time.monotonic())
