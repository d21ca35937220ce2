#!/usr/bin/env bash
# THE test command: installs what is missing, starts PostgreSQL and NATS if they are down, then
# checks formatting and lints and runs every test of the workspace. Exits non-zero on any failure.
#
#   bash scripts/test.sh
#
# Environment: CARGO_TARGET_DIR (cargo's usual meaning), CAMREC_TEST_THREADS (test parallelism;
# default: the runner's, one per core; tests start their own NATS servers and databases, so any
# value is safe, lower values only make timing-sensitive recordings calmer).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

step() { printf '\n==> %s\n' "$*"; }
started=$SECONDS

step "dependencies"
bash scripts/install-deps.sh

step "services"
# shellcheck source=scripts/services.sh
source scripts/services.sh
ensure_services

step "cargo fmt --all --check"
cargo fmt --all --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "cargo deny --offline check licenses bans sources"
cargo fetch --locked --quiet # --offline needs every crate of the lock file (all platforms) downloaded
cargo deny --offline check --hide-inclusion-graph licenses bans sources

step "the API fuzzed from its OpenAPI document (scripts/api-fuzz.sh)"
bash scripts/api-fuzz.sh

step "the review page in headless Chromium (scripts/ui-test.sh)"
bash scripts/ui-test.sh

threads=()
if [[ -n ${CAMREC_TEST_THREADS:-} ]]; then
  threads=(--test-threads "$CAMREC_TEST_THREADS")
fi

if cargo nextest --version >/dev/null 2>&1; then
  # Doc tests first (nextest does not run them), so that the last lines printed are nextest's
  # summary of the whole suite.
  step "cargo test --workspace --doc"
  cargo test --workspace --doc --quiet
  step "cargo nextest run --workspace"
  cargo nextest run --workspace --config-file scripts/nextest.toml --profile ci "${threads[@]}"
else
  step "cargo test --workspace (cargo-nextest not installed)"
  cargo test --workspace --no-fail-fast -- "${threads[@]}"
fi

printf '\nscripts/test.sh: all checks passed in %ss\n' "$((SECONDS - started))"
