# gradchain — every target that needs Python depends on `install`, so a fresh
# clone only needs `make testnet` or `make test`.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

NODES ?= 3
TASK ?= digits
ATTACKERS ?= 0
ATTACK ?= sign-flip
QUICK ?=
RULE ?=
FRESH ?=
DIR ?= .testnet
DATA ?=

.PHONY: install test test-long fuzz lint bench testnet clean browser netns-tools

install: $(STAMP)

# Re-installs only when the package metadata changed.
$(STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $(STAMP)

test: install browser netns-tools
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The reliability suite at full size (tests/reliability: 50 SIGKILLs, 10,000-tx
# flood, thousands of API examples, ...); about an hour on two cores.
test-long: install browser netns-tools
	GRADCHAIN_LONG=1 $(BIN)/python -m pytest tests/reliability $(PYTEST_ARGS)

# Every decoder of untrusted bytes under atheris, FUZZ_RUNS inputs each.
FUZZ_RUNS ?= 1000000
fuzz: install $(VENV)/.fuzz-installed
	$(BIN)/python -m tests.fuzz --runs $(FUZZ_RUNS)

$(VENV)/.fuzz-installed: setup.cfg
	$(BIN)/python -m pip install --quiet -e '.[fuzz]'
	@touch $@

# Headless Chromium for the dashboard's browser test (Debian packages). Needs
# root and apt; elsewhere the test says how to install it and skips.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium and chromium-driver for the browser test…"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
			|| echo "warning: could not install chromium; the browser test will be skipped"; \
	else echo "note: chromium/chromedriver missing; run 'apt-get install chromium chromium-driver' for the browser test"; fi

# iproute2's `ip` for the separate-hosts test (Linux network namespaces; a Debian
# package). Needs root and apt; elsewhere the test says what is missing and skips.
netns-tools:
	@if command -v ip >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing iproute2 for the separate-hosts test…"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null) \
			|| echo "warning: could not install iproute2; the separate-hosts test will be skipped"; \
	else echo "note: iproute2 missing; run 'apt-get install iproute2' for the separate-hosts test"; fi

lint: install
	$(BIN)/ruff check consensus ml wallet node tests benchmarks examples
	$(BIN)/mypy --strict consensus ml wallet node

# A local testnet in the foreground: Ctrl-C stops every node (data stays in $(DIR)).
testnet: install
	$(BIN)/gradchain testnet up --dir $(DIR) --nodes $(NODES) --task $(TASK) \
		--attackers $(ATTACKERS) --attack $(ATTACK) $(if $(RULE),--rule $(RULE),) $(if $(FRESH),--fresh,) \
		$(if $(DATA),--data $(DATA),)

bench: install
	$(BIN)/python -m benchmarks $(if $(QUICK),--quick,)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
