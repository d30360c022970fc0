"""Through the real gateway and the OpenAI SDK: every ledger row names the API the request came in on, writes no
cache tokens for vendors that report none, and the finance report groups by api over HTTP."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import httpx

from tests.e2e.conftest import ledger_rows

HEADER = ("api,requests,input_tokens,cached_input_tokens,cache_write_tokens,output_tokens,input_cost,"
          "cached_input_cost,cache_write_cost,output_cost,total_cost,baseline_cost,savings,currency")


def test_chat_and_embedding_rows_record_their_api_and_report_by_it(client, gateway) -> None:  # type: ignore[no-untyped-def]
    client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hello"}], max_tokens=8)
    stream = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}],
                                            max_tokens=8, stream=True)
    for _ in stream:
        pass
    client.embeddings.create(model="embed", input=["price war"])
    rows = ledger_rows(gateway, 3)
    assert sorted(r["api"] for r in rows) == ["chat", "chat", "embeddings"]
    assert all(r["cache_write_tokens"] == 0 and Decimal(r["cache_write_cost"]) == 0 for r in rows)
    url = f"{gateway.url}/admin/reports/spend?from=2000-01-01&to=2100-01-01&group_by=api&format=csv"
    text = httpx.get(url, headers={"Authorization": "Bearer demo-admin-key"}).text
    assert text.splitlines()[0] == HEADER
    report = {r["api"]: r for r in csv.DictReader(io.StringIO(text))}
    assert (report["chat"]["requests"], report["embeddings"]["requests"]) == ("2", "1")
    embed = next(r for r in rows if r["api"] == "embeddings")
    assert Decimal(report["embeddings"]["total_cost"]) == Decimal(embed["total_cost_reporting"])
