#!/usr/bin/env bash
# Fuzzes event-api's HTTP API from its own OpenAPI document with schemathesis: a private
# event-api on loopback (its own database, NATS server on a free port, local storage, an admin),
# then `schemathesis run` against its /openapi.json as that admin, then everything stopped.
#
#   bash scripts/api-fuzz.sh            # the short run of the test command (~1 minute)
#   bash scripts/api-fuzz.sh --long     # a longer run, by hand (figures in docs/security.md)
#
# A failure is a 5xx answer, an answer whose status, content type or body the document does not
# declare, or a request the server could not answer. Prints `api-fuzz: N operations, M failures`
# last and exits non-zero when M > 0 or the system did not start. Needs what
# scripts/install-deps.sh installs (it is run first) and PostgreSQL on 127.0.0.1:5432 (started if
# down); the shared NATS and the `camrec` database of scripts/dev.sh are not used.
#
# Environment (optional): CARGO_TARGET_DIR, API_FUZZ_SEED (default 18: the same requests on every
# run), API_FUZZ_EXAMPLES (examples per operation), API_FUZZ_KEEP=1 (keep the temporary
# directory with event-api's log and schemathesis' report even when nothing failed).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"

# The short run: a bounded number of examples per operation and a wall-clock limit; the long run
# adds the stateful phase (chains of calls that reuse the ids earlier answers returned).
EXAMPLES=${API_FUZZ_EXAMPLES:-20}
PHASES=examples,coverage,fuzzing
TIME_LIMIT=150
case "${1:-}" in
  "") ;;
  --long)
    EXAMPLES=${API_FUZZ_EXAMPLES:-200}
    PHASES=examples,coverage,fuzzing,stateful
    TIME_LIMIT=900
    ;;
  *)
    echo "usage: bash scripts/api-fuzz.sh [--long]" >&2
    exit 2
    ;;
esac
SEED=${API_FUZZ_SEED:-18}
# What the document promises about every answer; the other checks of `--checks all` judge the
# API's design (e.g. "a request that breaks the schema must be refused"), not the document.
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance

say() { printf 'api-fuzz: %s\n' "$*"; }

WORK=$(mktemp -d /tmp/camrec-fuzz.XXXXXX)
DB_NAME="camrec_fuzz_$$"
ADMIN_USERNAME=admin
ADMIN_PASSWORD=$(/usr/bin/python3 -c 'import secrets; print(secrets.token_urlsafe(15))')
FAILED=1
API_PID=
NATS_PID=

stop_pid() {
  local pid=$1
  [[ -n $pid ]] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 10))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
    sleep 0.2
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  trap - INT TERM EXIT
  stop_pid "$API_PID"
  stop_pid "$NATS_PID"
  dropdb --if-exists --force -h 127.0.0.1 -p 5432 -U postgres "$DB_NAME" >/dev/null 2>&1 ||
    say "could not drop database $DB_NAME"
  if ((FAILED)) || [[ ${API_FUZZ_KEEP:-0} == 1 ]]; then
    say "logs and report kept in $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

die() {
  printf 'api-fuzz: error: %s\n' "$*" >&2
  exit 1
}

# wait_for SECONDS WHAT PID LOG COMMAND...: until COMMAND succeeds; fails early if PID died.
wait_for() {
  local seconds=$1 what=$2 pid=$3 log=$4
  shift 4
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$log" >&2 || true
      die "$what exited (log: $log)"
    fi
    ((SECONDS < deadline)) || die "$what not ready within ${seconds}s (log: $log)"
    sleep 0.3
  done
}

nats_answers() {
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 && head -c 4 <&3 | grep -q INFO"
}

# ---- 1. dependencies, PostgreSQL, the binary
bash scripts/install-deps.sh || die "scripts/install-deps.sh failed"
# shellcheck source=scripts/services.sh
source scripts/services.sh
ensure_postgres
say "building event-api"
cargo build --quiet -p event-api || die "cargo build failed"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/event-api"

