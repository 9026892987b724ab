# The two quick-start targets (README): `make demo` and `make test`. Each does all set-up itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXAMPLE := examples/fashion_mnist
# optional extras the test venv gets, so CI exercises int4 (quantizer), TFLite Micro (mcu), Vela (ethos-u) and Optuna (distributed)
EXTRAS ?= dev,quantizer,mcu,ethos-u,distributed

.PHONY: demo test check setup system-deps mediapipe-venv bench lint clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

setup: $(BIN)/.installed

## Quantize the bundled Fashion-MNIST model to int8 and validate it against the float model.
demo: setup
	mkdir -p out
	$(BIN)/edgekit quantize $(EXAMPLE)/model.keras --mode int8 --data $(EXAMPLE)/calib.npz --scale 1/255 \
		-o out/model_int8.tflite --force
	$(BIN)/edgekit validate out/model_int8.tflite --data $(EXAMPLE)/val.npz --reference $(EXAMPLE)/model.keras

## System packages the tests use (sshd for the SSH device tests, adb, qemu-user for ARM64).
system-deps:
	bash scripts/system-deps.sh

## MediaPipe's own venv (.venv-mediapipe, numpy<2) for the MediaPipe Tasks test client; never fails (the test skips).
mediapipe-venv:
	PYTHON=$(PYTHON) bash scripts/mediapipe-venv.sh

## The architecture's layer contract (import-linter), lint (ruff) and types (mypy, the whole package).
check: setup
	$(BIN)/lint-imports
	$(BIN)/ruff check edgekit tests bench
	$(BIN)/mypy

## The whole test suite after the checks (CI runs this through .ci/run).
test: setup system-deps mediapipe-venv check
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: setup
	$(BIN)/python bench/bench_quantize.py

lint: check

clean:
	rm -rf out build dist *.egg-info
