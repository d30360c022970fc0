"""No secret leaves the gateway (issue 7): client keys, their stored hashes, the operator's provider keys and the
vendors' account ids appear in no response, no log line, no metric and no report.

Real traffic through two `gateway serve` replicas (Redis + PostgreSQL) with keys issued both by the admin API and
by the `gateway keys create` CLI, including a vendor refusing the operator's account (401 with the account id in
its body), a revoked key, an unknown key and a client trying to smuggle a key in the body; then every surface an
operator or a client can see is collected and grepped.
"""

from __future__ import annotations

import os
import re
import subprocess
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx

from gateway.config.load import load_config
from gateway.demo.vendors import VendorCluster
from gateway.keys.secrets import derive_secret, hash_key
from tests.e2e.procs import GATEWAY_BIN, clear_redis_prefix, fresh_postgres, redis_prefix
from tests.e2e.test_budgets_e2e import (ADMIN, bearer, chat_body, create_key, gateway_config, pg_rows,
                                        start_replicas)


INFO_LOGGING = """\
import logging
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
logging.getLogger("e2e").info("every logger at INFO")
"""


def cli(config: Any, env: dict[str, str], *args: str) -> str:
    done = subprocess.run([GATEWAY_BIN, *args, "--config", str(config)], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60, cwd=str(config.parent))
    assert done.returncode == 0, f"gateway {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def seen(r: httpx.Response) -> str:
    """Everything a client sees of a response: status line, headers, body."""
    headers = "\n".join(f"{k}: {v}" for k, v in r.headers.items())
    return f"{r.status_code}\n{headers}\n{r.text}"


def test_no_key_hash_or_provider_secret_in_responses_logs_metrics_or_reports(vendors: VendorCluster, tmp_path):
    prefix = redis_prefix()
    try:
        with fresh_postgres() as pg, ExitStack() as stack:
            config_path, env = gateway_config(tmp_path, vendors, ledger_url=pg, redis_prefix_=prefix)
            # The replicas log every logger at INFO (the gateway's own, its libraries', uvicorn's), as an operator
            # who turns logging up would see them: that is what gets grepped.
            site = tmp_path / "site"
            site.mkdir()
            (site / "sitecustomize.py").write_text(INFO_LOGGING)
            serve_env = {**env, "PYTHONPATH": os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH"))
                                                              if p)}
            a, b = start_replicas(stack, config_path, serve_env, tmp_path, 2, log_prefix="secrets")
            assert "INFO e2e: every logger at INFO" in a.log() and "INFO e2e: every logger at INFO" in b.log()
            _run_and_grep(vendors, config_path, env, a, b, pg)
    finally:
        clear_redis_prefix(prefix)


