#!/usr/bin/env bash
# Load test of the simulator alone, so that it is never what limits the relay's benchmark.
# Needs wrk (Debian package) and a release build. Prints pages/s (100 events each) and webhook requests/s.
set -euo pipefail
cd "$(dirname "$0")/.."
binary=.build/release/intilery-relay
duration=${DURATION:-10s}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
log=$(mktemp)
"$binary" simulate --api-port 0 --sink-port 0 --backlog "${BACKLOG:-100000}" --rate 0 --rate-limit 0 >"$log" 2>&1 &
sim=$!
trap 'kill $sim 2>/dev/null; rm -f "$log" "$log.lua" "$log.post.lua"' EXIT
for _ in $(seq 50); do grep -q '^Receiver' "$log" && break; sleep 0.1; done
api=$(awk '/^Events API/ {print $3}' "$log")
sink=$(awk '/^Receiver/ {print $2}' "$log" | sed 's|/<any$||')
api_path=/${api#http://*/}
start=$(date -u -d '2 hours ago' +%Y-%m-%dT%H:%M:%SZ)

# Pages as the poller asks for them: ascending from a start time, walking `from` through the 10,000 window.
cat >"$log.lua" <<LUA
local n = 0
request = function()
  n = (n + 1) % 100
  return wrk.format("GET", "$api_path?sort=asc&size=100&start=$start&from=" .. (n * 100),
    { ["auth-token"] = "sim-token-1234", ["content-type"] = "application/json" })
end
LUA
cat >"$log.post.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"eventID":"evt-1","action":"email_click","timestamp":"2024-05-01T00:00:00.000Z","properties":{"campaign":"spring"}}'
wrk.headers["content-type"] = "application/json"
wrk.headers["webhook-id"] = "bench:evt-1"
LUA
echo "== Events API: pages of 100 events, from walking 0..9,900, ${BACKLOG:-100000}-event backlog"
wrk -t1 -c8 -d"$duration" -s "$log.lua" "$api" | tee "$log.api"
echo "== Webhook receiver: POSTs with keep-alive"
wrk -t1 -c32 -d"$duration" -s "$log.post.lua" "$sink/hooks/bench" | tee "$log.sink"
pages=$(awk '/Requests\/sec/ {print $2}' "$log.api")
posts=$(awk '/Requests\/sec/ {print $2}' "$log.sink")
non2xx=$(awk '/Non-2xx/ {print $NF}' "$log.api" "$log.sink" | paste -sd+ | bc 2>/dev/null || true)
echo "simulator: ${pages} pages/s (target >= 2000), ${posts} webhook requests/s (target >= 20000), non-2xx: ${non2xx:-0}"
rm -f "$log.api" "$log.sink"
