#!/usr/bin/env bash
# Makes sure the two services camrec needs are answering on their standard ports:
#   PostgreSQL on 127.0.0.1:5432 (trust auth for the postgres user, as tests and dev expect)
#   nats-server with JetStream on 127.0.0.1:4222 (started with ../nats.conf: authentication on,
#   its users' passwords generated once into .local/nats.env and exported by `nats_passwords`)
# A service that already answers is left alone (a NATS server that accepts anonymous clients is
# reported: camrec's users are not enforced there). Each start is followed by a wait with a
# deadline.
#
# Run it (`bash scripts/services.sh`) or source it and call `ensure_services` (test.sh, dev.sh).
# Tests start their own NATS servers and databases on top of these; only PostgreSQL is shared.

CAMREC_ROOT="${CAMREC_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
PG_HOST=127.0.0.1
PG_PORT=5432
NATS_HOST=127.0.0.1
NATS_PORT=4222
SERVICE_START_TIMEOUT_SEC="${SERVICE_START_TIMEOUT_SEC:-60}"

svc_say() { printf 'services: %s\n' "$*"; }
svc_die() {
  printf 'services: error: %s\n' "$*" >&2
  exit 1
}

# wait_until SECONDS WHAT COMMAND...: runs COMMAND every 0.2 s until it succeeds; fails after
# SECONDS with a message naming WHAT.
wait_until() {
  local seconds=$1 what=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || {
      printf 'services: error: %s did not become ready within %ss\n' "$what" "$seconds" >&2
      return 1
    }
    sleep 0.2
  done
}

pg_answers() {
  pg_isready -q -h "$PG_HOST" -p "$PG_PORT"
}

pg_accepts_postgres_user() {
  psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -XAtqc 'select 1' >/dev/null 2>&1
}

# Reads the server's INFO line: proves a NATS server (not just any process) holds the port.
nats_answers() {
  timeout 2 bash -c "exec 3<>/dev/tcp/$NATS_HOST/$NATS_PORT && head -c 4 <&3 | grep -q INFO" 2>/dev/null
}

# Whether the server on the port refuses anonymous clients (its INFO line says auth_required).
nats_requires_auth() {
  timeout 2 bash -c "exec 3<>/dev/tcp/$NATS_HOST/$NATS_PORT && head -n 1 <&3" 2>/dev/null |
    grep -q '"auth_required":true'
}

# The passwords of nats.conf's users (nats-users.conf), generated once into .local/nats.env
# (mode 600) and exported: the server reads them from its environment, dev.sh puts them into the
# services' NATS_URL. A letter first: nats.conf parses an unquoted value (digits would be a
# number).
NATS_ENV_FILE="$CAMREC_ROOT/.local/nats.env"
nats_passwords() {
  if [[ ! -s $NATS_ENV_FILE ]]; then
    mkdir -p "$(dirname "$NATS_ENV_FILE")"
    (
      umask 077
      for name in EVENT_API WORKER_DEFAULT READER; do
        printf 'NATS_PASSWORD_%s=n%s\n' "$name" "$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')"
      done >"$NATS_ENV_FILE"
    )
  fi
  set -a
  # shellcheck source=/dev/null
  source "$NATS_ENV_FILE"
  set +a
}

pg_version() {
  local bin
  bin=$(compgen -G '/usr/lib/postgresql/*/bin/postgres' | sort -V | tail -n 1)
  [[ -n $bin ]] || svc_die "PostgreSQL is not installed (run scripts/install-deps.sh)"
  basename "$(dirname "$(dirname "$bin")")"
}

ensure_postgres() {
  export PATH="/usr/sbin:/sbin:$PATH"
  if ! pg_answers; then
    local version
    version=$(pg_version)
    if [[ -d /etc/postgresql/$version/main ]]; then
      svc_say "starting PostgreSQL $version (cluster main)"
      pg_ctlcluster --skip-systemctl-redirect "$version" main start ||
        svc_die "pg_ctlcluster $version main start failed (see /var/log/postgresql/)"
    else
      svc_say "creating and starting PostgreSQL $version cluster main on port $PG_PORT (trust auth on loopback)"
      pg_createcluster "$version" main -p "$PG_PORT" --start -- --auth-local=trust --auth-host=trust >/dev/null ||
        svc_die "pg_createcluster $version main failed"
    fi
    wait_until "$SERVICE_START_TIMEOUT_SEC" "PostgreSQL on $PG_HOST:$PG_PORT" pg_answers || exit 1
  fi
  pg_accepts_postgres_user ||
    svc_die "PostgreSQL on $PG_HOST:$PG_PORT answers but refuses user postgres without a password; \
add 'host all postgres 127.0.0.1/32 trust' to pg_hba.conf or set DATABASE_URL with a password"
}

ensure_nats() {
  export PATH="/usr/sbin:/sbin:$PATH"
  nats_passwords
  if nats_answers; then
    nats_requires_auth ||
      svc_say "warning: the NATS server on $NATS_HOST:$NATS_PORT accepts anonymous clients (not started from nats.conf): camrec's users and permissions are not enforced there"
    return 0
  fi
  local bin logs store=/var/lib/nats-server
  bin=$(command -v nats-server) || svc_die "nats-server is not installed (run scripts/install-deps.sh)"
  # nats.conf names the store directory (nats-server refuses `-sd` on top of `store_dir`).
  { mkdir -p "$store" 2>/dev/null && [[ -w $store ]]; } ||
    svc_die "cannot write $store (nats.conf's store_dir): run as root, or start your own server: nats-server -js -a $NATS_HOST -p $NATS_PORT -sd DIR"
  # --background hides the server's stderr: check the configuration first so an error is seen.
  "$bin" -c "$CAMREC_ROOT/nats.conf" -t >/dev/null 2>&1 ||
    svc_die "$CAMREC_ROOT/nats.conf is not valid for $("$bin" --version): $("$bin" -c "$CAMREC_ROOT/nats.conf" -t 2>&1 | head -n 1)"
  logs="$CAMREC_ROOT/.local/logs"
  mkdir -p "$logs"
  svc_say "starting nats-server with JetStream on $NATS_HOST:$NATS_PORT (store $store, log $logs/nats-server.log)"
  # The pid file makes start-stop-daemon look for this server only, not for any nats-server
  # (tests run their own on other ports).
  start-stop-daemon --start --oknodo --background \
    --make-pidfile --pidfile "$CAMREC_ROOT/.local/nats-server.pid" --exec "$bin" -- \
    -c "$CAMREC_ROOT/nats.conf" -a "$NATS_HOST" -p "$NATS_PORT" -l "$logs/nats-server.log" ||
    svc_die "start-stop-daemon could not start nats-server"
  wait_until "$SERVICE_START_TIMEOUT_SEC" "nats-server on $NATS_HOST:$NATS_PORT (log: $logs/nats-server.log)" nats_answers ||
    exit 1
}

ensure_services() {
  ensure_postgres
  ensure_nats
  svc_say "PostgreSQL $PG_HOST:$PG_PORT and NATS $NATS_HOST:$NATS_PORT are up"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  set -euo pipefail
  ensure_services
fi
