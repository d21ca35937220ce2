#!/usr/bin/env bash
# THE run command: the whole camrec system on this machine, in the foreground.
#
#   bash scripts/dev.sh            # start everything, print what to curl, run until Ctrl-C
#   bash scripts/dev.sh --smoke    # the same, then record a 6 s MOTION clip through the API,
#                                  # check it plays (ffprobe), stop everything and exit 0/1
#
# What it starts: PostgreSQL and NATS if they are not running (scripts/services.sh), database
# `camrec` if missing, a demo RTSP camera (testkit/fake_camera.py on 127.0.0.1:8554), event-api on
# :3000 and one recorder-worker, with local storage under ./.local/ (objects, recordings, logs).
# Ctrl-C stops the worker first (it finishes its recordings), then event-api, then the camera.
#
# NATS runs with authentication (nats.conf): event-api and the worker log in as their users, with
# the passwords scripts/services.sh generated into .local/nats.env. When the NATS server on 4222
# accepts anonymous clients (not started from nats.conf, e.g. a distribution's service), this
# script starts camrec's own, with nats.conf's users, on 127.0.0.1:4223 (DEV_NATS_PORT; store in
# .local/nats/) and stops it on exit; CAMREC_ALLOW_ANONYMOUS_NATS=1 runs on the anonymous one
# instead (permissions not enforced).
#
# Environment (all optional): PORT (3000), CAMERA_PORT (8554), ADMIN_PASSWORD
# (admin-dev-password), CAMREC_RELEASE=1 (release build), CARGO_TARGET_DIR, RUST_LOG,
# CAMREC_ALLOW_ANONYMOUS_NATS=1, DEV_NATS_PORT (4223).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"

SMOKE=0
case "${1:-}" in
  --smoke) SMOKE=1 ;;
  "") ;;
  *)
    echo "usage: bash scripts/dev.sh [--smoke]" >&2
    exit 2
    ;;
esac

PORT="${PORT:-3000}"
CAMERA_PORT="${CAMERA_PORT:-8554}"
ADMIN_USERNAME="admin"
ADMIN_PASSWORD="${ADMIN_PASSWORD:-admin-dev-password}"
CAMERA_USER="admin"
CAMERA_PASSWORD=camera-dev-password
API="http://localhost:$PORT"
LOCAL="$ROOT/.local"
LOGS="$LOCAL/logs"
DATABASE_URL="postgres://postgres@127.0.0.1:5432/camrec"
NATS_ADDR="127.0.0.1:4222"

say() { printf 'dev: %s\n' "$*"; }
die() {
  printf 'dev: error: %s\n' "$*" >&2
  exit 1
}

