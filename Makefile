# make demo / make test: each creates .venv when missing, installs defectmine into it, then runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install clean bench-venv

install: $(STAMP)

# Re-install when the dependencies change. pip's normal resolution picks torch/torchvision; on
# machines with a local wheel cache and a pip constraint file (as on our dev boxes) it takes those.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	MPLBACKEND=Agg $(VENV)/bin/defectmine demo

test: $(STAMP)
	MPLBACKEND=Agg $(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache

# Benchmark-only venv with anomalib's reference detectors (benchmarks/anomalib_peers.py); anomalib is
# never a dependency of defectmine itself. torch/torchvision are installed first, pinned to the pair
# that installs on our dev boxes, so that resolving anomalib's requirements cannot pull another torch.
BENCH_VENV ?= benchmarks/.venv
BENCH_PY := $(BENCH_VENV)/bin/python
BENCH_TORCH ?= torch==2.14.1 torchvision==0.29.1

bench-venv:
	@test -x $(BENCH_PY) || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_PY) -m pip install $(BENCH_TORCH)
	$(BENCH_PY) -m pip install -e . -r benchmarks/requirements-anomalib.txt
