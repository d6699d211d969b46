-- wrk script for bench/check: usage checks and batches spread over the customers, over keep-alive connections.
-- env:
--   BENCH_MODE       check (read-only POST /v1/check), record (POST /v1/check with record:true), batch (POST /v1/usage/batch),
--                    deduct (POST /v1/credits/deduct of 1 credit, each with its own transfer id; bench/credits)
--   BENCH_CUSTOMERS  file of customer ids, one a line          BENCH_KEY      the Bearer API key
--   BENCH_METER      the meter checked or recorded             BENCH_BATCH    events per batch (batch mode)
--   BENCH_RUN        prefix of this run's idempotency keys     BENCH_THREADS  wrk's -t
--   BENCH_RATE       requests/s over all threads, paced (0: closed loop)
--   BENCH_WINDOW_MS  0: load for wrk's whole -d. Otherwise no request is sent after this many ms: wrk's -d is longer
--                    and the requests in flight are answered before it ends, so the responses counted here are
--                    all that the server processed. Responses are then read: 2xx with "allowed":true (check/record)
--                    or the batch's "recorded" count, and the rate is over first request .. last response.
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000000 + math.floor(tonumber(ts.tv_nsec) / 1000)
end

local paced = tonumber(os.getenv("BENCH_RATE") or "0") > 0
local windowed = tonumber(os.getenv("BENCH_WINDOW_MS") or "0") > 0

local threads = {}
local counter = 0

function setup(thread)
  thread:set("index", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  mode = os.getenv("BENCH_MODE") or "check"
  local meter = os.getenv("BENCH_METER") or "build_hours"
  local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
  headers = { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY") }
  local customers = {}
  for line in io.lines(os.getenv("BENCH_CUSTOMERS")) do
    if line ~= "" then customers[#customers + 1] = line end
  end
  if mode == "deduct" then
    prefixes = {}
    for i, c in ipairs(customers) do prefixes[i] = '{"customer":"' .. c .. '","amount":1,"id":"' end
    keyprefix = (os.getenv("BENCH_RUN") or "run") .. "-" .. index .. "-"
    seq = 0
    n = #prefixes
  elseif mode == "batch" then
    batch = tonumber(os.getenv("BENCH_BATCH") or "1000")
    prefixes = {}
    for i, c in ipairs(customers) do
      prefixes[i] = '{"customer":"' .. c .. '","meter":"' .. meter .. '","value":1,"idempotency_key":"'
    end
    keyprefix = (os.getenv("BENCH_RUN") or "run") .. "-" .. index .. "-"
    seq = 0
    n = #prefixes
  else
    local extra = mode == "record" and ',"record":true' or ""
    requests = {}
    for i, c in ipairs(customers) do
      requests[i] = wrk.format("POST", "/v1/check", headers,
        '{"customer":"' .. c .. '","meter":"' .. meter .. '","amount":1' .. extra .. '}')
    end
    n = #requests
  end
  pos = (index * 37) % n
  local rate = tonumber(os.getenv("BENCH_RATE") or "0") / nthreads
  interval_us = rate > 0 and 1000000 / rate or 0
  window_us = tonumber(os.getenv("BENCH_WINDOW_MS") or "0") * 1000
  -- wrk calls request() once on thread 0 after init (script_verify_request) without sending it.
  sent = index == 0 and -1 or 0
  responses, counted = 0, 0
  t_start = now_us()
  t_last = t_start
  next_slot = t_start
end

function request()
  sent = sent + 1
  if mode == "deduct" then
    seq = seq + 1
    pos = pos % n + 1
    return wrk.format("POST", "/v1/credits/deduct", headers, prefixes[pos] .. keyprefix .. seq .. '"}')
  end
  if mode == "batch" then
    local parts = {}
    for i = 1, batch do
      seq = seq + 1
      pos = pos % n + 1
      parts[i] = prefixes[pos] .. keyprefix .. seq .. '"}'
    end
    return wrk.format("POST", "/v1/usage/batch", headers, '{"events":[' .. table.concat(parts, ",") .. ']}')
  end
  pos = pos % n + 1
  return requests[pos]
end

if paced or windowed then
  -- Called after each response, before that connection's next request. Pacing hands out send slots at the
  -- thread's rate (wrk's delays are whole ms: rounded up or down at random, so the mean is exact).
  function delay()
    local now = now_us()
    if window_us > 0 and now - t_start >= window_us then return 3600000 end
    if interval_us == 0 then return 0 end
    local slot = next_slot > now and next_slot or now
    next_slot = slot + interval_us
    local d = (slot - now) / 1000
    local ms = math.floor(d)
    if math.random() < d - ms then ms = ms + 1 end
    return ms
  end
end

if windowed then
  function response(status, headers, body)
    t_last = now_us()
    responses = responses + 1
    if status >= 200 and status < 300 then
      if mode == "batch" then
        counted = counted + (tonumber(body:match('"recorded":(%d+)')) or 0)
      elseif mode == "deduct" then
        counted = counted + 1
      elseif body:find('"allowed":true', 1, true) then
        counted = counted + 1
      end
    end
  end
end

function done(summary, latency, requests)
  local sent_all, counted_all, t0, t1 = 0, 0, nil, nil
  for _, t in ipairs(threads) do
    sent_all = sent_all + (t:get("sent") or 0)
    counted_all = counted_all + (t:get("counted") or 0)
    local s, l = t:get("t_start"), t:get("t_last")
    if s and (t0 == nil or s < t0) then t0 = s end
    if l and (t1 == nil or l > t1) then t1 = l end
  end
  local elapsed = summary.duration
  if windowed and t0 and t1 and t1 > t0 then elapsed = t1 - t0 end
  io.write(string.format(
    "RESULT requests=%d duration_us=%d elapsed_us=%d sent=%d counted=%d non2xx=%d errors=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, math.floor(elapsed), sent_all, counted_all, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
