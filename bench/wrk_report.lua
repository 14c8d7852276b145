-- wrk script: print the run's figures as one JSON line (latencies in microseconds).
-- An optional argument after "--" is a pause in milliseconds before each request of a connection (a steady
-- load instead of back-to-back requests). With "jitter" after it, each pause is drawn from 0.5 to 1.5 times that,
-- so that several connections do not stay in step (two Prometheus servers scrape at independent offsets).
local pause = 0
local jitter = false

init = function(args)
  pause = tonumber(args[1]) or 0
  jitter = args[2] == "jitter"
  math.randomseed(os.time())
end

delay = function()
  if jitter then
    return math.floor(pause * (0.5 + math.random()))
  end
  return pause
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,"errors":%d,"non_2xx":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
