# One command set for people and CI. `make help` lists the targets.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install demo test chaos lint format bench soak model clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv with the package, its extras and the `processor` command

demo: $(STAMP) ## run the whole pipeline on the embedded stack (ARGS="--images 300 --json")
	@$(BIN)/processor demo $(ARGS)

test: $(STAMP) ## run the test suite (embedded stack; PROCESSOR_TEST_*_URL/DSN for external services)
	$(BIN)/python -m pytest -m "not chaos" $(ARGS)

chaos: $(STAMP) ## run the long failure-injection tests
	$(BIN)/python -m pytest -m chaos $(ARGS)

lint: $(STAMP) ## ruff and mypy --strict
	$(BIN)/ruff check processor tests benchmarks
	$(BIN)/ruff format --check processor tests benchmarks
	$(BIN)/mypy

format: $(STAMP) ## apply ruff's formatting and fixes
	$(BIN)/ruff format processor tests benchmarks
	$(BIN)/ruff check --fix processor tests benchmarks

bench: $(STAMP) ## run the benchmarks (ARGS="--quick --json bench.json")
	$(BIN)/python -m benchmarks $(ARGS)

soak: $(STAMP) ## stream at a steady rate against a slow CDN and watch worker memory (ARGS="--minutes 30")
	$(BIN)/python -m benchmarks.soak $(ARGS)

# Retraining the shipped model: wallpaper photographs from Debian packages are the training backgrounds
# (apt-get download needs no root); KDE Plasma's wallpapers stay out of training and make a held-out test set.
MODEL_WORK ?= /tmp/listing-model
MODEL_VERSION ?= $(shell date -u +%Y.%m.%d.%H%M)
TRAIN_PACKAGES := mate-backgrounds ukui-wallpapers lomiri-wallpapers-20.04
TEST_PHOTOS := BytheWater ColorfulCups DarkestHour EveningGlow FallenLeaf Grey OneStandsOut Path SafeLanding summer_1am
model: $(STAMP) ## retrain the shipped model in MODEL_WORK (/tmp/listing-model) and evaluate it (Debian/Ubuntu; ~1 h on 2 cores)
	mkdir -p $(MODEL_WORK)/debs $(MODEL_WORK)/test-photos
	cd $(MODEL_WORK)/debs && apt-get download $(TRAIN_PACKAGES) plasma-workspace-wallpapers
	for deb in $(MODEL_WORK)/debs/*.deb; do dpkg-deb -x $$deb $(MODEL_WORK)/unpacked; done
	for name in $(TEST_PHOTOS); do cp "$$(ls -S $(MODEL_WORK)/unpacked/usr/share/wallpapers/$$name/contents/images/* | head -1)" \
		$(MODEL_WORK)/test-photos/$$name.jpg; done
	$(BIN)/processor synth --out $(MODEL_WORK)/synth --count 16000 --seed 4 --backgrounds $(MODEL_WORK)/unpacked/usr/share/backgrounds
	$(BIN)/processor train --data $(MODEL_WORK)/synth --out $(MODEL_WORK)/model --epochs 30 --seed 4 --input-size 160 \
		--version $(MODEL_VERSION)
	$(BIN)/processor synth --held-out-photos --out $(MODEL_WORK)/held-out --count 400 --seed 7
	$(BIN)/processor synth --held-out-photos --out $(MODEL_WORK)/held-out-plasma --count 400 --seed 8 \
		--photos-from $(MODEL_WORK)/test-photos
	$(BIN)/processor evaluate --model $(MODEL_WORK)/model --data $(MODEL_WORK)/held-out
	$(BIN)/processor evaluate --model $(MODEL_WORK)/model --data $(MODEL_WORK)/held-out-plasma
	@echo "copy $(MODEL_WORK)/model to processor/models/default to ship it"

clean: ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
