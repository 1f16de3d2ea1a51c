# make demo / make test do all set-up on a fresh machine: they create .venv and install first.
PYTHON ?= python3
VENV ?= .venv
EXTRAS ?= dev,sweep,mlflow,export
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell echo "$(EXTRAS)" | tr ',' '-')
export NO_ALBUMENTATIONS_UPDATE := 1
export WANDB_MODE ?= offline
export MPLBACKEND ?= Agg

.PHONY: install demo test test-full lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

demo: install
	$(BIN)/python -m melanoma_lit.train experiment=demo

test: install
	$(BIN)/python -m pytest -q

test-full: install
	$(BIN)/python -m pytest -q -m "slow or not slow"

lint: install
	$(BIN)/ruff check melanoma_lit tests hydra_plugins
	$(BIN)/ruff format --check melanoma_lit tests hydra_plugins
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix melanoma_lit tests hydra_plugins
	$(BIN)/ruff format melanoma_lit tests hydra_plugins

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build dist *.egg-info outputs multirun lightning_logs
