"""THE request path, top to bottom:

    parse -> authorise -> rank (pure) -> admit (rate limit + budget) -> try deployments in rank order with
    fallback -> meter -> price -> ledger -> respond (or stream)

Each step's decision lives elsewhere as a pure function (gateway/decisions); this module only sequences them and
does the I/O. Every inbound API runs this one path: its `ClientDialect` (gateway/dialects) turns the client's
request into the canonical chat-completions one at the start and the answer back into the client's shape at the
end; a deployment whose api_style is the client's own dialect gets the client's bytes through unchanged.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any, Awaitable, Mapping, TypeVar, cast

from starlette.responses import Response

from gateway import errors as E
from gateway.accounting import RequestBooks, new_request_id, utc_now
from gateway.cache.service import Lookup
from gateway.decisions.fallback import BAD_RESPONSE, classify_failure
from gateway.decisions.pricing import expected_cost
from gateway.decisions.routing import Candidate, Decision, explain, rank
from gateway.dialects import DIALECTS
from gateway.dialects.base import ClientDialect, native_pool
from gateway.domain import Constraints, Deployment, PriceVersion, RequestFacts, Usage
from gateway.http.responses import JSONBytesResponse
from gateway.http.parse import ParsedRequest, parse_chat
from gateway.metering import usage_from_payload
from gateway.metrics import NO_PROVIDER, UNKNOWN_MODEL
from gateway.money import money_str
from gateway.providers.base import JSONResult, NativeProvider, UpstreamFailure
from gateway.services import DEFAULT_IDENTITY, Identity, Services
from gateway.streaming import StreamRelay

log = logging.getLogger(__name__)
T = TypeVar("T")

_OUTCOME_OF = {
    E.BudgetExceeded: "budget_exceeded",
    E.RateLimited: "rate_limited",
    E.NoEligibleDeployment: "no_route",
}


async def _shared_state(call: Awaitable[T], request_id: str) -> T:
    """Await a call into keys, rate limits or budgets (Redis / the ledger database). If that state cannot be
    reached, the request is refused (503) before any vendor is called: never sent unmetered or over budget."""
    try:
        return await call
    except E.GatewayError:
        raise
    except Exception:
        log.exception("shared state unavailable for request %s", request_id)
        raise E.StateUnavailable("the gateway's shared state is unavailable; retry shortly") from None


def _outcome(exc: Exception) -> str:
    for cls, outcome in _OUTCOME_OF.items():
        if isinstance(exc, cls):
            return outcome
    return "client_error"


class Pipeline:
    def __init__(self, services: Services) -> None:
        self.s = services

    # ---- entry points -------------------------------------------------------------------------------------------

    async def handle(self, api: str, raw: bytes, headers: Mapping[str, str]) -> Response:
        """One request of an inbound API (a key of gateway.dialects.DIALECTS: chat, embeddings, ...)."""
        return await self._handle(raw, headers, DIALECTS[api])

    def explain(self, raw: bytes, headers: Mapping[str, str]) -> tuple[RequestFacts, Decision, PriceVersion]:
        """The dry run of `gateway route` / `POST /admin/route/explain`: rank without sending anything."""
        parsed = parse_chat(raw, headers, self.s.tokens, self.s.config.gateway.default_expected_output_tokens)
        facts, pool, _ = self._resolve(parsed.facts)
        prices = self.s.price_book.current(utc_now())
        return facts, self._rank(facts, pool, prices), prices

    async def explain_warm(self, raw: bytes, headers: Mapping[str, str]) -> tuple[RequestFacts, Decision, PriceVersion]:
        """`explain`, counting the prompt caches this request would find warm (as the request path ranks)."""
        parsed = parse_chat(raw, headers, self.s.tokens, self.s.config.gateway.default_expected_output_tokens)
        facts, pool, _ = self._resolve(parsed.facts)
        now = utc_now()
        prices = self.s.price_book.current(now)
        lookup = await self._prefix_lookup(parsed, pool, prices)
        return facts, self._rank(facts, pool, prices, now, lookup), prices

    # ---- the path -----------------------------------------------------------------------------------------------

    async def _handle(self, raw: bytes, headers: Mapping[str, str], dialect: ClientDialect) -> Response:
        request_id = new_request_id()
        started_at, started_perf = utc_now(), time.perf_counter()
        base_headers = {"x-gateway-request-id": request_id}
        route = UNKNOWN_MODEL
        try:
            cfg = self.s.config.gateway
            if len(raw) > cfg.max_body_bytes:
                raise E.BodyTooLarge(f"request body exceeds {cfg.max_body_bytes} bytes")
            parsed = dialect.parse(raw, headers, self.s.tokens, cfg.default_expected_output_tokens)
            identity = await _shared_state(self._identify(headers), request_id)
            facts, pool, route = self._resolve(parsed.facts)
            if parsed.native_only:
                pool = native_pool(dialect, parsed, pool, self.s.api_styles)
            prices = self.s.price_book.current(started_at)
            lookup = await self._prefix_lookup(parsed, pool, prices)
            decision = self._rank(facts, pool, prices, started_at, lookup)
            if not decision.candidates:
                code = "context_length_exceeded" if decision.all_context_length else None
                raise E.NoEligibleDeployment(f"no eligible deployment for '{facts.model}': {explain(decision)}",
                                             code=code)
            attempts = decision.candidates[: cfg.max_attempts]
            books = RequestBooks(self.s, request_id, identity, route, started_at, started_perf, prices,
                                 facts.prompt_tokens, parsed.stream, dialect.api)
            if lookup is not None:
                books.on_answer = self.s.prefix_cache.on_answer(lookup, prices)
            elif self.s.prefix_cache is not None and facts.mode == "chat":
                books.on_answer = self.s.prefix_cache.unpredicted
            # Rate limits and budget reservation in one step (gateway/limits/admission.py). A request neither applies
            # to (no key with limits, no key or team budget) skips it, and the worst-case pricing it needs.
            adm = self.s.admission
            if adm is not None:
                tokens = facts.prompt_tokens + facts.expected_output_tokens if adm.rate_limited(identity) else None
                worst = self._worst_case(facts, attempts, prices) if adm.budgeted(identity) else None
                if tokens is not None or worst is not None:
                    books.reservation = await _shared_state(adm.admit(identity, request_id, tokens, worst),
                                                            request_id)
                    books.tpm_estimate = tokens
        except E.ClientError as exc:
            self.s.metrics.record_request(route, NO_PROVIDER, NO_PROVIDER, _outcome(exc))
            return dialect.error_response(exc, base_headers)
        except E.StateUnavailable as exc:
            return dialect.error_response(exc, base_headers)
        try:
            return await self._attempt_all(dialect, parsed, attempts, books, base_headers)
        except BaseException:
            # Whatever broke (including a cancelled request), the reservation and the open row are closed.
            await books.close(books.deployment, "upstream_error", "upstream_error", wait=False)
            raise

    async def authorise(self, headers: Mapping[str, str], request_id: str) -> Identity:
        """The caller's identity for requests that do not take the whole path (count_tokens): the same key check and
        the same 503 when the shared state cannot be reached."""
        return await _shared_state(self._identify(headers), request_id)

    def resolve(self, facts: RequestFacts) -> tuple[RequestFacts, list[Deployment], str]:
        """The candidate pool for the requested name (404 `model_not_found` when it is neither a route nor a model)."""
        return self._resolve(facts)

    async def _identify(self, headers: Mapping[str, str]) -> Identity:
        if self.s.auth is None:
            return DEFAULT_IDENTITY
        identity: Identity = await self.s.auth.authenticate(headers)
        return identity

    def _resolve(self, facts: RequestFacts) -> tuple[RequestFacts, list[Deployment], str]:
        """The candidate pool for the requested name: a route (with its constraints) or a model."""
        route = self.s.config.routes.get(facts.model)
        if route is not None:
            constraints = Constraints(route.min_quality, route.min_context,
                                      frozenset(route.providers) if route.providers is not None else None,
                                      route.max_cost)
            facts = replace(facts, constraints=constraints.merged(facts.constraints))
            return facts, self.s.by_mode.get(facts.mode, []), facts.model
        pool = self.s.by_model.get(facts.model)
        if not pool:
            raise E.ModelNotFound(f"The model '{facts.model}' does not exist: not a route or a deployed model",
                                  param="model")
        return facts, pool, facts.model

    def _rank(self, facts: RequestFacts, pool: list[Deployment], prices: PriceVersion,
              now: datetime | None = None, lookup: Lookup | None = None) -> Decision:
        h = self.s.health
        return rank(facts, pool, prices, now or utc_now(), h.cooling(), h.latencies(),
                    lookup.warm if lookup is not None else None)

    # ---- the prefix cache (gateway/cache): what the ranking expects vendors to serve from their prompt caches ----

    async def _prefix_lookup(self, parsed: ParsedRequest, pool: list[Deployment],
                             prices: PriceVersion) -> Lookup | None:
        """The request's expected cache hits per deployment of the pool (None: no deployment there caches, or a
        request that is not a chat)."""
        cache = self.s.prefix_cache
        if cache is None or parsed.facts.mode != "chat":
            return None
        return await cache.hint(parsed.body, pool, prices, parsed.segments)

    @staticmethod
    def _worst_case(facts: RequestFacts, attempts: tuple[Candidate, ...], prices: PriceVersion) -> Decimal:
        """Most any attempt could cost: the prompt at input price (at the cache-write price where writing costs
        more: the vendor may write all of it to its cache) plus every allowed output token."""
        worst = Decimal(0)
        for c in attempts:
            d = c.deployment
            out = facts.requested_output_tokens
            if out is None:
                out = d.max_output_tokens if d.max_output_tokens is not None else d.context_window - facts.prompt_tokens
            up = c.unit_prices  # the router's, in force for this prompt at `now`
            written = facts.prompt_tokens if up.cache_write > up.input else 0
            worst = max(worst, expected_cost(up, facts.prompt_tokens, max(out, 0), prices.fx(up.currency),
                                             cache_write_tokens=written))
        return worst

    async def _attempt_all(self, dialect: ClientDialect, parsed: ParsedRequest, attempts: tuple[Candidate, ...],
                           books: RequestBooks, base_headers: dict[str, str]) -> Response:
        failures: list[E.AttemptFailure] = []
        for n, cand in enumerate(attempts, 1):
            d = cand.deployment
            headers = {**base_headers, "x-gateway-expected-cached-tokens": str(cand.expected_cached_tokens)}
            native_body = parsed.native if dialect.native_style == self.s.api_styles.get(d.provider) else None
            native = native_body is not None
            if native_body is not None:
                body = {**native_body, "model": d.upstream_model}
            else:
                body = {**parsed.body, "model": d.upstream_model}
                if parsed.stream:
                    body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
            await books.open(d)
            try:
                if parsed.stream:
                    return await self._start_stream(dialect, d, body, parsed, books, n, headers, native)
                result = await self._call(d, body, parsed.facts.mode, native)
            except UpstreamFailure as f:
                verdict = classify_failure(f.kind, f.status)
                self.s.metrics.record_upstream_error(d.provider, verdict.kind)
                if not verdict.retry:
                    await books.close(d, "client_error", "client_error", attempts=n, error_kind=verdict.kind)
                    exc = E.UpstreamRequestError(f.status or 400, f.message or "the upstream rejected the request",
                                                 code=f.code, param=f.param, attempts=n, provider=d.provider,
                                                 model=d.model)
                    return dialect.error_response(exc, {**headers, **_route_headers(d, n)})
                if verdict.provider_fault:
                    await self.s.health.record_failure(d.provider, rate_limited=verdict.kind == "rate_limited")
                failures.append(E.AttemptFailure(d.provider, d.model, verdict.kind, f.status))
                if n < len(attempts):
                    self.s.metrics.record_fallback(d.provider, verdict.kind)
                continue
            return await self._respond(dialect, d, result, parsed, books, n, headers, native)
        last = attempts[len(failures) - 1].deployment if failures else None
        await books.close(last, "upstream_error", "upstream_error", attempts=len(failures),
                          error_kind=failures[-1].kind if failures else None)
        return dialect.error_response(E.UpstreamUnavailable(failures), base_headers)

    async def _call(self, d: Deployment, body: dict[str, Any], mode: str, native: bool) -> JSONResult:
        provider = self.s.providers[d.provider]
        if native:
            return await cast(NativeProvider, provider).complete_native(d, body)
        return await (provider.complete(d, body) if mode == "chat" else provider.embed(d, body))

    async def _respond(self, dialect: ClientDialect, d: Deployment, result: JSONResult, parsed: ParsedRequest,
                       books: RequestBooks, n: int, base_headers: dict[str, str], native: bool) -> Response:
        usage = dialect.native_usage(result.obj) if native else usage_from_payload(result.obj)
        if usage is None:
            usage = Usage(parsed.facts.prompt_tokens, 0, 0, source="estimated")
        await self.s.health.record_success(d.key, time.perf_counter() - books.started_perf)
        cost = await books.close(d, "success", "success", usage=usage, attempts=n, wait=True)
        headers = {**base_headers, **_route_headers(d, n)}
        if cost is not None:
            headers.update({
                "x-gateway-cost": money_str(cost.total_reporting),
                "x-gateway-currency": cost.reporting_currency,
            })
        headers["x-gateway-input-tokens"] = str(usage.input_tokens)
        headers["x-gateway-cached-input-tokens"] = str(usage.cached_input_tokens)
        headers["x-gateway-output-tokens"] = str(usage.output_tokens)
        return JSONBytesResponse(result.body if native else dialect.render(result, parsed), headers)

    async def _start_stream(self, dialect: ClientDialect, d: Deployment, body: dict[str, Any], parsed: ParsedRequest,
                            books: RequestBooks, n: int, base_headers: dict[str, str], native: bool) -> Response:
        """Open the vendor stream and wait for its first batch of events: until then, a failure can still fall
        back."""
        provider = self.s.providers[d.provider]
        if native:
            events = await cast(NativeProvider, provider).stream_native(d, body)
        else:
            events = await provider.stream(d, body)
        batches = events.__aiter__()
        try:
            first = await batches.__anext__()
        except StopAsyncIteration:
            await events.aclose()
            raise UpstreamFailure(BAD_RESPONSE) from None
        except BaseException:
            await events.aclose()
            raise
        await self.s.health.record_success(d.key, time.perf_counter() - books.started_perf)
        headers = {**base_headers, **_route_headers(d, n), "cache-control": "no-cache", "x-accel-buffering": "no"}
        client = dialect.native_stream(parsed) if native else dialect.client_stream(parsed)
        return StreamRelay(books, d, events, batches, first, client, n, headers)


def _route_headers(d: Deployment, attempts: int) -> dict[str, str]:
    return {"x-gateway-provider": d.provider, "x-gateway-model": d.upstream_model,
            "x-gateway-attempts": str(attempts)}
