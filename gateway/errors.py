"""One exception hierarchy for the gateway: facts about what went wrong, no HTTP.

    GatewayError
     +-- ConfigError                 bad configuration or price file (file, key path, reason)
     +-- ClientError                 the request itself is wrong; never retried
     |    +-- BadRequest             400 invalid_request_error (bad JSON, wrong types, forbidden fields)
     |    +-- BodyTooLarge           413
 |    +-- HeadersTooLarge        431
     |    +-- ModelNotFound          404 model_not_found
     |    +-- NoEligibleDeployment   400 no_eligible_deployment / context_length_exceeded
     |    +-- Unauthorized           401 (client key or admin key)
     |    +-- RateLimited            429 rate_limit_exceeded, with retry_after
     |    +-- BudgetExceeded         429 budget_exceeded
     |    +-- NotFound               404 for admin resources
     +-- StateUnavailable            shared state (Redis, ledger database) unreachable before anything was sent: 503
     +-- UpstreamRequestError        the vendor refused the request as the client's fault (400/404/422): relayed
     +-- UpstreamUnavailable         every attempt failed: 502, or 504 when the last failure was a timeout

`gateway/http/errors.py` is the one place that maps these to status codes and the OpenAI error body.
"""

from __future__ import annotations

from dataclasses import dataclass


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    pass


class ClientError(GatewayError):
    code: str | None = None
    param: str | None = None

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param


class BadRequest(ClientError):
    code = "invalid_request"


class BodyTooLarge(ClientError):
    code = "request_too_large"


class HeadersTooLarge(ClientError):
    code = "request_header_fields_too_large"


class ModelNotFound(ClientError):
    code = "model_not_found"


class NoEligibleDeployment(ClientError):
    code = "no_eligible_deployment"


class Unauthorized(ClientError):
    code = "invalid_api_key"


class NotFound(ClientError):
    code = "not_found"


class RateLimited(ClientError):
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BudgetExceeded(ClientError):
    code = "budget_exceeded"


class StateUnavailable(GatewayError):
    """Budgets, rate limits or the ledger could not be reached, so the request was not sent anywhere."""


@dataclass(frozen=True)
class AttemptFailure:
    """One failed upstream attempt: which provider, and the kind of failure (a metrics `kind` value)."""

    provider: str
    model: str
    kind: str  # timeout, connect, rate_limited, http_5xx, account, http_4xx, bad_response
    status: int | None = None


class UpstreamRequestError(GatewayError):
    """The vendor said the request is invalid (400/404/422): relayed to the client with its status."""

    def __init__(self, status: int, message: str, *, code: str | None, param: str | None, attempts: int,
                 provider: str, model: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.attempts = attempts
        self.provider = provider
        self.model = model


class UpstreamUnavailable(GatewayError):
    def __init__(self, failures: list[AttemptFailure]) -> None:
        self.failures = failures
        tried = ", ".join(f"{f.provider}/{f.model}: {f.kind}" + (f" {f.status}" if f.status else "")
                          for f in failures)
        super().__init__(f"all upstream attempts failed ({tried})")

    @property
    def timed_out(self) -> bool:
        return bool(self.failures) and self.failures[-1].kind == "timeout"
