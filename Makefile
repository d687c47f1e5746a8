# Two commands on a fresh machine: `make demo` and `make test`. Both install into .venv first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
ARDET  := $(VENV)/bin/ardet
# One thread per process: stable and reproducible on small CPUs (2-thread runs can stall there).
export OMP_NUM_THREADS ?= 1

.PHONY: install test demo models sr-models clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

test: install
	-$(ARDET) weights pull liif-edsr-baseline  # offline: the tests that need it skip, saying so
	$(PY) -m pytest -q

demo: install
	$(ARDET) weights pull liif-edsr-baseline
	$(ARDET) demo

# Retrains the demo's shipped models (models/, sr/weights/) from scratch; `make demo` never trains.
# About 50 minutes on the 2-core CPU machine (docs/models.md times each step and has each model's card).
models: install
	$(ARDET) make-data --out data/demo --seed 0
	$(ARDET) train-detector --config configs/detector/demo-tiny.yaml
	rm -rf models/detector-demo && mkdir -p models && cp -r runs/detector-demo/best models/detector-demo
	$(ARDET) train-scale --config configs/scale_predictor/demo.yaml
	mkdir -p models/scale-predictor-demo
	cp runs/scale-predictor-demo/predictor.safetensors runs/scale-predictor-demo/predictor.json models/scale-predictor-demo/

# Retrains the distilled SR family (sr/weights/liif-{nano,micro,mini}.safetensors; docs/sr-models.md): renders the
# official LIIF's teacher outputs once (cached in runs/sr/teacher-cache), then trains the three in turn: minutes each
# on a GPU (the configs' train.device: auto), about 13 hours on one CPU thread.
sr-models: install
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[train]'
	$(ARDET) weights pull liif-edsr-baseline
	for m in nano micro mini; do \
	  $(ARDET) train-sr --config configs/sr/liif-$$m.yaml && \
	  cp runs/sr/liif-$$m/model.safetensors sr/weights/liif-$$m.safetensors || exit 1; \
	done

clean:
	rm -rf $(VENV) runs .pytest_cache
