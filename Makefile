# Two commands for a fresh Debian/Ubuntu machine (see README):
#   make run   install what is missing, initialise the development PKI under var/, serve :5000
#   make test  the same set-up, then the whole test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# One pytest-xdist worker per core: every worker makes its own SoftHSM tokens, SQLite file and
# scratch PostgreSQL database, so they never share state. PYTEST_ARGS= runs in one process.
PYTEST_ARGS ?= -n auto
# Debian packages the service and its tests use: the SoftHSM2 PKCS#11 module and its tool,
# the openssl command line (independent client in tests), Python's venv support, and Chromium
# (the browser the web UI tests drive through Playwright; never downloaded by Playwright), and a
# Chinese font for it (without one, Chinese pages render as empty boxes: the 360 px checks and
# the screenshots of tests/browser would not show the real glyph widths).

.PHONY: run test setup system-packages compile-translations translations lint bench bench-report clean-var

run: setup
	$(BIN)/ca-service init
	$(BIN)/ca-service serve --host 127.0.0.1 --port 5000

test: setup
	$(BIN)/ca-service init
	$(BIN)/python -m pytest $(PYTEST_ARGS)

setup: system-packages $(STAMP) compile-translations tests/browser/node_modules

# axe-core for the accessibility checks of tests/browser (pinned in its package-lock.json).
tests/browser/node_modules: tests/browser/package-lock.json
	cd tests/browser && npm ci --no-audit --no-fund --silent
	touch $@

# Languages (ca_service/i18n.py): the .po catalogs are in git, the compiled .mo files are not;
# every set-up compiles them (a second, so always). Fuzzy or empty entries stay English.
TRANSLATIONS := ca_service/translations
LANGUAGES := es zh_Hans
compile-translations: $(STAMP)
	$(BIN)/pybabel -q compile -d $(TRANSLATIONS) -D messages

# For developers after changing user-facing strings: extract them from the code and templates
# (babel.cfg) into messages.pot and merge it into every catalog; then translate the new or
# fuzzy entries in $(TRANSLATIONS)/*/LC_MESSAGES/messages.po (tests/i18n/test_catalogs.py fails until
# each has a translation).
translations: $(STAMP)
	$(BIN)/pybabel -q extract -F babel.cfg -k lazy_gettext -k _l --add-location=file --sort-by-file \
	  --project=ca-service --no-wrap -o $(TRANSLATIONS)/messages.pot .
	for language in $(LANGUAGES); do \
	  $(BIN)/pybabel -q update -i $(TRANSLATIONS)/messages.pot -d $(TRANSLATIONS) -D messages \
	    -l $$language --init-missing --ignore-obsolete --no-wrap || exit 1; \
	done

system-packages:
	@missing=""; \
	command -v softhsm2-util >/dev/null || missing="$$missing softhsm2"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	fc-list :lang=zh-cn 2>/dev/null | grep -q . || missing="$$missing fonts-wqy-microhei"; \
	for tool in $(EXTRA_PACKAGES); do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; \
	  elif command -v sudo >/dev/null; then SUDO="sudo"; \
	  else echo "error: need root or sudo to install:$$missing (apt-get install$$missing)" >&2; exit 1; fi; \
	  command -v apt-get >/dev/null || { echo "error: no apt-get; install$$missing with your package manager" >&2; exit 1; }; \
	  echo "installing system packages:$$missing"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: setup
	$(BIN)/python bench/issuance.py
	$(BIN)/python bench/renewal.py

# Every benchmark in its bounded mode -> bench/RESULTS.md and its plots (about 4 minutes).
BENCH_POSTGRES ?= postgresql://postgres@127.0.0.1:5432/test
# The benchmarks make scratch databases on that server (ca_bench_*) and drop them; wrk drives
# the OCSP benchmark (Debian's package).
bench-report: setup
	$(MAKE) --no-print-directory system-packages EXTRA_PACKAGES=wrk
	$(BIN)/python bench/run_all.py --postgres $(BENCH_POSTGRES)

clean-var:
	rm -rf var
