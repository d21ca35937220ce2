#!/usr/bin/env bash
# Installs what camrec's tests and its dev command need, and only what is missing:
#   ffmpeg/ffprobe, the GStreamer RTSP server for /usr/bin/python3 (the fake camera),
#   PostgreSQL, nats-server (Debian packages) and s3s-fs (crates.io; the S3 test server);
#   for the browser tests (the review page, scripts/ui-test.sh; the assembled clip, played
#   and seeked by recorder-worker's tests): Chromium, Firefox ESR and Node.js (Debian
#   packages) and ui-tests/'s Node packages (`npm ci`, from its package-lock.json);
#   cargo-deny (crates.io; the dependency check) and schemathesis (PyPI; scripts/api-fuzz.sh).
# Idempotent: on a machine that has everything it prints one line and changes nothing.
# Needs root (or sudo) only when something must be installed. cargo-nextest is optional
# (scripts/test.sh falls back to `cargo test`) and is not installed here.
set -euo pipefail

export PATH="$HOME/.cargo/bin:/usr/sbin:/sbin:$PATH"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

S3S_FS_VERSION=0.14.1
# The newest cargo-deny that builds with our rustc (1.95); newer ones may need a newer one.
CARGO_DENY_VERSION=0.20.2
# schemathesis 4's command line (`--checks`, `--phases`, `--report junit`) is what
# scripts/api-fuzz.sh uses; 3.x differs.
SCHEMATHESIS_VERSION=4.32.5
# The GStreamer packages of shared/design/TESTING.md: the RTSP server, its Python bindings and the
# plugins the fake camera's pipelines use (x264/x265 encoders, AAC and A-law encoders, RTP payloaders).
GST_PACKAGES=(gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly
  gstreamer1.0-libav gstreamer1.0-x)
# The GStreamer elements testkit/fake_camera.py builds its pipelines from.
GST_ELEMENTS=(videotestsrc clockoverlay x264enc x265enc rtph264pay rtph265pay
  audiotestsrc avenc_aac rtpmp4gpay alawenc rtppcmapay mulawenc rtppcmupay)

say() { printf 'install-deps: %s\n' "$*"; }
die() {
  printf 'install-deps: error: %s\n' "$*" >&2
  exit 1
}

as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo "$@"
  else
    die "need root to run: $*"
  fi
}

gst_ready() {
  /usr/bin/python3 - "${GST_ELEMENTS[@]}" >/dev/null 2>&1 <<'PY'
import sys
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer  # noqa: F401
Gst.init(None)
missing = [e for e in sys.argv[1:] if Gst.ElementFactory.find(e) is None]
sys.exit(1 if missing else 0)
PY
}

postgres_installed() {
  compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null && command -v pg_isready >/dev/null &&
    command -v pgbench >/dev/null
}

installed_any=0
missing_apt=()
[[ -x /usr/bin/python3 ]] || missing_apt+=(python3)
{ command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null; } || missing_apt+=(ffmpeg)
gst_ready || missing_apt+=("${GST_PACKAGES[@]}")
postgres_installed || missing_apt+=(postgresql)
command -v nats-server >/dev/null || missing_apt+=(nats-server)
command -v curl >/dev/null || missing_apt+=(curl)
# The TLS tests make a throwaway CA with the openssl command (testkit/src/tls.rs).
command -v openssl >/dev/null || missing_apt+=(openssl)
command -v cc >/dev/null || missing_apt+=(gcc libc6-dev)
[[ -x /usr/bin/chromium ]] || missing_apt+=(chromium)
# The assembled clip is played and seeked in Firefox too (recorder-worker/tests/live.rs).
[[ -x /usr/bin/firefox-esr ]] || missing_apt+=(firefox-esr)
{ command -v node >/dev/null && command -v npm >/dev/null; } || missing_apt+=(nodejs npm)

if ((${#missing_apt[@]})); then
  command -v apt-get >/dev/null || die "missing ${missing_apt[*]} and no apt-get to install them"
  installed_any=1
  say "installing ${missing_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq >/dev/null || die "apt-get update failed"
  as_root apt-get install -y -qq --no-install-recommends "${missing_apt[@]}" >/dev/null ||
    die "apt-get install ${missing_apt[*]} failed"
  gst_ready || die "the GStreamer RTSP server still does not load in /usr/bin/python3 (elements: ${GST_ELEMENTS[*]})"
fi

command -v cargo >/dev/null || die "cargo is not on PATH (install Rust with rustup first)"
cargo fmt --version >/dev/null 2>&1 || die "rustfmt is missing: rustup component add rustfmt"
cargo clippy --version >/dev/null 2>&1 || die "clippy is missing: rustup component add clippy"

if ! command -v s3s-fs >/dev/null; then
  say "installing s3s-fs ${S3S_FS_VERSION} (about 2 minutes)"
  installed_any=1
  # Without CARGO_TARGET_DIR, cargo install builds in a temporary directory it removes, so the
  # workspace's build cache is neither used nor disturbed.
  env -u CARGO_TARGET_DIR cargo install --quiet "s3s-fs@${S3S_FS_VERSION}" --features binary --locked ||
    die "cargo install s3s-fs@${S3S_FS_VERSION} failed"
  command -v s3s-fs >/dev/null || die "s3s-fs was installed but is not on PATH (add ~/.cargo/bin)"
fi

if ! command -v cargo-deny >/dev/null; then
  say "installing cargo-deny ${CARGO_DENY_VERSION} (about 3 minutes)"
  installed_any=1
  env -u CARGO_TARGET_DIR cargo install --quiet "cargo-deny@${CARGO_DENY_VERSION}" --locked ||
    die "cargo install cargo-deny@${CARGO_DENY_VERSION} failed"
  command -v cargo-deny >/dev/null || die "cargo-deny was installed but is not on PATH (add ~/.cargo/bin)"
fi

schemathesis_ready() {
  [[ $(schemathesis --version 2>/dev/null) == "schemathesis, version ${SCHEMATHESIS_VERSION}" ]]
}

# Into the python3 on PATH (its pip puts the command next to it); /usr/bin/python3 is Debian's,
# whose packages pip must not change.
if ! schemathesis_ready; then
  say "installing schemathesis ${SCHEMATHESIS_VERSION} (PyPI)"
  installed_any=1
  python3 -m pip install --quiet --disable-pip-version-check "schemathesis==${SCHEMATHESIS_VERSION}" ||
    die "pip install schemathesis==${SCHEMATHESIS_VERSION} failed (python3 is $(command -v python3))"
  hash -r
  schemathesis_ready || die "schemathesis ${SCHEMATHESIS_VERSION} was installed but is not on PATH"
fi

# The browser test's packages, at the versions ui-tests/package.json pins.
ui_packages_ready() {
  (cd "$ROOT/ui-tests" && node -e '
const want = require("./package.json").devDependencies["playwright-core"];
const have = require("./node_modules/playwright-core/package.json").version;
process.exit(want === have ? 0 : 1);') >/dev/null 2>&1
}

if ! ui_packages_ready; then
  node_major=$(node -p 'process.versions.node.split(".")[0]')
  ((node_major >= 20)) || die "ui-tests need Node.js 20 or later (found $(node --version))"
  say "installing ui-tests' Node packages (npm ci)"
  installed_any=1
  (cd "$ROOT/ui-tests" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) ||
    die "npm ci in ui-tests/ failed"
fi

if ((installed_any)); then
  say "done"
else
  say "everything present (ffmpeg, GStreamer RTSP server, PostgreSQL, nats-server, s3s-fs, cargo-deny, schemathesis, Chromium, Firefox ESR, ui-tests' Node packages)"
fi