# ---- 2. a private event-api on free loopback ports
read -r PORT NATS_PORT < <(/usr/bin/python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
BASE="http://127.0.0.1:$PORT"
mkdir -p "$WORK/nats" "$WORK/objects"

# NATS with camrec's users and permissions (nats-users.conf, as nats.conf has them), passwords
# made up for this run; event-api logs in as its user.
nats_passwords=()
for name in EVENT_API WORKER_DEFAULT READER; do
  nats_passwords+=("NATS_PASSWORD_$name=n$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')")
done
NATS_PASSWORD_EVENT_API=${nats_passwords[0]#*=}
cp nats-users.conf "$WORK/nats-users.conf"
printf 'host: 127.0.0.1\nport: %s\njetstream { store_dir: "%s" }\ninclude ./nats-users.conf\n' \
  "$NATS_PORT" "$WORK/nats" >"$WORK/nats.conf"
setsid env "${nats_passwords[@]}" nats-server -c "$WORK/nats.conf" >"$WORK/nats-server.log" 2>&1 &
NATS_PID=$!
wait_for 20 nats-server "$NATS_PID" "$WORK/nats-server.log" nats_answers "$NATS_PORT"

# The fuzzer logs in with made-up credentials: limits high enough that it fuzzes the login
# itself rather than only its 429 (which the document declares as well).
setsid env CAMREC_DEV=1 RUST_LOG="${RUST_LOG:-warn}" NO_COLOR=1 \
  "DATABASE_URL=postgres://postgres@127.0.0.1:5432/$DB_NAME" "NATS_URL=nats://camrec-event-api:$NATS_PASSWORD_EVENT_API@127.0.0.1:$NATS_PORT" \
  HOST=127.0.0.1 "PORT=$PORT" "ADMIN_USERNAME=$ADMIN_USERNAME" "ADMIN_PASSWORD=$ADMIN_PASSWORD" \
  LOGIN_MAX_FAILURES=100000 LOGIN_MAX_FAILURES_PER_ADDRESS=100000 \
  "CAMERA_SECRET_KEY=fuzz:$(head -c 32 /dev/urandom | base64 -w0)" \
  STORAGE_MODE=local "LOCAL_STORAGE_DIR=$WORK/objects" "MEDIA_BASE_URL=$BASE" \
  "$BIN" >"$WORK/event-api.log" 2>&1 &
API_PID=$!
wait_for 60 "event-api /ready" "$API_PID" "$WORK/event-api.log" curl -fsS "$BASE/ready"

TOKEN=$(curl -fsS -X POST "$BASE/auth/login" -H 'content-type: application/json' \
  -d "{\"username\":\"$ADMIN_USERNAME\",\"password\":\"$ADMIN_PASSWORD\"}" |
  /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["accessToken"])') ||
  die "login as $ADMIN_USERNAME failed (log: $WORK/event-api.log)"

# ---- 3. one resource of each kind, so that operations on `/<kind>/{id}` reach the code behind
# the lookup instead of answering 404 to made-up ids (a fresh user: not the admin the fuzzer is).
# DELETE gets made-up ids: deleting them early would leave the other operations only 404s.
api_create() {
  curl -fsS -X POST "$BASE$1" -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d "$2" | /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])'
}
CAMERA_ID=$(api_create /cameras '{"name":"fuzz-camera","rtspUrl":"rtsp://u:p@10.0.0.5:554/live","channel":1}') ||
  die "creating a camera failed (log: $WORK/event-api.log)"
EVENT_ID=$(api_create /events "{\"cameraId\":\"$CAMERA_ID\",\"type\":\"MOTION\"}") ||
  die "creating an event failed"
WEBHOOK_ID=$(api_create /webhooks '{"url":"http://10.0.0.9/hook","secret":"0123456789abcdef","events":["playback.completed"]}') ||
  die "creating a webhook failed"
USER_ID=$(api_create /users '{"username":"fuzz-viewer","password":"fuzz-password-123","role":"VIEWER"}') ||
  die "creating a user failed"
PLAYBACK_ID=$(curl -fsS "$BASE/playbacks" -H "authorization: Bearer $TOKEN" |
  /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["data"][0]["id"])') ||
  die "the event's playback is not listed"
cat >"$WORK/schemathesis.toml" <<TOML
[[operations]]
include-path-regex = "^/cameras/[{]id[}]"
exclude-method = "DELETE"
parameters = { "path.id" = "$CAMERA_ID" }

[[operations]]
include-path-regex = "^/events/[{]id[}]"
exclude-method = "DELETE"
parameters = { "path.id" = "$EVENT_ID" }

[[operations]]
include-path-regex = "^/webhooks/[{]id[}]"
exclude-method = "DELETE"
parameters = { "path.id" = "$WEBHOOK_ID" }

[[operations]]
include-path-regex = "^/users/[{]id[}]"
exclude-method = "DELETE"
parameters = { "path.id" = "$USER_ID" }

[[operations]]
include-path-regex = "^/playbacks/[{]id[}]"
exclude-method = "DELETE"
parameters = { "path.id" = "$PLAYBACK_ID" }
TOML

# ---- 4. the fuzz run
say "fuzzing $BASE/openapi.json: phases $PHASES, $EXAMPLES examples per operation, seed $SEED"
status=0
# --workers 1: one request at a time, so that the same seed gives the same run; in $WORK, where
# schemathesis keeps its cache of past failures (replayed first), so every run starts afresh.
(cd "$WORK" && timeout --kill-after=10 "$TIME_LIMIT" schemathesis --no-color --config-file "$WORK/schemathesis.toml" run "$BASE/openapi.json" \
  --header "Authorization: Bearer $TOKEN" \
  --checks "$CHECKS" --phases "$PHASES" --max-examples "$EXAMPLES" --seed "$SEED" \
  --workers 1 --request-timeout 10 --generation-database none \
  --report junit --report-junit-path "$WORK/junit.xml") || status=$?

# The figures from the JUnit report: one test case per operation, one failure (or error) per
# distinct failure schemathesis found in it.
read -r operations failures < <(/usr/bin/python3 - "$WORK/junit.xml" <<'PY' || echo "0 1"
import sys
import xml.etree.ElementTree as ET
# The stateful phase adds one test case of its own.
cases = [c for c in ET.parse(sys.argv[1]).getroot().iter("testcase") if c.get("name") != "Stateful tests"]
bad = sum(child.tag in ("failure", "error") for case in cases for child in case)
print(len(cases), bad)
PY
)
if ((status != 0 && failures == 0)); then
  failures=1 # schemathesis itself failed or ran out of time: count it
  say "schemathesis exited with status $status"
fi
FAILED=$((failures > 0))
if ((FAILED)); then
  tail -n 30 "$WORK/event-api.log" >&2 || true
fi
cleanup
say "$operations operations, $failures failures"
exit "$FAILED"
