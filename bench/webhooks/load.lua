-- wrk script: each thread replays its own slice of pre-signed, unique webhook deliveries.
-- env: BENCH_REQUESTS (file of "signature\nbody\n" pairs), BENCH_THREADS, BENCH_DELAY_MS (0 = closed loop).
local threads = {}
local counter = 0

function setup(thread)
  thread:set("index", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local file = assert(io.open(os.getenv("BENCH_REQUESTS"), "r"))
  local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
  requests = {}
  local n = 0
  while true do
    local sig = file:read("*l")
    if not sig then break end
    local body = file:read("*l")
    if n % nthreads == index then
      requests[#requests + 1] = wrk.format("POST", "/webhooks/stripe",
        { ["Content-Type"] = "application/json", ["Stripe-Signature"] = sig }, body)
    end
    n = n + 1
  end
  file:close()
  pos = 0
  pause = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
end

function request()
  pos = pos % #requests + 1
  return requests[pos]
end

function delay()
  return pause
end

function done(summary, latency, requests)
  io.write(string.format("RESULT requests=%d duration_us=%d non2xx=%d errors=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect + summary.errors.read +
    summary.errors.write + summary.errors.timeout, latency:percentile(50), latency:percentile(99)))
end
