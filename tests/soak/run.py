"""`make soak`: two replicas on PostgreSQL and Redis under mixed traffic, with a Redis blip and a PostgreSQL blip.

    python -m tests.soak.run [--duration 600] [--blip 10]

Two `gateway serve` processes share a fresh PostgreSQL database and a Redis prefix, each reached through a TCP
proxy this script cuts (`tests/e2e/cutproxy.py`): Redis for `--blip` seconds at 30 % of the run, PostgreSQL at
60 %. The simulated vendors (in this process) count what they receive. Traffic, through the OpenAI SDK: plain and
streamed chat on both replicas, streams the client abandons after the first chunk, `auto` requests whose
cheapest vendor fails now and then (fallbacks), a budgeted key that runs out, and a price change every 15 s.

At the end (traffic stopped, both journals drained) it prints, and exits 1 if any check fails:
- RSS of each replica after warm-up and at the end;
- the ledger's attempts (one row per request, `attempts` vendor calls each) against the vendors' own count;
- the ledger against Prometheus (sum of both replicas): tokens per direction and cost, exactly;
- the budgeted key's spend against its budget;
- the share of requests served during each blip.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

import httpx
import openai
from prometheus_client.parser import text_string_to_metric_families

from gateway.demo.vendors import VendorCluster, VendorClusterThread, env_for
from tests.e2e.cutproxy import CutProxy
from tests.e2e.procs import ServeProcess, clear_redis_prefix, demo_data, fresh_postgres, redis_prefix, write_config
from tests.e2e.traffic import Sent, Traffic, send, served_share

ADMIN = {"Authorization": "Bearer demo-admin-key"}


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for fam in text_string_to_metric_families(httpx.get(url + "/metrics", timeout=10).text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric_sum(samples: list[dict[Any, float]], name: str, **labels: str) -> float:
    total = 0.0
    for m in samples:
        for (n, lab), v in m.items():
            d = dict(lab)
            if n == name and all(d.get(k) == v2 for k, v2 in labels.items()):
                total += v
    return total


def pg_query(url: str, sql: str) -> list[Any]:
    import asyncio

    import asyncpg

    async def run() -> list[Any]:
        conn = await asyncpg.connect(url)
        try:
            return list(await conn.fetch(sql))
        finally:
            await conn.close()

    return asyncio.run(run())


class Soak:
    def __init__(self, duration: float, blip: float, work: Path, vendors: VendorCluster, pg_url: str,
                 pg_proxy: CutProxy, redis_proxy: CutProxy, prefix: str) -> None:
        self.duration, self.blip, self.work, self.vendors = duration, blip, work, vendors
        self.pg_url, self.pg_proxy, self.redis_proxy, self.prefix = pg_url, pg_proxy, redis_proxy, prefix
        self.replicas: list[ServeProcess] = []
        self.windows: dict[str, tuple[float, float]] = {}
        self.failures: list[str] = []
        self.disconnects = 0
        self.price_changes = 0
        self._stop = threading.Event()

    def start(self) -> None:
        data = demo_data()
        g = data["gateway"]
        g.update(ledger_url=self.pg_url.replace("127.0.0.1:5432", self.pg_proxy.url_host),
                 redis_url=f"redis://{self.redis_proxy.url_host}/0", redis_prefix=self.prefix,
                 require_api_key=False)
        for name in ("a", "b"):
            g["spool_dir"] = str(self.work / f"spool-{name}")
            config = write_config(self.work / f"gateway-{name}.yaml", data)
            proc = ServeProcess(config, env_for(self.vendors), self.work / f"replica-{name}.log")
            self.replicas.append(proc.wait_ready())

    def stop(self) -> None:
        for r in self.replicas:
            r.stop()

    # ----------------------------------------------------------------------------------------------- load
    def traffic(self, key: str) -> Traffic:
        urls = [r.url for r in self.replicas]
        clients = {(u, k): openai.OpenAI(base_url=u + "/v1", api_key=k, max_retries=0, timeout=60)
                   for u in urls for k in (key, "sk-app-own-key")}

        def make(thread: int, i: int) -> tuple[openai.OpenAI, dict[str, Any], bool]:
            url = urls[(thread + i) % 2]
            kind = thread % 4
            if kind == 0:  # the budgeted key, plain
                return clients[(url, key)], _body("deepseek-v2", f"key {i}"), False
            if kind == 1:  # streams on a fixed deployment
                return clients[(url, "sk-app-own-key")], _body("hunyuan-standard", f"stream {i}"), True
            if kind == 2:  # routed: fallbacks when the cheapest fails
                return clients[(url, "sk-app-own-key")], _body("auto", f"auto {i}"), i % 3 == 0
            return clients[(url, "sk-app-own-key")], _body("deepseek-v2", f"plain {i}"), False

        return Traffic(make, threads=8, pause_s=0.05)

    def background(self) -> list[threading.Thread]:
        def every(period: float, fn: Callable[[int], None]) -> Callable[[], None]:
            def loop() -> None:
                n = 0
                while not self._stop.wait(period):
                    with contextlib.suppress(Exception):
                        fn(n)
                    n += 1
            return loop

        def disconnect(n: int) -> None:  # a client that reads the first chunk and leaves
            url = self.replicas[n % 2].url
            with httpx.stream("POST", url + "/v1/chat/completions", json={**_body("hunyuan-standard", f"leave {n}"),
                              "stream": True}, timeout=30) as r:
                for _ in r.iter_bytes():
                    break
            self.disconnects += 1

        def price_change(n: int) -> None:
            price = str(Decimal("0.0005") + Decimal(n % 3) / 10000)
            r = httpx.put(self.replicas[n % 2].url + "/admin/prices", headers=ADMIN, timeout=10,
                          json={"prices": [{"provider": "dashscope", "model": "qwen-long", "input": price}]})
            if r.status_code == 200:
                self.price_changes += 1

        def vendor_failures(n: int) -> None:
            # The cheapest deployment of `auto` fails two requests in a row now and then: they fall back (two
            # failures stay under the cool-down threshold, so the route keeps it).
            self.vendors.control("zhipu", random.choice(["error_500", "timeout", "ok"]), delay_s=0.2, count=2)

        threads = [threading.Thread(target=every(0.7, disconnect), daemon=True),
                   threading.Thread(target=every(15.0, price_change), daemon=True),
                   threading.Thread(target=every(5.0, vendor_failures), daemon=True)]
        for t in threads:
            t.start()
        return threads

    def run(self) -> int:
        self.start()
        worst_key = httpx.post(self.replicas[0].url + "/admin/keys", headers=ADMIN, timeout=10,
                               json={"team": "soak", "budget": "0.01", "budget_period": "day"}).json()
        key, key_id, budget = worst_key["key"], worst_key["id"], Decimal("0.01")
        send(openai.OpenAI(base_url=self.replicas[0].url + "/v1", api_key=key, max_retries=0),
             _body("deepseek-v2", "seed the key's counter"))
        t0 = time.monotonic()
        rss_start: list[int] = []
        helpers = self.background()
        with self.traffic(key) as traffic:
            warm = min(10.0, self.duration * 0.1)
            time.sleep(warm)
            rss_start = [rss_kb(r.proc.pid) for r in self.replicas]
            self._blip_at(t0 + self.duration * 0.3, "redis", self.redis_proxy)
            self._blip_at(t0 + self.duration * 0.6, "postgresql", self.pg_proxy)
            time.sleep(max(0.0, t0 + self.duration - time.monotonic()))
            self._stop.set()
        for t in helpers:
            t.join(timeout=30)
        rss_end = [rss_kb(r.proc.pid) for r in self.replicas]
        self._settle()
        try:
            self.report(traffic.sent, traffic, rss_start, rss_end, key_id, budget)
        finally:
            self.stop()
        return 1 if self.failures else 0

    def _blip_at(self, at: float, name: str, proxy: CutProxy) -> None:
        time.sleep(max(0.0, at - time.monotonic()))
        proxy.cut()
        start = time.monotonic()
        time.sleep(self.blip)
        proxy.restore()
        self.windows[name] = (start, time.monotonic())
        print(f"  {name} blip: {self.blip:.0f} s", flush=True)

    def _settle(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pending = sum(metric_sum([metrics(r.url)], "gateway_ledger_pending_rows") for r in self.replicas)
            if pending == 0:
                return
            time.sleep(0.5)
        self.failures.append("the ledger journals did not drain within 60 s")

    # --------------------------------------------------------------------------------------------- report
    def check(self, ok: bool, line: str) -> None:
        print(f"  [{'ok' if ok else 'FAIL'}] {line}")
        if not ok:
            self.failures.append(line)

    def report(self, sent: list[Sent], traffic: Traffic, rss_start: list[int], rss_end: list[int], key_id: str,
               budget: Decimal) -> None:
        rows = pg_query(self.pg_url, "SELECT request_id, status, attempts, key_id, input_tokens, "
                                     "cached_input_tokens, output_tokens, total_cost_reporting FROM ledger")
        samples = [metrics(r.url) for r in self.replicas]
        received = sum(self.vendors.stats(p)["requests"] for p in self.vendors.vendors)
        attempts = sum(r["attempts"] or 0 for r in rows)
        by_status: dict[str, int] = {}
        for r in rows:
            by_status[r["status"]] = by_status.get(r["status"], 0) + 1
        print(f"\nsoak: {self.duration:.0f} s, {len(sent)} SDK requests + {self.disconnects} abandoned streams, "
              f"{self.price_changes} price changes")
        for name, start, end in zip("ab", rss_start, rss_end):
            print(f"  replica {name}: RSS {start / 1024:.1f} MiB after warm-up -> {end / 1024:.1f} MiB at the end "
                  f"({(end - start) / 1024:+.1f} MiB)")
        print(f"  ledger rows by status: {dict(sorted(by_status.items()))}; "
              f"{sum(1 for r in rows if (r['attempts'] or 0) > 1)} fell back")
        self.check(len(rows) == len({r['request_id'] for r in rows}), f"ledger rows unique: {len(rows)}")
        # An attempt whose connection failed before the vendor read it (a pooled keep-alive connection the vendor's
        # server closed as it was reused) is a real attempt the vendor never saw: it is counted as kind="connect".
        unseen = int(metric_sum(samples, "gateway_upstream_errors_total", kind="connect"))
        self.check(received <= attempts <= received + unseen,
                   f"ledger attempts {attempts} == vendor-received requests {received}"
                   + (f" (+ at most {unseen} connect failures the vendor never saw)" if unseen else ""))
        self.check("in_flight" not in by_status, "no row left in flight")
        for direction, column in (("input", "input_tokens"), ("cached_input", "cached_input_tokens"),
                                  ("output", "output_tokens")):
            ledger_sum = sum(r[column] or 0 for r in rows if r["total_cost_reporting"] is not None)
            prom = metric_sum(samples, "gateway_tokens_total", direction=direction)
            self.check(prom == ledger_sum, f"tokens {direction}: Prometheus {prom:.0f} == ledger {ledger_sum}")
        ledger_cost = sum((Decimal(r["total_cost_reporting"]) for r in rows if r["total_cost_reporting"] is not None),
                          Decimal(0))
        prom_cost = metric_sum(samples, "gateway_cost_total")
        self.check(abs(Decimal(repr(prom_cost)) - ledger_cost) <= ledger_cost * Decimal("1e-9") + Decimal("1e-12"),
                   f"cost: Prometheus {prom_cost:.9f} == ledger {ledger_cost}")
        key_spend = sum((Decimal(r["total_cost_reporting"] or 0) for r in rows if r["key_id"] == key_id), Decimal(0))
        refused = sum(1 for s in sent if s.code == "budget_exceeded")
        self.check(key_spend <= budget, f"budget: key spent {key_spend} of {budget} ({refused} refused 429)")
        for name, (start, end) in self.windows.items():
            during = traffic.between(start, end)
            unbudgeted = [s for s in during if s.code != "budget_exceeded"]
            print(f"  during the {name} blip: {len(during)} requests, {served_share(unbudgeted):.1%} of those not "
                  f"refused for budget served")
            self.check(served_share(unbudgeted) >= 0.95, f"{name} blip: served share >= 95 %")
        errors: dict[tuple[int, str | None], int] = {}
        for s in sent:
            if not s.ok and s.code != "budget_exceeded":
                errors[(s.status, s.code)] = errors.get((s.status, s.code), 0) + 1
        print(f"  client errors other than budget: {errors or 'none'}")
        print("soak:", "PASS" if not self.failures else f"FAIL ({len(self.failures)} checks)")


def _body(model: str, text: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 24}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of traffic (default 600)")
    ap.add_argument("--blip", type=float, default=None, help="seconds each dependency is cut (default: 10, "
                                                             "or 10 %% of a shorter run)")
    args = ap.parse_args(argv)
    blip = args.blip if args.blip is not None else min(10.0, args.duration * 0.1)
    work = Path(tempfile.mkdtemp(prefix="gw-soak-"))
    prefix = redis_prefix()
    print(f"soak: {args.duration:.0f} s, blips of {blip:.0f} s, work dir {work}", flush=True)
    with VendorClusterThread() as vendors, fresh_postgres() as pg_url, \
            CutProxy("127.0.0.1", 5432) as pg_proxy, CutProxy("127.0.0.1", 6379) as redis_proxy:
        try:
            return Soak(args.duration, blip, work, vendors, pg_url, pg_proxy, redis_proxy, prefix).run()
        finally:
            clear_redis_prefix(prefix)


if __name__ == "__main__":
    sys.exit(main())
