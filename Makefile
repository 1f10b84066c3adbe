# Two commands on a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,dev]"
	touch $(STAMP)

demo: install
	$(VENV)/bin/melissa-launcher -c examples/heat_equation/config_sa.json --overwrite

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) bench/stats_kernels.py
	$(PY) bench/ingest.py

lint: install
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/mypy src/melissa

clean:
	rm -rf $(VENV) examples/heat_equation/output_sa .pytest_cache
