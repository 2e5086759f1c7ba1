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

.PHONY: setup test test-fast bench bench-smoke demo ext clean info gpu-check

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

clean:
	rm -rf build $(VENV) avfast/_C_*.so *.egg-info .pytest_cache .benchmarks