def _run_and_grep(vendors: VendorCluster, config_path: Any, env: dict[str, str], a: Any, b: Any, pg: str) -> None:
    vendors.reset()
    client_seen: list[str] = []  # every response a client got (not the ones that hand out a key)
    operator_seen: list[str] = []  # admin API answers, CLI output, metrics, reports, logs

    # --- keys: from the admin API and from the CLI -------------------------------------------------------------
    k_api = create_key(a.url, "sec-api", budget="10", budget_period="day", rpm=1000)
    out = cli(config_path, env, "keys", "create", "--team", "sec-cli", "--budget", "5", "--budget-period", "month")
    m = re.search(r"^id:\s+(\S+)$.*^key:\s+(\S+)$", out, re.S | re.M)
    assert m, out
    k_cli = {"id": m.group(1), "key": m.group(2)}
    k_revoked = create_key(b.url, "sec-api")
    keys = [k_api, k_cli, k_revoked]

    # --- traffic --------------------------------------------------------------------------------------------------
    def post(url: str, path: str, key: str, body: dict[str, Any]) -> httpx.Response:
        r = httpx.post(url + path, headers=bearer(key), json=body, timeout=30)
        client_seen.append(seen(r))
        return r

    assert post(a.url, "/v1/chat/completions", k_api["key"], chat_body("auto", "hello")).status_code == 200
    assert post(b.url, "/v1/chat/completions", k_cli["key"], chat_body("premium", "hi there")).status_code == 200
    with httpx.stream("POST", b.url + "/v1/chat/completions", headers=bearer(k_cli["key"]), timeout=30,
                      json={**chat_body("premium", "stream it"), "stream": True,
                            "stream_options": {"include_usage": True}}) as r:
        client_seen.append(f"{r.status_code}\n{dict(r.headers)}\n{r.read().decode()}")
        assert r.status_code == 200
    assert post(a.url, "/v1/embeddings", k_api["key"], {"model": "embed", "input": "vector me"}).status_code == 200

    # The vendor refuses the operator's account: its 401 body names the account; the gateway falls back...
    vendors.control("zhipu", "error_401", count=1)
    r = post(a.url, "/v1/chat/completions", k_api["key"], chat_body("auto", "fallback please"))
    assert r.status_code == 200 and r.headers["x-gateway-provider"] != "zhipu"
    assert vendors.stats("zhipu")["requests"] >= 1
    # ... or, with nowhere else to go, answers with its own words (non-streaming and streaming).
    vendors.control("deepseek", "error_401", count=2)
    r = post(b.url, "/v1/chat/completions", k_cli["key"], chat_body("deepseek-v2", "only deepseek"))
    assert r.status_code == 502, r.text
    with httpx.stream("POST", a.url + "/v1/chat/completions", headers=bearer(k_api["key"]), timeout=30,
                      json={**chat_body("deepseek-v2", "stream only deepseek"), "stream": True}) as r:
        client_seen.append(f"{r.status_code}\n{dict(r.headers)}\n{r.read().decode()}")
        assert r.status_code == 502
    assert vendors.stats("deepseek")["requests"] >= 2

    # Revoked (through the CLI), unknown, and a key smuggled into the body: refused, nothing echoed.
    cli(config_path, env, "keys", "revoke", k_revoked["id"])
    for url in (a.url, b.url):
        r = post(url, "/v1/chat/completions", k_revoked["key"], chat_body("auto", "still here?"))
        assert r.status_code == 401
    r = post(a.url, "/v1/chat/completions", k_api["key"][:-4] + "AAAA", chat_body("auto", "guess"))
    assert r.status_code == 401
    r = post(a.url, "/v1/chat/completions", k_api["key"],
             {**chat_body("auto", "route me elsewhere"), "api_key": k_cli["key"], "api_base": "http://evil.test"})
    assert r.status_code == 400
    for url in (a.url, b.url):  # a key on an admin endpoint is not the admin key
        r = httpx.get(url + "/admin/keys", headers=bearer(k_api["key"]), timeout=10)
        client_seen.append(seen(r))
        assert r.status_code == 401

    # --- everything an operator can look at -----------------------------------------------------------------
    today = datetime.now(timezone.utc).date()
    window = {"from": str(today - timedelta(days=1)), "to": str(today + timedelta(days=1))}
    for url in (a.url, b.url):
        operator_seen.append(httpx.get(url + "/metrics", timeout=10).text)
        for path, params in (("/admin/keys", {}), ("/admin/teams", {}), ("/admin/prices", {}),
                             ("/admin/reports/spend", {**window, "group_by": "team,key,provider,model",
                                                       "format": "csv"}),
                             ("/admin/reports/spend", {**window, "group_by": "key,route", "format": "json"})):
            r = httpx.get(url + path, headers=ADMIN, params=params, timeout=10)
            assert r.status_code == 200, (path, r.text)
            operator_seen.append(seen(r))
    listing = httpx.get(a.url + "/admin/keys", headers=ADMIN, timeout=10).json()["data"]
    assert {k["id"] for k in keys} <= {k["id"] for k in listing}
    for fmt in ("csv", "json", "table"):
        report = cli(config_path, env, "report", "--from", window["from"], "--to", window["to"],
                     "--group-by", "team,key,provider,model", "--format", fmt)
        operator_seen.append(report)
    assert k_api["id"] in operator_seen[-1] and k_cli["id"] in operator_seen[-1]  # the reports do cover the keys
    operator_seen.append(cli(config_path, env, "keys", "list"))
    operator_seen.append(cli(config_path, env, "teams", "list"))
    logs = [a.log(), b.log()]

    # --- the secrets -----------------------------------------------------------------------------------------------
    config = load_config(config_path, env=env)
    secret = derive_secret(config.gateway)
    stored = {r["id"]: r["hash"] for r in pg_rows(pg, "SELECT id, hash FROM api_keys")}
    forbidden: dict[str, str] = {}
    for k in keys:
        digest = hash_key(secret, k["key"])
        assert stored[k["id"]] == digest  # so the grep below looks for the hash really stored
        forbidden[f"client key {k['id']}"] = k["key"]
        forbidden[f"secret part of key {k['id']}"] = k["key"].split("-", 2)[2]
        forbidden[f"hash of key {k['id']}"] = digest
    for name, provider in config.providers.items():
        assert provider.api_key is not None
        forbidden[f"{name} api key"] = provider.api_key.get_secret_value()
        forbidden[f"{name} account id"] = vendors.spec(name).account_id
    assert forbidden["deepseek api key"] == "demo-deepseek-key"

    places = ([("client response", t) for t in client_seen] + [("operator view", t) for t in operator_seen]
              + [("serve log", t) for t in logs])
    leaks = [f"{what} in a {where}" for where, text in places for what, value in forbidden.items() if value in text]
    assert not leaks, leaks
    # The admin key is sent by the operator but never shown back, logged or exported.
    assert not [where for where, text in places if "demo-admin-key" in text]
