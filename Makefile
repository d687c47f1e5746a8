# Two commands on a fresh machine: `make demo` and `make test`. Both install into .venv first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
ARDET  := $(VENV)/bin/ardet
# One thread per process: stable and reproducible on small CPUs (2-thread runs can stall there).
export OMP_NUM_THREADS ?= 1

.PHONY: install test demo clean

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
	$(ARDET) info

clean:
	rm -rf $(VENV) runs .pytest_cache
