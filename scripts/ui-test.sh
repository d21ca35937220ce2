#!/usr/bin/env bash
# The review page's browser test: a private camrec on loopback (its own database, NATS server,
# fake camera, event-api and recorder-worker on free ports, files in a temporary directory),
# then ui-tests/review.test.js in headless Chromium, then everything stopped.
#
#   bash scripts/ui-test.sh                # run the browser test
#   bash scripts/ui-test.sh --screenshots  # the same, and rewrite docs/ui/*.png
#   bash scripts/ui-test.sh --serve        # only start the private camrec and wait (Ctrl-C stops
#                                          # it): to work on the page or run the test by hand
#
# Prints `ui-test: N passed, M failed` last and exits non-zero when a test failed or the system
# did not start. Needs what scripts/install-deps.sh installs (it is run first), PostgreSQL on
# 127.0.0.1:5432 (started if down) and nothing else running: the shared NATS and the `camrec`
# database of scripts/dev.sh are not used, so both can run at once.
#
# Environment (optional): CARGO_TARGET_DIR, CAMREC_RELEASE=1 (release build), UI_TEST_KEEP=1
# (keep the temporary directory, with the services' logs, even when everything passed).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"

MODE=test
case "${1:-}" in
  "") ;;
  --screenshots) MODE=screenshots ;;
  --serve) MODE=serve ;;
  *)
    echo "usage: bash scripts/ui-test.sh [--screenshots | --serve]" >&2
    exit 2
    ;;
esac

say() { printf 'ui-test: %s\n' "$*"; }

WORK=$(mktemp -d /tmp/camrec-ui.XXXXXX)
LOGS="$WORK/logs"
mkdir -p "$LOGS" "$WORK/objects" "$WORK/recordings" "$WORK/nats"
DB_NAME="camrec_ui_$$"
ADMIN_USERNAME=admin
ADMIN_PASSWORD=$(/usr/bin/python3 -c 'import secrets; print(secrets.token_urlsafe(15))')
CAMERA_USER=admin
CAMERA_PASSWORD=$(/usr/bin/python3 -c 'import secrets; print(secrets.token_urlsafe(12))')
FAILED=1

# ---- children: each in its own session; stopped in order (worker, api, camera, nats), each
# with a deadline, by the trap.
STOP_ORDER=(recorder-worker event-api camera nats-server)
# shellcheck source=scripts/children.sh
source "$ROOT/scripts/children.sh"

