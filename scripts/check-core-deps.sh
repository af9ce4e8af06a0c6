#!/usr/bin/env bash
# The sans-IO rule, checked: fjord-core's dependency tree (normal and build dependencies) holds
# no async runtime and no networking stack.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=$(cargo tree -p fjord-core -e normal,build --prefix none --format '{p}')
forbidden=$(printf '%s\n' "$tree" | grep -E '^(tokio|libp2p|quinn|async-std|smol|mio)([- ]|$)' | sort -u || true)
if [ -n "$forbidden" ]; then
  echo "fjord-core must stay sans-IO, but depends on:" >&2
  echo "$forbidden" >&2
  exit 1
fi
echo "fjord-core dependency tree: $(printf '%s\n' "$tree" | sort -u | wc -l) crates, no tokio, libp2p or quinn"
