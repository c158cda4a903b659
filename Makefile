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

.PHONY: install test lint bench testnet clean browser

install: $(STAMP)

# Re-installs only when the package metadata changed.
$(STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $(STAMP)

test: install browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Headless Chromium for the dashboard's browser test (Debian packages). Needs
# root and apt; elsewhere the test says how to install it and skips.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium and chromium-driver for the browser test…"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
			|| echo "warning: could not install chromium; the browser test will be skipped"; \
	else echo "note: chromium/chromedriver missing; run 'apt-get install chromium chromium-driver' for the browser test"; fi

lint: install
	$(BIN)/ruff check consensus ml wallet node tests benchmarks
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
