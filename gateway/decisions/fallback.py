"""What an upstream failure means: its kind (the metrics label), and whether to try the next deployment.

Contract section 4: connect errors, timeouts, 408, 409, 429, 5xx and the operator's own account problems
(401, 402, 403) move on to the next deployment; 400/404/422 are the request's own fault and go back to the
client. Other 4xx (405, 413, ...) say nothing certain about the request, so another vendor gets a chance.
"""

from __future__ import annotations

from dataclasses import dataclass

TIMEOUT = "timeout"
CONNECT = "connect"
RATE_LIMITED = "rate_limited"
HTTP_5XX = "http_5xx"
ACCOUNT = "account"
HTTP_4XX = "http_4xx"
BAD_RESPONSE = "bad_response"

CLIENT_FAULT_STATUSES = frozenset({400, 404, 422})


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: str
    retry: bool  # try the next deployment
    provider_fault: bool  # counts towards the provider's cool-down


def classify_status(status: int) -> Verdict:
    if status in CLIENT_FAULT_STATUSES:
        return Verdict(HTTP_4XX, retry=False, provider_fault=False)
    if status == 429:
        return Verdict(RATE_LIMITED, retry=True, provider_fault=True)
    if status in (401, 402, 403):
        return Verdict(ACCOUNT, retry=True, provider_fault=True)
    if status >= 500:
        return Verdict(HTTP_5XX, retry=True, provider_fault=True)
    # 408 and 409 are transient by definition; other 4xx are not the request's documented fault.
    return Verdict(HTTP_4XX, retry=True, provider_fault=status in (408, 409))


def classify_exception(kind: str) -> Verdict:
    """For transport failures already named by the provider adapter (timeout, connect, bad_response)."""
    return Verdict(kind, retry=True, provider_fault=True)


def classify_failure(kind: str, status: int | None) -> Verdict:
    """One failed attempt, as the provider adapter reported it. A body that is not what the API promises is
    `bad_response` whatever its status (a 200 with a non-JSON body is the vendor's fault, not an HTTP 4xx)."""
    if kind == BAD_RESPONSE or not status:
        return classify_exception(kind)
    return classify_status(status)
