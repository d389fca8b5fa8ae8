#!/usr/bin/env bash
# The main job, end to end: start the showcase on its embedded Postgres, use every endpoint
# over real HTTP, stop it with SIGINT, start it again and find the data still there.
#   showcase_test.sh <showcase binary>
set -euo pipefail
showcase="$1"
work="$(mktemp -d)"
chmod 755 "$work"  # the postgres user must reach the data directory inside
pid=""
cleanup() {
  [[ -n "$pid" ]] && kill -INT "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; [[ -f "$work/out" ]] && cat "$work/out" >&2; exit 1; }

start() {
  "$showcase" --port 0 --data-dir "$work/pg" >"$work/out" 2>"$work/err" &
  pid=$!
  for _ in $(seq 300); do
    grep -q "listening on" "$work/out" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || fail "showcase exited early: $(cat "$work/err")"
    sleep 0.1
  done
  port="$(sed -n 's|.*http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$work/out")"
  [[ -n "$port" ]] || fail "no URL printed"
}

stop() {
  kill -INT "$pid"
  local status=0
  wait "$pid" || status=$?
  pid=""
  ((status == 0)) || fail "showcase exited with $status after SIGINT"
  grep -q "stopped" "$work/out" || fail "no clean stop message"
}

# request METHOD PATH [BODY] -> sets status and body
request() {
  local method="$1" path="$2" payload="${3:-}"
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf '%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s' \
    "$method" "$path" "${#payload}" "$payload" >&3
  local reply
  reply="$(cat <&3)"
  exec 3<&-
  status="$(head -n 1 <<<"$reply" | cut -d' ' -f2)"
  body="${reply#*$'\r\n\r\n'}"
}

expect() {  # expect STATUS SUBSTRING
  [[ "$status" == "$1" ]] || fail "expected $1, got $status: $body"
  [[ "$body" == *"$2"* ]] || fail "expected '$2' in: $body"
}

start
request GET /healthz;                     expect 200 ""
request GET /readyz;                      expect 200 "postgres"
request GET /;                            expect 200 "keel::ledger"
request GET /api/components;              expect 200 '"name":"core"'
request POST /api/visits '{"note":"hi"}'; expect 201 '"id"'
request POST /api/visits '{"nope":1}';    expect 400 '"error"'
request POST /api/visits '{bad json';     expect 400 '"error"'
request GET /api/pg;                      expect 200 '"visits":1'
request GET /nowhere;                     expect 404 '"error"'
request GET /metrics;                     expect 200 "showcase_visits_total 1"
if command -v promtool >/dev/null; then
  printf '%s\n' "$body" | promtool check metrics >/dev/null || fail "promtool rejects /metrics"
fi
stop

# The embedded cluster keeps its data across restarts.
start
request GET /api/pg;                      expect 200 '"visits":1'
stop
pgrep -f "postgres -D $work/pg" >/dev/null && fail "postgres still running after the showcase stopped"
echo "showcase: all checks passed"

# --- keel::jobs: the /jobs dashboard and its JSON API ------------------------------------------
start
request GET /jobs;                                               expect 200 "keel jobs"
request POST /api/jobs '{"kind":"email","queue":"demo"}';        expect 201 '"id"'
request POST /api/jobs '{"kind":"email","max_attempts":0}';      expect 400 "invalid job"
request POST /api/jobs '{"queue":"demo"}';                       expect 400 "invalid job"
request GET /api/jobs/queues;                                    expect 200 '"queue":"demo"'
request GET /api/jobs/failures;                                  expect 200 '"jobs"'
request GET '/api/jobs/list?state=nonsense';                     expect 400 "unknown state"
request GET /api/jobs/job/999999;                                expect 404 '"error"'
request GET /api/jobs/job/abc;                                   expect 400 "invalid job id"
request POST /api/jobs/job/999999/retry;                         expect 404 '"error"'
request POST /api/jobs/queues/demo/pause;                        expect 200 '"paused":true'
request POST /api/jobs/queues/demo/resume;                       expect 200 '"paused":false'
request GET /metrics;                                            expect 200 "keel_jobs_depth"
if command -v promtool >/dev/null; then
  printf '%s\n' "$body" | promtool check metrics >/dev/null || fail "promtool rejects /metrics with jobs metrics"
fi
stop
echo "showcase jobs: all checks passed"
