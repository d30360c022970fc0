-- POST a ~1 KB chat body (the file named by $BENCH_BODY) on every request; print a JSON summary at the end.
-- The body's "@N@" marker becomes a per-request number, so the last user message differs on every request (as in
-- real traffic, where the system prompt and earlier turns repeat but the new message does not).
-- Non-2xx/3xx responses are counted by wrk (summary.errors.status); the harness refuses any run with errors.
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
local template = f:read("*a")
f:close()
local before, after = template:match("^(.-)@N@(.*)$")
local n = 0

-- $BENCH_BEARER: the client key (the replica bench's required gateway key); else the token the gateway ignores.
local bearer = os.getenv("BENCH_BEARER") or "sk-bench-5f0c2a9e71d84b36a1c4e0f9b27d6e83"
local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. bearer}

function request()
  if before == nil then
    return wrk.format("POST", nil, headers, template)
  end
  n = n + 1
  return wrk.format("POST", nil, headers, before .. n .. after)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
