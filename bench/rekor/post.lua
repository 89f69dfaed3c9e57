-- wrk script: POSTs the pre-signed requests of requests.jsonl (bench/rekor/make_requests.py), each once
-- per thread slice, to a Sigstore shard's /api/v2/log/entries; counts answers by status.
--   wrk -t2 -c64 -d20s -s bench/rekor/post.lua http://127.0.0.1:7480/logs/2/api/v2/log/entries
local lines = {}
for line in io.lines(os.getenv("REQUESTS") or "requests.jsonl") do
  lines[#lines + 1] = line
end
local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  table.insert(threads, thread)
end

function init(args)
  next_index = id
  statuses = {}
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  -- Threads interleave: thread k sends lines k, k + T, k + 2T, ... (T = 2 threads by default).
  local line = lines[next_index]
  next_index = next_index + 2
  if line == nil then
    line = lines[1]
  end
  return wrk.format(nil, nil, nil, line)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    for code, n in pairs(s) do
      io.write(string.format("thread %d: %d answered %d\n", t:get("id"), n, code))
    end
  end
end
