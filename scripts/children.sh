#!/usr/bin/env bash
# Child processes of the run scripts (dev.sh, ui-test.sh), sourced by them: each child in its own
# session (so Ctrl-C reaches only the script, which then stops them), stopped in STOP_ORDER with a
# deadline each, always reaped. The sourcing script defines LOGS (a directory), STOP_ORDER, and
# the functions say (a progress line), die (fail with a message) and fail_with_log NAME.
# build_services also needs ROOT, the repository.

declare -A CHILD_PIDS=()

# start_child NAME COMMAND...: starts COMMAND, its output in $LOGS/NAME.log.
start_child() {
  local name=$1
  shift
  setsid "$@" >"$LOGS/$name.log" 2>&1 &
  CHILD_PIDS[$name]=$!
}

child_alive() {
  kill -0 "${CHILD_PIDS[$1]}" 2>/dev/null
}

# stop_child NAME GRACE: SIGTERM, up to GRACE seconds to exit, then SIGKILL; reaped either way.
stop_child() {
  local name=$1 grace=$2 pid=${CHILD_PIDS[$1]:-}
  [[ -n $pid ]] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + grace))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
      sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
      say "$name did not stop within ${grace}s: killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || true
  unset "CHILD_PIDS[$name]"
}

# Stops every child in STOP_ORDER: the worker gets its SHUTDOWN_GRACE_SEC (25 s) and a margin.
stop_children() {
  local name
  for name in "${STOP_ORDER[@]}"; do
    case $name in
      recorder-worker) stop_child "$name" 35 ;;
      *) stop_child "$name" 10 ;;
    esac
  done
}

# wait_for SECONDS WHAT CHILD COMMAND...: until COMMAND succeeds; fails early if CHILD died.
wait_for() {
  local seconds=$1 what=$2 child=$3
  shift 3
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    child_alive "$child" || fail_with_log "$child"
    ((SECONDS < deadline)) || die "$what not ready within ${seconds}s (see $LOGS/$child.log)"
    sleep 0.3
  done
}

# Builds event-api and recorder-worker (release with CAMREC_RELEASE=1, else debug) and sets BIN
# to the directory of the binaries. Needs ROOT.
build_services() {
  local profile=debug
  local build_flags=()
  if [[ ${CAMREC_RELEASE:-0} == 1 ]]; then
    profile=release
    build_flags=(--release)
  fi
  say "building event-api and recorder-worker ($profile)"
  cargo build --quiet "${build_flags[@]}" -p event-api -p recorder-worker || die "cargo build failed"
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/$profile"
}

# json_get PATH: reads JSON on stdin, prints the value at PATH (keys and list indexes, dotted).
json_get() {
  /usr/bin/python3 -c 'import json,sys
v = json.load(sys.stdin)
for k in sys.argv[1].split("."):
    v = v[int(k)] if isinstance(v, list) else v[k]
print(v)' "$1"
}
