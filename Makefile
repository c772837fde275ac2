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

# Retraining the shipped model. Wallpaper photographs from Debian packages are training backgrounds
# (apt-get download needs no root); five KDE Plasma photographs stay out of training and make a held-out
# test set. Three stages: 30 epochs on one generated set; 6 epochs on two more, the second of which adds
# Plasma's other wallpapers (landscapes with horizons, which the first stage mistook for banners); 4 epochs
# on a fourth (the shipped model's first three sets were drawn before the corner-ribbon fix).
MODEL_WORK ?= /tmp/listing-model
MODEL_VERSION ?= $(shell date -u +%Y.%m.%d.%H%M)
WALLPAPER_PACKAGES := mate-backgrounds ukui-wallpapers lomiri-wallpapers-20.04 plasma-workspace-wallpapers
TEST_PHOTOS := BytheWater ColorfulCups DarkestHour EveningGlow OneStandsOut
SYNTH = $(BIN)/processor synth --count 16000 --backgrounds $(MODEL_WORK)/unpacked/usr/share/backgrounds
model: $(STAMP) ## retrain the shipped model in MODEL_WORK (/tmp/listing-model) and evaluate it (Debian/Ubuntu; ~2 h on 2 cores)
	mkdir -p $(MODEL_WORK)/debs $(MODEL_WORK)/plasma $(MODEL_WORK)/test-photos
	cd $(MODEL_WORK)/debs && apt-get download $(WALLPAPER_PACKAGES)
	for deb in $(MODEL_WORK)/debs/*.deb; do dpkg-deb -x $$deb $(MODEL_WORK)/unpacked; done
	for dir in $(MODEL_WORK)/unpacked/usr/share/wallpapers/*/; do name=$$(basename $$dir); \
		largest=$$(ls -S $$dir/contents/images/* | head -1); \
		case " $(TEST_PHOTOS) " in *" $$name "*) to=test-photos;; *) to=plasma;; esac; \
		cp "$$largest" "$(MODEL_WORK)/$$to/$$name.$${largest##*.}"; done
	$(SYNTH) --out $(MODEL_WORK)/synth4 --seed 4
	$(BIN)/processor train --data $(MODEL_WORK)/synth4 --out $(MODEL_WORK)/stage1 --epochs 30 --seed 4 --input-size 160
	$(SYNTH) --out $(MODEL_WORK)/synth5 --seed 5
	$(SYNTH) --out $(MODEL_WORK)/synth6 --seed 6 --backgrounds $(MODEL_WORK)/plasma
	$(BIN)/processor train --init $(MODEL_WORK)/stage1 --data $(MODEL_WORK)/synth5 --data $(MODEL_WORK)/synth6 \
		--out $(MODEL_WORK)/stage2 --epochs 6 --seed 5
	$(SYNTH) --out $(MODEL_WORK)/synth7 --seed 7 --backgrounds $(MODEL_WORK)/plasma
	$(BIN)/processor train --init $(MODEL_WORK)/stage2 --data $(MODEL_WORK)/synth7 --out $(MODEL_WORK)/model \
		--epochs 4 --seed 7 --version $(MODEL_VERSION)
	$(BIN)/processor synth --held-out-photos --out $(MODEL_WORK)/held-out --count 400 --seed 7
	$(BIN)/processor synth --held-out-photos --out $(MODEL_WORK)/held-out-plasma --count 400 --seed 8 \
		--photos-from $(MODEL_WORK)/test-photos
	$(BIN)/processor evaluate --model $(MODEL_WORK)/model --data $(MODEL_WORK)/held-out
	$(BIN)/processor evaluate --model $(MODEL_WORK)/model --data $(MODEL_WORK)/held-out-plasma
	@echo "copy $(MODEL_WORK)/model to processor/models/default to ship it"

clean: ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
