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
  # Emptied here, not by the redirection below: that runs in the background child, and the wait
  # for "listening on" could read the previous run's line (and its port) first.
  : >"$work/out"
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

# request METHOD PATH [BODY] -> sets status and body; $extra_headers (CRLF-ended lines) are sent too
extra_headers=""
request() {
  local method="$1" path="$2" payload="${3:-}"
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf '%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n%sContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s' \
    "$method" "$path" "$extra_headers" "${#payload}" "$payload" >&3
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

# ---- keel::ratelimit: /api/ratelimit/demo allows 5 requests per 10 s per client, then 429 ----
ratelimit_checks() {
  local head
  for i in 1 2 3 4 5; do
    exec 3<>"/dev/tcp/127.0.0.1/$port"
    printf 'GET /api/ratelimit/demo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3
    head="$(cat <&3)"; exec 3<&-
    [[ "$head" == "HTTP/1.1 200"* ]] || fail "ratelimit demo request $i: $head"
    [[ "$head" == *'RateLimit-Policy: "api";q=200;w=4, "api/1";q=20000;w=3600, "demo";q=5;w=10'* ]] ||
      fail "ratelimit demo request $i lacks RateLimit-Policy: $head"
  done
  [[ "$head" == *'"warning":"demo"'* ]] || fail "the 5th demo request should carry the soft-limit warning: $head"
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf 'GET /api/ratelimit/demo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3
  head="$(cat <&3)"; exec 3<&-
  [[ "$head" == "HTTP/1.1 429"* ]] || fail "the 6th demo request should be 429: $head"
  [[ "$head" == *$'Retry-After: '[0-9]* ]] || fail "429 without Retry-After: $head"
  [[ "$head" == *'"demo";r=0;t='* ]] || fail "429 without RateLimit: $head"
  request GET /api/ratelimit/policies;    expect 200 '"name":"demo"'
  request GET /metrics;                   expect 200 'ratelimit_decisions_total{policy="demo",outcome="denied"} 1'
}
start
ratelimit_checks
stop
echo "showcase: ratelimit checks passed"

# Policies from a file, reloaded over HTTP: a bad file is refused with the field named and the
# policies in force stay.
cat >"$work/policies.json" <<'JSON'
{"policies": [{"name": "filed", "key": ["ip"], "routes": ["/api/components"],
               "limits": [{"algorithm": "gcra", "limit": 2, "period": "1m"}]}]}
JSON
export KEEL_RATELIMIT_POLICIES="$work/policies.json"
start
request GET /api/components;              expect 200 '"name":"core"'
cat >"$work/policies.json" <<'JSON'
{"policies": [{"name": "filed", "limits": [{"limit": 2, "period": "one minute"}]}]}
JSON
request POST /api/ratelimit/reload;       expect 400 'policies[0].limits[0].period: expected a duration'
request GET /api/components;              expect 200 '"name":"core"'
request GET /api/components;              expect 429 'rate limit \"filed\" exceeded'
stop
unset KEEL_RATELIMIT_POLICIES
echo "showcase: ratelimit policy file checks passed"
# ---------------------------------------------------------------- keel::ledger
# Accounts and transfers as JSON (amounts as strings), result codes per event, bad input gets
# a 400 or a result code and changes nothing, balances as of a sequence, statement, checkpoint,
# inclusion proof.
start
request POST /api/ledger/accounts '{"accounts":[{"id":"1","ledger":1,"code":1},{"id":"2","ledger":1,"code":1,"flags":2}]}'
expect 200 '"results":[{"index":0,"result":"ok"},{"index":1,"result":"ok"}]'
request POST /api/ledger/accounts '{"accounts":[{"id":"1","ledger":1,"code":1}]}'; expect 200 '"result":"exists"'
request POST /api/ledger/transfers '{"transfers":[{"id":"10","debit_account_id":"1","credit_account_id":"2","amount":"250","ledger":1,"code":1}]}'
expect 200 '"result":"ok"'
request POST /api/ledger/transfers '{"transfers":[{"id":"11","debit_account_id":"1","credit_account_id":"99","amount":"5","ledger":1,"code":1}]}'
expect 200 '"result":"credit_account_not_found"'
request POST /api/ledger/transfers '{"transfers":[{"id":"12","debit_account_id":"1","credit_account_id":"2","amount":"0","ledger":1,"code":1}]}'
expect 200 '"result":"amount_must_not_be_zero"'
request POST /api/ledger/transfers '{"transfers":[{"id":"13","debit_account_id":"2","credit_account_id":"1","amount":"1000","ledger":1,"code":1}]}'
expect 200 '"result":"exceeds_credits"'
request POST /api/ledger/transfers '{"transfers":[{"id":"14","debit_account_id":"1","credit_account_id":"2","amount":"340282366920938463463374607431768211455","ledger":1,"code":1}]}'
expect 200 '"result":"overflows_debits_posted"'
request POST /api/ledger/transfers '{"transfers":[{"id":"15","debit_account_id":"1","credit_account_id":"2","amount":"340282366920938463463374607431768211456","ledger":1,"code":1}]}'
expect 400 '"error"'
request POST /api/ledger/transfers '{"transfers":[{"id":"16","debit_account_id":"1","credit_account_id":"2","amount":5,"ledger":1,"code":1}]}'
expect 400 '"error"'
request POST /api/ledger/transfers '{"transfers":[{"id":"17",'; expect 400 '"error"'
request GET /api/ledger/accounts/2/balance;                 expect 200 '"credits_posted":"250"'
# The demo ledger seeded at first start holds entries 0-6 (3 accounts, 4 transfers): the
# accounts above are entries 7 and 8, the transfer entry 9.
request GET '/api/ledger/accounts/2/balance?as_of_sequence=8'; expect 200 '"credits_posted":"0"'
request GET /api/ledger/accounts/1/balance;                 expect 200 '"debits_posted":"250"'
request GET /api/ledger/accounts/77/balance;                expect 404 '"error"'
request GET '/api/ledger/accounts/1/statement?limit=10';    expect 200 '"transfer_id":"10"'
request GET /api/ledger/checkpoint;                         expect 200 '"tree_size":10'
request GET /api/ledger/accounts/1002/balance;              expect 200 '"debits_posted":"4250","credits_pending":"1999","credits_posted":"250000"'
request GET /ledger;                                        expect 200 "Signed tree head"
request GET /ratelimit;                                     expect 200 "Meet a limit"
request GET /api/ledger/proof/2;                            expect 200 '"proof":['
request GET /api/ledger/proof/99;                           expect 400 '"error"'
request GET /api/ledger/checkpoint
signing_key="$(sed -n 's/.*"key":"\([0-9a-f]*\)".*/\1/p' <<<"$body")"
[[ ${#signing_key} == 64 ]] || fail "no checkpoint key"
[[ "$(stat -c %a "$work/ledger-signing.seed")" == 600 ]] || fail "the signing seed is readable by others"
stop
start  # checkpoints after a restart are signed by the same key, so old ones still verify
request GET /api/ledger/checkpoint;                         expect 200 "\"key\":\"$signing_key\""
stop
echo "showcase ledger: all checks passed"
# ---- keel::tsdb: ingest, series, bucketed query with gapfill, LTTB plot page ----
start
request POST /api/tsdb/ingest '{"metric":"room_temp","labels":{"room":"lab"},"points":[[0,20.5],[60000,21.0],[180000,22.0]]}'
expect 201 '"accepted":3'
tsdb_id="$(sed -n 's/.*"series":\([0-9]*\).*/\1/p' <<<"$body")"
request POST /api/tsdb/ingest '{"metric":"room_temp","labels":{"room":"lab"},"points":[[30000,1]]}'
expect 409 'out-of-order'
request POST /api/tsdb/ingest '{"metric":"room_temp","points":[["x",1]]}'
expect 400 '"error"'
request GET "/api/tsdb/series?metric=room_temp";  expect 200 '"room":"lab"'
request GET "/api/tsdb/query?series=$tsdb_id&from=0&to=240000&step=60000&fill=linear"
expect 200 '"count":0,"avg":2.15E1'
request GET "/api/tsdb/query?series=$tsdb_id&from=0&to=240000&step=60000"
expect 200 '"rollup":0'  # 4 rollup rows for 3 points: the blocks are cheaper
request GET "/api/tsdb/plot?points=100";          expect 200 '"raw_points":10080'
request GET "/tsdb?points=200";                   expect 200 '<polyline id="lttb"'
request GET /;                                    expect 200 "/tsdb"
stop
start  # the demo series is seeded once, and ingested points persist
request GET "/api/tsdb/plot?points=100";          expect 200 '"raw_points":10080'
request GET "/api/tsdb/query?series=$tsdb_id&from=0&to=240000&step=240000"
expect 200 '"count":3'
stop
echo "showcase tsdb: all checks passed"

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

# --- keel::events: an order's lifecycle, event-sourced ------------------------------------------
start
request GET /api/events/orders/1;                                expect 200 '"status":"shipped"'
request GET /api/events/orders/2;                                expect 200 '"status":"paid"'
request POST /api/events/orders '{"total_cents":2500}';          expect 201 '"stream":"order-4"'
request POST /api/events/orders '{"total_cents":"lots"}';        expect 400 "invalid order"
request POST /api/events/orders/4/ship;                          expect 409 "cannot ship"
request POST /api/events/orders/4/pay '{"expected_version":0}';  expect 200 '"status":"paid"'
# A clerk who read the order before it was paid is told where it is; nothing is written.
request POST /api/events/orders/4/cancel '{"expected_version":0}'; expect 409 '"actual_version":1'
request GET /api/events/orders/4;                                expect 200 '"version":1'
request GET /api/events/orders/99;                               expect 404 "no such order"
request GET '/api/events/all?category=order&limit=100';          expect 200 '"caught_up":true'
[[ "$body" == *'"stream":"order-4","version":1,"type":"order_paid"'* ]] || fail "\$all lacks order-4's payment: $body"
request GET '/api/events/all?after=nonsense';                    expect 400 '"error"'
request GET /api/events/horizon;                                 expect 200 '"events_waiting":0'
request GET /events;                                             expect 200 "keel events"
request GET /api/events/readers;                                 expect 200 '"name":"receipts"'
request GET /api/events/streams/order-4;                         expect 200 '"type":"order_paid"'
request GET /api/events/groups;                                  expect 200 '"name":"shipping"'
[[ "$body" == *'"name":"shipping-a"'* && "$body" == *'"name":"shipping-b"'* ]] || fail "the shipping group lacks a member: $body"
# The inline read model is current at once; the materialized view once its projection caught up.
request GET '/api/events/summary?fresh=1';                       expect 200 '"view_fresh":true'
[[ "$body" == *'"inline":[{"status":"paid","orders":2,"total_cents":7499},{"status":"placed","orders":1,"total_cents":860},{"status":"shipped","orders":1,"total_cents":1250}]'* ]] ||
  fail "the inline read model is not the orders' state: $body"
[[ "$body" == *'"materialized_view":[{"status":"paid","orders":2,"total_cents":7499},{"status":"placed","orders":1,"total_cents":860},{"status":"shipped","orders":1,"total_cents":1250}]'* ]] ||
  fail "the materialized view is not the orders' state: $body"
request GET /metrics;                                            expect 200 'keel_events_appended_total'
request GET /;                                                   expect 200 "/api/events/orders"
stop
start  # the demo orders are placed once; numbering goes on after a restart
request POST /api/events/orders '{"total_cents":100}';           expect 201 '"stream":"order-5"'
stop
echo "showcase events: all checks passed"

# --- keel::crypto: envelopes under a keyring kept across restarts ---------------------------------
start
request POST /api/crypto/encrypt '{"plaintext":"card 4242","context":{"tenant":"acme"}}'; expect 201 '"key_id":"showcase/1"'
envelope="$(sed -n 's/.*"envelope":"\([^"]*\)".*/\1/p' <<<"$body")"
[[ -n "$envelope" ]] || fail "no envelope in: $body"
request POST /api/crypto/decrypt "{\"envelope\":\"$envelope\",\"context\":{\"tenant\":\"acme\"}}"; expect 200 '"plaintext":"card 4242"'
request POST /api/crypto/decrypt "{\"envelope\":\"$envelope\",\"context\":{\"tenant\":\"evil\"}}"; expect 400 "encryption context"
request POST /api/crypto/decrypt '{"envelope":"S0VOVgE=","context":{}}';                         expect 400 "not a whole keel envelope"
request POST /api/crypto/encrypt '{"plaintext":7}';                                               expect 400 "invalid request"
request POST /api/crypto/rotate;                                                                  expect 200 '"primary":2'
request POST /api/crypto/rewrap "{\"envelope\":\"$envelope\"}";                                  expect 200 '"key_id":"showcase/2"'
request GET /api/crypto/keyring;                                                                  expect 200 '"version":2,"state":"enabled","primary":true'
[[ "$(stat -c %a "$work/showcase.keyring")" == 600 ]] || fail "the keyring file is readable by others"
# Vault's API on the secrets store: transit and KV v2 with the demo token, nothing without it.
request GET /api/crypto/vault;                                        expect 200 '"token_file"'
request GET /v1/transit/keys;                                         expect 403 "permission denied"
extra_headers="X-Vault-Token: $(cat "$work/showcase.vault-token")"$'\r\n'
request POST /v1/transit/keys/orders '{}';                            expect 200 '"latest_version":1'
request POST /v1/transit/encrypt/orders '{"plaintext":"NDI0Mg=="}';  expect 200 '"ciphertext":"vault:v1:'
ciphertext="$(sed -n 's/.*"ciphertext":"\([^"]*\)".*/\1/p' <<<"$body")"
request POST /v1/transit/decrypt/orders "{\"ciphertext\":\"$ciphertext\"}"; expect 200 '"plaintext":"NDI0Mg=="'
request POST /v1/secret/data/app/db '{"data":{"password":"hunter2"}}'; expect 200 '"version":1'
request LIST /v1/secret/metadata/app;                                 expect 200 '"keys":["db"]'
extra_headers=""
stop
start  # the keyring is read back from its file: the envelope from before still opens
request POST /api/crypto/decrypt "{\"envelope\":\"$envelope\",\"context\":{\"tenant\":\"acme\"}}"; expect 200 '"key_id":"showcase/1"'
# ... and the transit key and the secret, kept in Postgres under it.
extra_headers="X-Vault-Token: $(cat "$work/showcase.vault-token")"$'\r\n'
request POST /v1/transit/decrypt/orders "{\"ciphertext\":\"$ciphertext\"}"; expect 200 '"plaintext":"NDI0Mg=="'
request GET /v1/secret/data/app/db;                                   expect 200 '"password":"hunter2"'
extra_headers=""
stop
echo "showcase crypto: all checks passed"

