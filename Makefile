# The two set-up commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO := demo

.PHONY: demo test test-slurm check bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,keras,plot,dask]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/cutout-etl demo-data $(DEMO) --rows 1000 --overwrite
	$(BIN)/cutout-etl inspect $(DEMO)/image_table_*.hdf5
	$(BIN)/cutout-etl build $(DEMO)/image_table_*.hdf5 -o $(DEMO)/dataset.h5 --overwrite
	$(BIN)/cutout-etl verify $(DEMO)/dataset.h5
	$(BIN)/python -c "import cutout_etl; ds = cutout_etl.open_dataset('$(DEMO)/dataset.h5'); print(ds)"

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q

# The examples in examples/slurm on a real one-node SLURM: root on Debian (apt-get installs slurmd, slurmctld,
# slurm-client and munge). See the README, "Running on SLURM, tested".
test-slurm: $(VENV)/.installed-test
	VENV=$(abspath $(VENV)) bash tests/slurm/run.sh

# The gates: lint, formatting and types (CI runs them after the tests).
check: $(VENV)/.installed-test
	$(BIN)/ruff check cutout_etl tests benchmarks examples
	$(BIN)/ruff format --check cutout_etl tests benchmarks examples
	$(BIN)/mypy

bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/bench_build.py --rows 30000

clean:
	rm -rf $(VENV) $(DEMO) build *.egg-info
