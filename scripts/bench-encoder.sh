#!/usr/bin/env bash
# Encoder benchmark: CPU seconds per media second and chunk-ready latency (capture of a chunk's
# last frame to its signed chunk, p50/p99) at live rate, for 720p30 and 360p30 with x264
# veryfast, on the built-in test pattern and on a busier clip (moving test pattern with film
# grain noise, which costs x264 more than the flat pattern). Usage: scripts/bench-encoder.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fjord/target}"
cargo build --release -q -p fjord-encoder
enc="$CARGO_TARGET_DIR/release/fjord-encoder"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$enc" keygen --out "$work/k.key" >/dev/null 2>&1
echo "making ${secs} s clips with grain at each size (once)..." >&2
for size in 1280x720 640x360; do
  ffmpeg -v error -f lavfi -i "testsrc2=size=$size:rate=30:duration=$secs,noise=alls=12:allf=t+u" \
    -f lavfi -i "sine=frequency=440:sample_rate=48000:duration=$secs" \
    -c:v libx264 -preset veryfast -crf 18 -g 30 -c:a aac "$work/busy-$size.mp4"
done
printf '%-8s %-9s %-18s %-10s %-12s %-12s %-8s\n' size input cpu_s_per_media_s ready_p50 ready_p99 ready_max dropped
for size in 1280x720 640x360; do
  for input in pattern busy; do
    # The clip is decoded too: its cost is part of the figure, as for any file or live input.
    src=$input; [ "$input" = busy ] && src="$work/busy-$size.mp4"
    line=$("$enc" run --key "$work/k.key" --input "$src" --size "$size" --preset veryfast \
      --record "$work/rec-$size-$input" --duration "$secs" 2>/dev/null | grep '^summary:')
    field() { echo "$line" | tr ' ' '\n' | grep "^$1=" | head -1 | cut -d= -f2; }
    printf '%-8s %-9s %-18s %-10s %-12s %-12s %-8s\n' "$size" "$input" "$(field cpu_s_per_media_s)" \
      "$(field video_ready_ms_p50) ms" "$(field p99) ms" "$(field max) ms" "$(field dropped)"
  done
done