port_free() {
  ! timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# ---- children: started in their own sessions, so Ctrl-C reaches only this script, which then
# stops them in order (worker, api, camera) and waits for each with a deadline.
STOP_ORDER=(recorder-worker event-api camera nats-server)
# shellcheck source=scripts/children.sh
source "$ROOT/scripts/children.sh"

cleanup() {
  trap - INT TERM EXIT
  stop_children
  say "stopped; logs are in $LOGS"
}

fail_with_log() {
  local name=$1
  printf 'dev: error: %s exited; the end of %s:\n' "$name" "$LOGS/$name.log" >&2
  tail -n 20 "$LOGS/$name.log" >&2 || true
  exit 1
}


# ---- 1. dependencies, services, database
bash scripts/install-deps.sh
# shellcheck source=scripts/services.sh
source scripts/services.sh
ensure_services
if ! nats_requires_auth; then
  if [[ ${CAMREC_ALLOW_ANONYMOUS_NATS:-0} == 1 ]]; then
    say "warning: NATS on $NATS_ADDR accepts anonymous clients: running without NATS permissions"
  else
    # Another NATS (a distribution's service, anonymous) holds 4222: run camrec's own beside it.
    DEV_NATS_PORT="${DEV_NATS_PORT:-4223}"
    port_free "$DEV_NATS_PORT" || die "port $DEV_NATS_PORT (DEV_NATS_PORT) is taken"
    mkdir -p "$LOCAL/nats" "$LOGS"
    # nats-server 2.9 resolves `include` beside the including file, so the users file goes there.
    cp "$ROOT/nats-users.conf" "$LOCAL/nats-users.conf"
    cat >"$LOCAL/nats-dev.conf" <<CONF
include ./nats-users.conf
jetstream { store_dir: "$LOCAL/nats" }
CONF
    say "the NATS server on $NATS_ADDR accepts anonymous clients: starting camrec's own, with its users, on 127.0.0.1:$DEV_NATS_PORT"
    trap cleanup EXIT
    start_child nats-server nats-server -c "$LOCAL/nats-dev.conf" -a 127.0.0.1 -p "$DEV_NATS_PORT"
    NATS_ADDR="127.0.0.1:$DEV_NATS_PORT"
    for _ in $(seq 1 100); do
      NATS_HOST=127.0.0.1 NATS_PORT=$DEV_NATS_PORT nats_requires_auth && break
      child_alive nats-server || fail_with_log nats-server
      sleep 0.2
    done
    NATS_HOST=127.0.0.1 NATS_PORT=$DEV_NATS_PORT nats_requires_auth ||
      die "camrec's NATS on $NATS_ADDR did not come up (log: $LOGS/nats-server.log)"
  fi
fi
# Each service logs in as its own user (nats-users.conf); the passwords come from .local/nats.env.
API_NATS_URL="nats://camrec-event-api:$NATS_PASSWORD_EVENT_API@$NATS_ADDR"
WORKER_NATS_URL="nats://camrec-worker-default:$NATS_PASSWORD_WORKER_DEFAULT@$NATS_ADDR"
if [[ $(psql "$DATABASE_URL" -XAtqc 'select 1' 2>/dev/null || true) != 1 ]]; then
  say "creating database camrec"
  createdb -h 127.0.0.1 -p 5432 -U postgres camrec || die "createdb camrec failed"
fi

# ---- 2. build
build_services

# ---- 3. start the camera, event-api and the worker
port_free "$PORT" || die "port $PORT is in use (another event-api? set PORT=...)"
port_free "$CAMERA_PORT" || die "port $CAMERA_PORT is in use (set CAMERA_PORT=...)"
mkdir -p "$LOGS" "$LOCAL/objects" "$LOCAL/recordings"
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

export RUST_LOG="${RUST_LOG:-info}"
# The services log to files: no terminal colour codes in them.
export NO_COLOR=1
storage_env=(STORAGE_MODE=local "LOCAL_STORAGE_DIR=$LOCAL/objects" "MEDIA_BASE_URL=$API")
# The key camera passwords are sealed with (event-api) and opened with (the worker); kept so
# that the cameras of a previous run still open.
KEY_FILE="$LOCAL/camera-secret-key"
if [[ ! -s $KEY_FILE ]]; then
  (umask 077 && printf 'dev:%s\n' "$(head -c 32 /dev/urandom | base64 -w0)" >"$KEY_FILE")
fi
key_env=("CAMERA_SECRET_KEY=$(cat "$KEY_FILE")")

say "starting the demo camera on rtsp://127.0.0.1:$CAMERA_PORT/cam (log: $LOGS/camera.log)"
start_child camera /usr/bin/python3 testkit/fake_camera.py --port "$CAMERA_PORT" --path /cam \
  --user "$CAMERA_USER" --password="$CAMERA_PASSWORD" --video h264 --audio aac \
  --width 1280 --height 720 --fps 25 --kbps 2000
wait_for 20 "demo camera" camera grep -q '^READY' "$LOGS/camera.log"

say "starting event-api on $API (log: $LOGS/event-api.log)"
start_child event-api env CAMREC_DEV=1 "DATABASE_URL=$DATABASE_URL" "NATS_URL=$API_NATS_URL" CAMERA_ALLOWED_NETWORKS=127.0.0.0/8 \
  "PORT=$PORT" "ADMIN_USERNAME=$ADMIN_USERNAME" "ADMIN_PASSWORD=$ADMIN_PASSWORD" \
  "${key_env[@]}" "${storage_env[@]}" "$BIN/event-api"

say "starting recorder-worker dev-worker-1 (log: $LOGS/recorder-worker.log)"
start_child recorder-worker env "NATS_URL=$WORKER_NATS_URL" CAMERA_ALLOWED_NETWORKS=127.0.0.0/8 SITE=default WORKER_ID=dev-worker-1 PORT=3001 \
  "RECORD_DIR=$LOCAL/recordings" "${key_env[@]}" "${storage_env[@]}" "$BIN/recorder-worker"

wait_for 60 "event-api /ready" event-api curl -fsS "$API/ready"
child_alive recorder-worker || fail_with_log recorder-worker

# ---- 4. log in, create the demo camera if absent
TOKEN=$(curl -fsS -X POST "$API/auth/login" -H 'content-type: application/json' \
  -d "{\"username\":\"$ADMIN_USERNAME\",\"password\":\"$ADMIN_PASSWORD\"}" | json_get accessToken) ||
  die "login as $ADMIN_USERNAME failed (the admin is created only when the database has no user; \
an older admin keeps its password)"
auth=(-H "authorization: Bearer $TOKEN")

CAMERA_URL="rtsp://$CAMERA_USER:$CAMERA_PASSWORD@127.0.0.1:$CAMERA_PORT/cam"
CAMERA_ID=$(curl -fsS "${auth[@]}" "$API/cameras?name=demo-camera" | json_get data.0.id 2>/dev/null || true)
if [[ -z $CAMERA_ID ]]; then
  CAMERA_ID=$(curl -fsS "${auth[@]}" -X POST "$API/cameras" -H 'content-type: application/json' \
    -d "{\"name\":\"demo-camera\",\"ipAddress\":\"127.0.0.1\",\"channel\":1,\"rtspPort\":$CAMERA_PORT,\
\"rtspUrl\":\"$CAMERA_URL\",\"vendor\":\"testkit\"}" |
    json_get id) || die "creating the demo camera failed (see $LOGS/event-api.log)"
  say "created the demo camera $CAMERA_ID"
else
  # An earlier run may have served the camera on another CAMERA_PORT: point it at this one.
  curl -fsS "${auth[@]}" -X PATCH "$API/cameras/$CAMERA_ID" -H 'content-type: application/json' \
    -d "{\"rtspPort\":$CAMERA_PORT,\"rtspUrl\":\"$CAMERA_URL\",\"enabled\":true}" >/dev/null ||
    die "updating the demo camera failed (see $LOGS/event-api.log)"
fi

if ((SMOKE)); then
  say "smoke run: recording a 6 s MOTION clip through the API"
  /usr/bin/python3 scripts/dev_smoke.py --api "$API" --token "$TOKEN" --camera "$CAMERA_ID" --seconds 6
  exit $?
fi

# ---- 5. tell the user what to do, then stay in the foreground
cat <<TXT

camrec is running.
  API        $API   (docs: $API/docs, OpenAPI: $API/openapi.json, metrics: $API/metrics)
  camera     demo-camera $CAMERA_ID -> rtsp://$CAMERA_USER:***@127.0.0.1:$CAMERA_PORT/cam (720p H.264 + AAC)
  admin      $ADMIN_USERNAME / $ADMIN_PASSWORD
  storage    $LOCAL/objects (served at $API/media/...), recordings in $LOCAL/recordings
  logs       $LOGS/{event-api,recorder-worker,camera}.log

Try it (in another terminal):

  API=$API
  TOKEN=\$(curl -s -X POST \$API/auth/login -H 'content-type: application/json' \\
    -d '{"username":"$ADMIN_USERNAME","password":"$ADMIN_PASSWORD"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["accessToken"])')

  # 1. a MOTION event starts a recording; note the event id and the playbackId
  curl -s -X POST \$API/events -H "authorization: Bearer \$TOKEN" -H 'content-type: application/json' \\
    -d '{"cameraId":"$CAMERA_ID","type":"MOTION","description":"tried by hand"}'
  EVENT_ID=<event.id from the answer>

  # 2. watch the playback go PENDING -> RECORDING (progress figures appear every few seconds)
  curl -s "\$API/playbacks?eventId=\$EVENT_ID" -H "authorization: Bearer \$TOKEN"

  # 3. after a few seconds, end the event: the worker stops, uploads and reports COMPLETED
  curl -s -X POST \$API/events/\$EVENT_ID/end -H "authorization: Bearer \$TOKEN"
  curl -s "\$API/playbacks?eventId=\$EVENT_ID" -H "authorization: Bearer \$TOKEN"

  # 4. open data[0].videoUrl (and thumbnailUrl) in a browser, or: ffprobe <videoUrl>

Or let the script do all of that: bash scripts/dev.sh --smoke
Ctrl-C stops everything (the worker finishes a running recording first).
TXT

# Stay until Ctrl-C, or until a child dies on its own (then say which and stop the rest).
while :; do
  for name in "${!CHILD_PIDS[@]}"; do
    child_alive "$name" || fail_with_log "$name"
  done
  sleep 1
done
