# One entry point for people and CI. `make test` and `make demo` work on a fresh machine:
# they create .venv, install torch (CPU build pinned below unless TORCH= is given), build the
# extensions with `pip install -e .` (CUDA kernels too where nvcc exists) and run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch==2.13.0 is a CPU build that installs from local disk on the project's machines;
# on a GPU machine use e.g. `make test TORCH="torch --index-url https://download.pytorch.org/whl/cu128"`.
TORCH ?= torch==2.13.0
EXTRAS ?= test,triton,onnx,ort,media,vae
PYTEST_ARGS ?=
BUILD_DIR ?= build/dev

.PHONY: setup test test-fast bench bench-smoke demo ext clean info default-model gpu-check

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Rebuilt (pip install -e ., which compiles the extensions) whenever the build or csrc/ changes.
$(VENV)/.installed: $(BIN)/python pyproject.toml setup.py CMakeLists.txt $(shell find csrc -type f 2>/dev/null)
	$(BIN)/pip install --disable-pip-version-check -q "$(TORCH)"
	$(BIN)/pip install --disable-pip-version-check -q -e ".[$(EXTRAS)]"
	touch $@

setup: $(VENV)/.installed

# Developers: incremental rebuild of the extensions into avfast/ after editing csrc/.
ext: $(BIN)/python
	cmake -S . -B $(BUILD_DIR) $$(command -v ninja >/dev/null && echo -G Ninja) -DPython_EXECUTABLE=$(abspath $(BIN)/python) \
	  -Dpybind11_DIR=$$($(BIN)/python -c "import pybind11; print(pybind11.get_cmake_dir())") \
	  -DAVFAST_OUTPUT_DIR=$(abspath avfast) -DAVFAST_CUDA=$${AVFAST_CUDA:-auto} >/dev/null
	cmake --build $(BUILD_DIR)

test: setup
	$(BIN)/python -m avfast.info
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)

info: setup
	$(BIN)/python -m avfast.info

# Every benchmark, one summary table at the end (bench/conftest.py); BENCH_SUMMARY=bench/results/cpu also
# writes the table, the results JSON and the charts there (then `python -m bench.report` for README.md and docs/).
BENCH_SUMMARY ?=
bench: setup
	$(if $(BENCH_SUMMARY),AVFAST_BENCH_SUMMARY=$(BENCH_SUMMARY)) $(BIN)/python -m pytest bench --benchmark-only $(PYTEST_ARGS)

# The quick subset, each case once and untimed: do the suites still run?
bench-smoke: setup
	$(BIN)/python -m pytest bench -m smoke --benchmark-disable -q $(PYTEST_ARGS)

# Everything that needs an NVIDIA GPU in <= 10 min (CUDA/Triton tests, GPU benchmark rows, export --trt, one
# clip per runtime): bench/results/gpu-<name>.json and .md, then `python -m bench.report` for docs/benchmarks.md.
# Installs nothing and builds nothing but the extensions (setup); exit 77 with one line where there is no GPU
# (bench/gpu_check.py). Where torch is preinstalled (no venv): `make ext VENV=<its prefix>` or
# `pip install -e . --no-build-isolation --no-deps`, then `python -m bench.gpu_check` from the repo root.
GPU_CHECK_ARGS ?=
gpu-check: setup
	$(BIN)/python -m bench.gpu_check $(GPU_CHECK_ARGS)

# The main job on the embedded default model: v2a, a2v and joint clips (mp4 with sound), AV-Align, a figure.
DEMO_OUT ?= demo_out
demo: setup
	$(BIN)/python -m avfast.demo --out $(DEMO_OUT)

# The shipped default, from nothing, on a 2-core CPU in about 2 h 20 min (each step resumes if interrupted):
# the frame codec, the teacher on its latents (7,000 steps, then 5,000 more from its EMA at the schedule's
# learning rate), progressive distillation 64 -> 1 steps, then the 4-step student and the teacher into
# avfast/models/default/ (docs/training.md says how the shipped one was run).
RUNS ?= runs
TEACHER_OPTS = --preset tiny-latent --autoencoder $(RUNS)/codec/final --batch-size 8 --warmup 100 --lr-decay 0.8 \
  --lr-decay-every 1000 --lr-min 5e-5 --eta 0 --clean-prob 0.3 --save-every 250 --log-every 10 --num-clips 4096 --threads 1
default-model: setup
	$(BIN)/python -m avfast.train.autoencoder --out $(RUNS)/codec --steps 1200 --threads 1
	$(BIN)/python -m avfast.train --out $(RUNS)/default-latent $(TEACHER_OPTS) --steps 7000 --lr 5e-4 --seed 0
	$(BIN)/python -m avfast.train --out $(RUNS)/teacher $(TEACHER_OPTS) --init $(RUNS)/default-latent/final \
	  --steps 5000 --lr 1.05e-4 --warmup 50 --seed 1
	cp -r $(RUNS)/codec/final/. $(RUNS)/teacher/final/autoencoder
	$(BIN)/python -m avfast.distill --teacher $(RUNS)/teacher/final --autoencoder $(RUNS)/codec/final \
	  --out $(RUNS)/distill-default --steps 1 --start-steps 64 --stage-steps 300 300 500 500 300 300 --batch-size 8 \
	  --lr 1e-4 --num-clips 1024 --save-every 100 --log-every 10 --seed 0 --threads 1
	$(BIN)/python -m avfast.models.ship --student $(RUNS)/distill-default/stages/4-steps --teacher $(RUNS)/teacher/final --joint-refine v2a --sampling-gamma 0.05 --long-window 36

clean:
	rm -rf build $(VENV) avfast/_C_*.so *.egg-info .pytest_cache .benchmarks