cleanup() {
  trap - INT TERM EXIT
  stop_children
  dropdb --if-exists --force -h 127.0.0.1 -p 5432 -U postgres "$DB_NAME" >/dev/null 2>&1 ||
    say "could not drop database $DB_NAME"
  if ((FAILED)) || [[ ${UI_TEST_KEEP:-0} == 1 ]]; then
    say "logs kept in $LOGS"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# finish PASSED FAILED: stops everything, then prints the closing line and exits with its verdict.
finish() {
  FAILED=$(($2 > 0))
  cleanup
  printf 'ui-test: %s passed, %s failed\n' "$1" "$2"
  exit "$FAILED"
}

# Before the tests ran, a failure counts as one failed test.
die() {
  printf 'ui-test: error: %s\n' "$*" >&2
  finish 0 1
}

fail_with_log() {
  local name=$1
  tail -n 20 "$LOGS/$name.log" >&2 || true
  die "$name exited (log: $LOGS/$name.log)"
}

nats_answers() {
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 && head -c 4 <&3 | grep -q INFO"
}


# ---- 1. dependencies, PostgreSQL, binaries
bash scripts/install-deps.sh || die "scripts/install-deps.sh failed"
# shellcheck source=scripts/services.sh
source scripts/services.sh
ensure_postgres

build_services

# ---- 2. the private system: free loopback ports, taken together so they differ
read -r PORT NATS_PORT CAMERA_PORT < <(/usr/bin/python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
BASE="http://127.0.0.1:$PORT"
export RUST_LOG="${RUST_LOG:-info}" NO_COLOR=1
storage_env=(STORAGE_MODE=local "LOCAL_STORAGE_DIR=$WORK/objects" "MEDIA_BASE_URL=$BASE")

# NATS with camrec's users and permissions (nats-users.conf), as everywhere: each service logs
# in as its own user, with this run's passwords.
for name in EVENT_API WORKER_DEFAULT READER; do
  export "NATS_PASSWORD_$name=n$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')"
done
# nats-server 2.9 resolves `include` beside the including file, so the users file goes there.
cp "$ROOT/nats-users.conf" "$WORK/nats-users.conf"
cat >"$WORK/nats.conf" <<CONF
include ./nats-users.conf
jetstream { store_dir: "$WORK/nats" }
CONF
start_child nats-server nats-server -c "$WORK/nats.conf" -a 127.0.0.1 -p "$NATS_PORT"
wait_for 20 "nats-server" nats-server nats_answers "$NATS_PORT"
API_NATS_URL="nats://camrec-event-api:$NATS_PASSWORD_EVENT_API@127.0.0.1:$NATS_PORT"
WORKER_NATS_URL="nats://camrec-worker-default:$NATS_PASSWORD_WORKER_DEFAULT@127.0.0.1:$NATS_PORT"

start_child camera /usr/bin/python3 testkit/fake_camera.py --port "$CAMERA_PORT" --path /cam \
  --user "$CAMERA_USER" --password="$CAMERA_PASSWORD" --video h264 --audio aac \
  --width 640 --height 360 --fps 25 --kbps 800
wait_for 20 "the camera" camera grep -q '^READY' "$LOGS/camera.log"

# The key camera passwords are sealed with (event-api) and opened with (the worker), this run's.
CAMERA_SECRET_KEY="ui:$(head -c 32 /dev/urandom | base64 -w0)"
export CAMERA_SECRET_KEY

# A 20 s access token: the page refreshes it after 15 s, and the test checks that it does.
start_child event-api env CAMREC_DEV=1 \
  "DATABASE_URL=postgres://postgres@127.0.0.1:5432/$DB_NAME" "NATS_URL=$API_NATS_URL" CAMERA_ALLOWED_NETWORKS=127.0.0.0/8 \
  HOST=127.0.0.1 "PORT=$PORT" "ADMIN_USERNAME=$ADMIN_USERNAME" "ADMIN_PASSWORD=$ADMIN_PASSWORD" \
  ACCESS_TOKEN_TTL_SEC=20 "${storage_env[@]}" "$BIN/event-api"

start_child recorder-worker env "NATS_URL=$WORKER_NATS_URL" CAMERA_ALLOWED_NETWORKS=127.0.0.0/8 SITE=default \
  WORKER_ID=ui-test-worker PORT=0 "RECORD_DIR=$WORK/recordings" PROGRESS_INTERVAL_SEC=1 \
  "${storage_env[@]}" "$BIN/recorder-worker"

wait_for 60 "event-api /ready" event-api curl -fsS "$BASE/ready"
child_alive recorder-worker || fail_with_log recorder-worker

TOKEN=$(curl -fsS -X POST "$BASE/auth/login" -H 'content-type: application/json' \
  -d "{\"username\":\"$ADMIN_USERNAME\",\"password\":\"$ADMIN_PASSWORD\"}" | json_get accessToken) ||
  die "login as $ADMIN_USERNAME failed (see $LOGS/event-api.log)"
curl -fsS -X POST "$BASE/cameras" -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
  -d "{\"name\":\"demo-camera\",\"ipAddress\":\"127.0.0.1\",\"channel\":1,\"rtspPort\":$CAMERA_PORT,\
\"rtspUrl\":\"rtsp://$CAMERA_USER:$CAMERA_PASSWORD@127.0.0.1:$CAMERA_PORT/cam\",\"vendor\":\"testkit\"}" \
  >/dev/null || die "creating the demo camera failed (see $LOGS/event-api.log)"

if [[ $MODE == serve ]]; then
  FAILED=0
  cat <<TXT
ui-test: camrec is running at $BASE (admin: $ADMIN_USERNAME / $ADMIN_PASSWORD; logs: $LOGS)
ui-test: run the browser test against it in another terminal:
  cd ui-tests && UI_BASE_URL=$BASE UI_ADMIN_USERNAME=$ADMIN_USERNAME UI_ADMIN_PASSWORD='$ADMIN_PASSWORD' npm test
ui-test: Ctrl-C stops it
TXT
  while :; do
    for name in "${!CHILD_PIDS[@]}"; do
      child_alive "$name" || fail_with_log "$name"
    done
    sleep 1
  done
fi

# ---- 3. the browser test
test_env=("UI_BASE_URL=$BASE" "UI_ADMIN_USERNAME=$ADMIN_USERNAME" "UI_ADMIN_PASSWORD=$ADMIN_PASSWORD")
if [[ $MODE == screenshots ]]; then
  mkdir -p docs/ui
  test_env+=("UI_SCREENSHOTS_DIR=$ROOT/docs/ui")
fi
say "running ui-tests/review.test.js in headless Chromium against $BASE"
status=0
(cd ui-tests && env "${test_env[@]}" node --test --test-concurrency=1 \
  --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=tap --test-reporter-destination="$WORK/results.tap" review.test.js) || status=$?

passed=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$WORK/results.tap")
failed=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$WORK/results.tap")
passed=${passed:-0}
failed=${failed:-0}
if ((status != 0 && failed == 0)); then
  failed=1 # the runner itself failed (a syntax error, a crash): count it
fi
if ((failed == 0)) && [[ $MODE == screenshots ]]; then
  say "screenshots written to docs/ui/"
fi
finish "$passed" "$failed"
