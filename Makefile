# Entry points, each of which creates .venv on first use:
#   make main       -- the main job
#   make test       -- the whole test suite
#   make test-fast  -- the suite less the tests marked slow (whole networks,
#                      training runs, spawned trainings, anything over ~10 s)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ONEDNN_LIB := build/onednn_conv.so

.PHONY: main test test-fast setup clean-venv

setup: $(STAMP) $(ONEDNN_LIB)

# The project itself installs in editable mode (pyproject.toml): its modules
# import from anywhere, and the tools run as `python -m scripts.sweep`.
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

# oneDNN convolutions, max pools and 1x1 GEMMs for XLA:CPU (ops/onednn/).
# Optional: without a compiler or oneDNN, ops 'auto' falls back to the im2col
# convs, shifted-slice pools and XLA's GEMMs.
$(ONEDNN_LIB): ops/onednn/onednn_conv.cc $(STAMP)
	$(PY) -m ops.onednn.build --optional

# The main job: naive against reduced modules, 3 seeds each, on a 3.5-epoch
# budget of the fast recipe (configs/cifar_fast.py), the naive net narrowed
# to the reduced net's MACs per image (naive=matched; at the reduced net's
# widths it costs 3.5x, and its 3 seeds do not fit this job's budget), one
# evaluation at the end; then the report.
# Data comes from TFDS; point it at a local copy (an image folder, .tar.gz
# or .zip of <split>/<class>/*.jpg) with
#   make main ARGS=--config.data.source=PATH/TO/cifar10
RUNS ?= runs/main
# Transparent huge pages for malloc: XLA:CPU allocates each step's buffers
# afresh, and with 4 KiB pages it faults them in again every step (measured in
# docs/performance.md, "Allocator, huge pages and vector width"). A no-op
# where the kernel has no THP.
export GLIBC_TUNABLES ?= glibc.malloc.hugetlb=1
ARGS ?=
# The budget, and the evaluation cadence: one evaluation, at the end.
MAIN_EPOCHS := 3.5
main: setup
	$(PY) -m scripts.sweep --sweep=configs/sweeps/naive_vs_reduced.py:size=fast,naive=matched,epochs=$(MAIN_EPOCHS) \
	    --seeds=3 --config.eval_every_epochs=$(MAIN_EPOCHS) --workdir=$(RUNS) $(ARGS)
	$(PY) -m scripts.report $(RUNS)

# One pytest worker per core (pytest-xdist), each taking whole test files so
# that a file's module-scoped fixtures (a trained run) are built once.
PYTEST := $(PY) -m pytest -q -n auto --dist loadfile

# Then the oneDNN tests again with oneDNN capped to AVX2 (the kernels an
# AVX2-only CPU gets), so that an AVX2-only bug cannot hide on an AVX-512 host.
test: setup
	$(PYTEST)
	ONEDNN_MAX_CPU_ISA=AVX2 $(PYTEST) -k onednn

test-fast: setup
	$(PYTEST) -m "not slow"

clean-venv:
	rm -rf $(VENV)
