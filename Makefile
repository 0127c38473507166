# The two quick-start commands: `make run` and `make test`. Both set up what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test fuzz crash bench peers lint-rules clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# The real peers the integration tests run against, from Debian: DCMTK and Orthanc, chromium with
# its chromedriver for the console's browser tests, and PostgreSQL's server (the tests start their own).
peers:
	@# dcmdump: DCMTK's alone (pynetdicom installs a storescu of its own into the virtual environment)
	@if ! command -v dcmdump >/dev/null || ! command -v Orthanc >/dev/null || ! [ -x /usr/bin/chromedriver ] \
	    || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dcmtk orthanc openssl \
	      chromium chromium-driver postgresql >/dev/null; \
	  else \
	    echo "The test peers are needed: sudo apt-get install dcmtk orthanc openssl chromium chromium-driver postgresql" >&2; \
	    exit 1; \
	  fi; \
	fi

# The console runs beside the router, in the background, and is stopped (by its PID) when the router stops.
run: $(STAMP)
	@$(BIN)/dicom-rules console examples/router.yaml & console=$$!; \
	trap 'kill $$console 2>/dev/null; wait $$console' EXIT; trap 'exit 130' INT TERM; \
	$(BIN)/dicom-rules run examples/router.yaml

# Three processes, on two cores: most tests wait on peers and timeouts, not on the CPU. One test file stays
# in one process (its module fixtures start peers once).
TEST_WORKERS ?= 3
test: $(STAMP) peers
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

# A long fuzzing campaign (tests/fuzz): FUZZ_COUNT mutated files, from seed FUZZ_SEED, through
# dry-run, a watched folder and the listener; prints the counts, fails on any internal error,
# anything stuck, lost or misjudged; then RULES_FUZZ_COUNT mutated rule files (group rules, urgent, during).
FUZZ_COUNT ?= 5000
FUZZ_SEED ?= 6
RULES_FUZZ_COUNT ?= 20000
fuzz: $(STAMP) peers
	PYTHONPATH=tests $(BIN)/python -m fuzz --count $(FUZZ_COUNT) --seed $(FUZZ_SEED)
	RULES_FUZZ_COUNT=$(RULES_FUZZ_COUNT) $(BIN)/python -m pytest -q tests/fuzz/test_rules_fuzz.py

# The router SIGKILLed CRASH_KILLS times at random moments under load (tests/crash; `make test`
# kills it 10 times), from seed CRASH_SEED; fails on anything acknowledged and lost.
CRASH_KILLS ?= 100
crash: $(STAMP) peers
	CRASH_KILLS=$(CRASH_KILLS) $(BIN)/python -m pytest -q tests/crash/test_crash.py

bench: $(STAMP) peers
	$(BIN)/python -m benchmarks

lint-rules: $(STAMP)
	$(BIN)/dicom-rules lint rules/

clean:
	rm -rf $(VENV) build dist *.egg-info var
