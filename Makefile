# Two entry points for a newcomer: `make demo` and `make test`. Both set up .venv if needed.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test samples browser bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[torch,test,profile,checkpoints]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/audit samples/albert_like.onnx --dim seq=32 --profile cpu --html report.html --json report.json --force
	@echo "wrote $(CURDIR)/report.html and $(CURDIR)/report.json"

# Debian's chromium for the HTML report tests (playwright never downloads a browser here).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

test: $(STAMP) browser
	$(PY) -m pytest -q

samples: $(STAMP)
	$(PY) samples/make_samples.py

bench: $(STAMP)
	$(PY) benchmarks/large_model.py --size-gb 3.6

clean:
	rm -rf $(VENV) build dist report.html report.json
