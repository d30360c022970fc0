"""Upstream failure classification (contract 4 and 6): the metrics kind, retry or not, and cool-down blame."""

from __future__ import annotations

import pytest

from gateway.decisions import fallback as F
from gateway.decisions.fallback import classify_exception, classify_status

# (status, kind, retry, counts towards the provider's cool-down)
STATUSES = [
    (400, F.HTTP_4XX, False, False),
    (404, F.HTTP_4XX, False, False),
    (422, F.HTTP_4XX, False, False),
    (401, F.ACCOUNT, True, True),
    (402, F.ACCOUNT, True, True),
    (403, F.ACCOUNT, True, True),
    (408, F.HTTP_4XX, True, True),
    (409, F.HTTP_4XX, True, True),
    (429, F.RATE_LIMITED, True, True),
    (500, F.HTTP_5XX, True, True),
    (502, F.HTTP_5XX, True, True),
    (503, F.HTTP_5XX, True, True),
    (504, F.HTTP_5XX, True, True),
    (529, F.HTTP_5XX, True, True),
    (599, F.HTTP_5XX, True, True),
]


@pytest.mark.parametrize(("status", "kind", "retry", "provider_fault"), STATUSES)
def test_status_classification_follows_the_contract(status: int, kind: str, retry: bool, provider_fault: bool) -> None:
    v = classify_status(status)
    assert (v.kind, v.retry, v.provider_fault) == (kind, retry, provider_fault)


@pytest.mark.parametrize("status", [400, 404, 422])
def test_request_faults_are_returned_to_the_client_and_do_not_blame_the_provider(status: int) -> None:
    v = classify_status(status)
    assert not v.retry and not v.provider_fault


@pytest.mark.parametrize("status", [405, 413, 415])
def test_other_4xx_try_the_next_deployment_without_cooling_the_provider(status: int) -> None:
    v = classify_status(status)
    assert (v.kind, v.retry, v.provider_fault) == (F.HTTP_4XX, True, False)


@pytest.mark.parametrize("kind", [F.TIMEOUT, F.CONNECT, F.BAD_RESPONSE])
def test_transport_failures_keep_their_kind_and_are_retried(kind: str) -> None:
    v = classify_exception(kind)
    assert (v.kind, v.retry, v.provider_fault) == (kind, True, True)


def test_kinds_are_exactly_the_metric_label_values_of_contract_6() -> None:
    assert {F.TIMEOUT, F.CONNECT, F.RATE_LIMITED, F.HTTP_5XX, F.ACCOUNT, F.HTTP_4XX, F.BAD_RESPONSE} == {
        "timeout", "connect", "rate_limited", "http_5xx", "account", "http_4xx", "bad_response"}


@pytest.mark.parametrize("status", [None, 200])
def test_a_body_that_is_not_json_is_a_bad_response_whatever_its_status(status: int | None) -> None:
    v = F.classify_failure(F.BAD_RESPONSE, status)
    assert (v.kind, v.retry, v.provider_fault) == (F.BAD_RESPONSE, True, True)


def test_a_failure_with_a_status_is_classified_by_the_status() -> None:
    assert F.classify_failure("http_503", 503).kind == F.HTTP_5XX
    assert F.classify_failure(F.TIMEOUT, None).kind == F.TIMEOUT
