# The README's quick start: `make demo` and `make test` on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export TF_CPP_MIN_LOG_LEVEL ?= 2
export TF_ENABLE_ONEDNN_OPTS ?= 0

.PHONY: setup demo test test-fast lint clean

$(BIN)/latentfarm: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[cpu,dev]'
	touch $@

setup: $(BIN)/latentfarm

demo: setup
	$(BIN)/latentfarm demo

# The whole suite, slow acceptance tests included. Exit code 5 (no tests collected) is a failure.
test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests"; exit 1; fi; exit $$rc

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check core scheduler workers storage tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) latentfarm.db* latentfarm-artifacts latentfarm-demo *.egg-info
