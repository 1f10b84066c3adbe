# Two commands on a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install clib demo test docs bench online-vs-offline lint clean

install: $(STAMP) clib

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,dev,mpi,dl,docs]"
	touch $(STAMP)

# libmelissa (C and Fortran clients) into the venv: include/melissa, lib/melissa, lib/pkgconfig,
# lib/cmake/melissa (docs/c-fortran.md). Skipped with a note without a compiler and libzmq.
clib: $(STAMP)
	$(MAKE) --no-print-directory -C src/melissa/client/c install PREFIX=$(abspath $(VENV)) BUILD=$(abspath $(VENV))/build/libmelissa

demo: install
	$(VENV)/bin/melissa-launcher -c examples/heat_equation/config_sa.json --overwrite

test: install
	$(PY) -m pytest -q

# The documentation as a site in site/ (tests/unit/test_docs.py checks its links in `make test`).
docs: install
	$(VENV)/bin/mkdocs build --strict

bench: install
	$(PY) bench/stats_kernels.py
	$(PY) bench/ingest.py
	$(PY) bench/dl_throughput.py

# The heat-equation surrogate trained online (Melissa) and offline (files), in one table.
online-vs-offline: install
	$(PY) examples/heat_equation/online_vs_offline.py

lint: install
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/mypy src/melissa src/melissa_api src/melissa_api_no_mpi

clean:
	rm -rf $(VENV) examples/heat_equation/output_sa examples/heat_equation/output_dl \
		examples/lorenz/output_dl .pytest_cache site
