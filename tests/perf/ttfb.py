"""Time to first byte of streamed responses, at concurrency 1, from its own process.

One keep-alive connection; for each request: send, then time until the first byte of the response body (the first
SSE event) arrives; the rest is read to the end. Bounded by a count and a deadline; any non-200 is an error.

    python -m tests.perf.ttfb URL BODY_FILE COUNT SECONDS   -> prints one JSON line
"""

from __future__ import annotations

import http.client
import json
import statistics
import sys
import time
from urllib.parse import urlsplit


def measure(url: str, body: bytes, count: int, seconds: float) -> dict[str, float | int]:
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench-5f0c2a9e71d84b36a1c4e0f9b27d6e83"}
    ttfb: list[float] = []
    total: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    for _ in range(count):
        if time.perf_counter() > deadline:
            break
        t0 = time.perf_counter()
        conn.request("POST", u.path, body=body, headers=headers)
        resp = conn.getresponse()
        first = resp.read(1)
        t1 = time.perf_counter()
        rest = resp.read()
        t2 = time.perf_counter()
        if resp.status != 200 or not (first + rest).startswith(b"data:"):
            errors += 1
            continue
        ttfb.append(t1 - t0)
        total.append(t2 - t0)
    conn.close()
    if not ttfb:
        return {"n": 0, "errors": errors}
    q = statistics.quantiles(ttfb, n=100) if len(ttfb) > 1 else [ttfb[0]] * 99
    return {"n": len(ttfb), "errors": errors, "ttfb_p50_us": statistics.median(ttfb) * 1e6,
            "ttfb_p99_us": q[98] * 1e6, "total_p50_us": statistics.median(total) * 1e6}


if __name__ == "__main__":
    url, body_file, count, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    with open(body_file, "rb") as f:
        print(json.dumps(measure(url, f.read(), count, seconds)))
