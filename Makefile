# crmbook: `make` lists the targets. `make reports` renders the demo, `make test` runs the tests;
# both create the virtual environment first when it is missing or older than the lock.
PYTHON  ?= python3.11
VENV    ?= .venv
BIN     := $(VENV)/bin
PARAMS  ?= params/default.yaml
STAMP   := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup reports test lab bench bench-50m lock clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z]+:.*## / {printf "  make %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: $(STAMP) ## create .venv from requirements.lock, install crmbook, register the python3 kernel

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (crmbook)" >/dev/null
	$(BIN)/python -c "import matplotlib.pyplot" # build the font cache once, not inside every report
	touch $(STAMP)

reports: $(STAMP) ## run the workbook on PARAMS (default: the embedded demo) into reports/<run_id>/
	$(BIN)/crmbook run --params $(PARAMS)

test: $(STAMP) ## unit, reference, notebook and end-to-end tests
	$(BIN)/python -m pytest -q -p no:cacheprovider tests
	tmp=$$(mktemp -d) && CRMBOOK_PARAMS=$(CURDIR)/tests/params/tiny.yaml CRMBOOK_RUN_DIR=$$tmp \
	  $(BIN)/python -m pytest -q -p no:cacheprovider --nbval-lax notebooks && rm -rf $$tmp

lab: $(STAMP) ## open JupyterLab on notebooks/
	$(BIN)/jupyter lab notebooks

bench: $(STAMP) ## speed and memory benchmarks (results in benchmarks/results.md)
	$(BIN)/python -m benchmarks

bench-50m: $(STAMP) ## the whole workbook on ~50M order lines with a 4 GB cap (about an hour; its section of results.md)
	$(BIN)/python -m benchmarks --huge

lock: ## regenerate requirements.lock from pyproject.toml (needs uv)
	uv pip compile pyproject.toml --extra dev --extra spark --python-version 3.11 --python-platform x86_64-manylinux_2_28 -o requirements.lock -q --custom-compile-command "make lock"

clean: ## remove the virtual environment and generated demo data (reports are kept)
	rm -rf $(VENV) data/raw/demo
