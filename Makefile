# The two commands of the README are `make demo` and `make test`; everything else is a step.
SHELL := /bin/bash
CARGO ?= cargo
BIN := target/release/plateqc

.PHONY: setup build demo test lint unit pytest bench bench-watch bench-pg model fixtures clean-demo fuzz

setup:
	scripts/setup.sh

build: setup
	$(CARGO) build --release --locked

# Judge the demo inbox with the bundled model into demo/out (database, overlays, montages),
# then the reject analysis of it and its review page.
demo: build
	rm -rf demo/out
	$(BIN) scan demo/inbox --db demo/out/plateqc.sqlite --out demo/out --no-fail-on-error
	$(BIN) report --db demo/out/plateqc.sqlite --html demo/out/review.html

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --release --locked --all-targets -- -D warnings
	scripts/check-layers.sh
	# The fuzz targets are not run by `make test`, but they must keep building.
	cd fuzz && $(CARGO) fmt --check && $(CARGO) check --locked --bins

unit:
	$(CARGO) test --release --locked

pytest:
	cd models && ../.venv-test/bin/python -m pytest -q

test: setup lint unit pytest

# Nine rounds: the whole-process ratio and the daemon's bursts are short runs whose round-to-round
# spread (the Python peer's above all) moved three- and five-round medians across the targets.
bench: build
	$(CARGO) run --release --locked --bin plateqc-bench -- tests/fixtures --repeat 5 --peer demo/inbox --rounds 9 $(BENCH_ARGS)

# The daemon: latency from a complete file to its recorded verdict, and burst throughput.
bench-watch: build
	$(CARGO) build --release --locked --bin plateqc-latency
	target/release/plateqc-latency demo/inbox --rate 5 --count 60 --rounds 9

# Many sites on one PostgreSQL database: journal traffic of several daemons, then report
# latency as the history grows (scripts/pg-load.sh starts a private server). Not in `test`.
PG_LOAD_ARGS ?= --sites 8 --secs 20 --sizes 10000,100000,1000000
bench-pg: build
	$(CARGO) build --release --locked --bin plateqc-pgload
	scripts/pg-load.sh $(PG_LOAD_ARGS)

# Fuzz the decode worker and the DICOM receiver with AFL++ (cargo-afl, stable Rust), FUZZ_SECS
# seconds per target; crashes and hangs land in fuzz/findings/ (scripts/fuzz.sh). Not in `test`.
FUZZ_SECS ?= 600
fuzz:
	FUZZ_SECS=$(FUZZ_SECS) scripts/fuzz.sh

# Retrain the bundled model (needs PyTorch; see models/README.md). CI never does this.
model:
	$(MAKE) -C models model

fixtures:
	$(MAKE) -C models fixtures

clean-demo:
	rm -rf demo/out
