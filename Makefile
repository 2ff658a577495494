# Two commands on a fresh clone:
#   make reproduce   virtual environment + the whole study on the embedded default (CPU, offline)
#   make test        the test suite (installs what the tests need, Chromium, g++ and a local SLURM included)
# A torch already importable in $(VENV) (a ROCm or CUDA build you installed) is kept; otherwise
# $(TORCH_SPEC) is installed. Example: make reproduce TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/rocm6.4"

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
CORES ?= all
BIN := $(VENV)/bin
SNAKEMAKE := $(BIN)/snakemake

.PHONY: reproduce test install install-test report lint bench clean

reproduce: install
	$(SNAKEMAKE) --cores $(CORES)
	@echo "Report: results/report/report.html"

test: lint
	@# Without root Chromium and g++ cannot be installed and the tests that need them skip; in CI they must install.
	bash tests/setup_system.sh || test -z "$$CI"
	@# As root, a single-node SLURM (installed if missing) runs for tests/test_slurm.py and is stopped after
	@# pytest, also when it fails or is interrupted; without root those tests skip, in CI they must run.
	@# Two workers, each taking whole test files: most of the suite runs one process at a time (imports,
	@# dry runs, small jobs), so two keep both cores busy (three were slower: 26 min against 22.6).
	bash tests/cluster/slurm.sh run $(BIN)/python -m pytest -n 2 --dist loadfile

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

$(VENV)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(BIN)/python -m pip install --quiet -r requirements-test.txt
	touch $@

report: install
	$(SNAKEMAKE) --cores $(CORES) --forcerun report
	$(SNAKEMAKE) --report results/report/snakemake-report.zip

# ruff and snakefmt (versions pinned in requirements-test.txt, settings in pyproject.toml), then Snakemake's own lint.
lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile rules
	$(SNAKEMAKE) --lint

bench: install-test
	$(BIN)/python bench/run_all.py

clean:
	rm -rf results .snakemake
