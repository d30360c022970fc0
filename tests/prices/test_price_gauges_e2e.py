"""After `PUT /admin/prices`, a scrape shows the new prices with the new version (issue 15: the version gauge
followed at once, `gateway_price_per_million_tokens` kept the old prices)."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import GatewayThread
from tests.faults.conftest import MODEL, faults_config
from tests.faults.conftest import vendor  # noqa: F401 - the loopback vendor fixture
from tests.faults.vendor import LoopbackVendor


def price_samples(gw: GatewayThread) -> tuple[float, dict[str, float]]:
    version, prices = 0.0, {}
    for family in text_string_to_metric_families(httpx.get(gw.url + "/metrics").text):
        for s in family.samples:
            if s.name == "gateway_price_table_version":
                version = s.value
            if s.name == "gateway_price_per_million_tokens" and s.labels["provider"] == "flaky":
                prices[s.labels["direction"]] = s.value
    return version, prices


def test_the_price_gauges_follow_a_put_as_soon_as_the_version_does(vendor: LoopbackVendor) -> None:
    with GatewayThread(faults_config(vendor.url, vendor.url)) as gw:
        assert price_samples(gw) == (1.0, {"input": 1.0, "cached_input": 1.0, "output": 2.0})
        put = httpx.put(gw.url + "/admin/prices", headers={"authorization": "Bearer admin-secret"},
                        json={"prices": [{"provider": "flaky", "model": MODEL, "input": "0.0005",
                                          "cached_input": "0.0001"}]})
        assert put.status_code == 200, put.text
        assert price_samples(gw) == (2.0, {"input": 0.5, "cached_input": 0.1, "output": 2.0})
