# The README's commands. Each installs what it needs (Debian packages, npm test tools) first.
.PHONY: run build test lint bench bench-events bench-simulate bench-check bench-credits deps test-deps clean

JOBS ?= $(shell nproc)

deps:
	@scripts/install-deps.sh build

test-deps:
	@scripts/install-deps.sh test

## build: release binary at build/release/tally
build: deps
	@cmake --preset release -DTALLY_BUILD_TESTS=OFF >/dev/null
	@cmake --build --preset release --target tally -j $(JOBS)

## run: build and start `tally serve` on its defaults (./tally.db, 127.0.0.1:8080) with the built-in Stripe sandbox
run: build
	./build/release/tally serve --stripe-sandbox

## test: lint, then every test (unit, integration on real SQLite, end-to-end over HTTP) on the ASan+UBSan build
test: test-deps
	@cmake --preset debug >/dev/null
	@cmake --build --preset debug -j $(JOBS)
	@scripts/lint.sh build/debug
	@ctest --preset debug -j $(JOBS)

## lint: clang-tidy (.clang-tidy, warnings as errors) over the sources
lint:
	@cmake --preset debug >/dev/null
	@scripts/lint.sh build/debug

## bench: webhook throughput against the seed-style baseline, event delivery, the simulation, then usage checks (see BENCHMARKS.md)
bench: build test-deps
	@bench/webhooks/run.sh
	@bench/events/run.sh
	@bench/simulate/run.sh
	@bench/check/run.sh
	@cmake --build --preset release --target credits_bench -j $(JOBS)
	@bench/credits/run.sh

## bench-events: only the event delivery benchmark
bench-events: build test-deps
	@bench/events/run.sh

## bench-simulate: only the simulation benchmark
bench-simulate: build
	@bench/simulate/run.sh

## bench-check: only the usage-limit benchmark (checks, recorded checks, batch ingestion against an express baseline)
bench-check: build
	@bench/check/run.sh

## bench-credits: only the credit deduction benchmark (durable deductions over HTTP and in-process, against seed-style baselines)
bench-credits: build
	@cmake --build --preset release --target credits_bench -j $(JOBS)
	@bench/credits/run.sh

clean:
	rm -rf build
