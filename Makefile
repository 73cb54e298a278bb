# make demo / make test: each creates .venv when missing, installs defectmine into it, then runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

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
