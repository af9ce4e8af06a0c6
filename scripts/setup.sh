#!/usr/bin/env bash
# Installs what Fjord needs on Debian 12 as root, idempotently: Debian packages that are
# missing, and the player's npm packages when package-lock.json changed. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the build and the tests use. Each issue that needs more adds to this list.
APT_PACKAGES=(
  pkg-config
  build-essential
  # The encoder links FFmpeg 5.1 through ffmpeg-next; bindgen needs libclang and its headers.
  libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev
  libavfilter-dev libavdevice-dev libclang1-14 libclang-common-14-dev
  # The encoder's tests push clips with the real ffmpeg client (SRT, RTMP, UDP).
  ffmpeg
  # The end-to-end test plays the channel in Debian's Chromium (driven by playwright-core).
  chromium
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ! command -v node >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages: ${missing[*]}; run as root or install them" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=900 update -qq
  apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found: Fjord needs a Rust toolchain (1.88 or newer) on PATH" >&2
  exit 1
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "setup: Node.js $(node --version) is too old: the player's tools need 20.19 or newer" >&2
  exit 1
fi

# npm ci only when the lock file changed since the last install.
stamp=player-web/node_modules/.fjord-lock-hash
want=$(sha256sum player-web/package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing the player's npm packages"
  (cd player-web && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" > "$stamp"
fi
