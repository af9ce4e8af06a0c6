# Fjord's commands. `make test` is what CI runs; see README.md.

# Build output lives outside the clone, so a rerun on the same machine is incremental while a
# fresh machine starts from nothing.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/fjord/target

.PHONY: test setup test-rust test-player test-e2e player demo lint bench fuzz-check

## The whole system on this machine: installs what it needs, builds, and runs the test
## pattern, its origin, three relay nodes, a browser gateway and a desktop-player URL.
demo: setup
	cd player-web && npm run build
	cargo build --release -p fjord-encoder -p fjord-node
	"$(CARGO_TARGET_DIR)/release/fjord-encoder" demo

## Install what is missing, then run every test of the workspace and the player, and the
## end-to-end test in headless Chromium.
test: setup test-rust test-player test-e2e

setup:
	@./scripts/setup.sh

test-rust:
	cargo test --workspace --all-targets
	cargo test --workspace --doc
	./scripts/check-core-deps.sh

test-player:
	cd player-web && npm test

## Build the browser player into player-web/dist (the gateway serves it).
player:
	cd player-web && npm run build

## Encoder -> origin -> two relay nodes -> gateway -> headless Chromium (see player-web/e2e).
test-e2e: player
	cargo build -p fjord-encoder -p fjord-node
	cd player-web && FJORD_BIN_DIR="$(CARGO_TARGET_DIR)/debug" node e2e/e2e.mjs

## What CI adds to the tests: formatting, lints and documentation links.
lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

## Criterion benchmarks (figures in target/criterion).
bench:
	cargo bench -p fjord-core --bench wire
