# The README's quick start: `make demo` and `make test` on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup demo test test-fast lint clean browser

$(BIN)/latentfarm: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[cpu,dev]'
	touch $@

setup: $(BIN)/latentfarm

demo: setup
	$(BIN)/latentfarm demo

# The whole suite, slow acceptance tests included, in TEST_WORKERS processes side by side (pytest-xdist; most tests
# wait on processes, leases and services, so three keep two cores busy; see tests/conftest.py for the grouping).
# --no-loadscope-reorder keeps the order tests/conftest.py gives (the slow tests first); pytest-xdist would otherwise
# send the largest groups first and the long single tests last. Exit code 5 (no tests collected) is a failure.
TEST_WORKERS ?= 3
SIDE_BY_SIDE := -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder
test: setup
	$(BIN)/python -m pytest -q $(SIDE_BY_SIDE) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests"; exit 1; fi; exit $$rc

test-fast: setup
	$(BIN)/python -m pytest -q $(SIDE_BY_SIDE) -m "not slow" $(PYTEST_ARGS)

# Debian's Chromium and ChromeDriver, for the dashboard's browser test (tests/e2e/test_dashboard_browser.py); that
# test skips without them, except in CI. Installs them only where they are missing and apt-get may run.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then \
		echo "chromium and chromedriver: present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get install -y -q chromium chromium-driver >/dev/null || \
		{ apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null; }; \
	else \
		echo "chromium and chromedriver are missing: install Debian's chromium and chromium-driver as root"; exit 1; \
	fi

lint: setup
	$(BIN)/ruff check core scheduler workers storage tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) latentfarm.db* latentfarm-artifacts latentfarm-demo *.egg-info
