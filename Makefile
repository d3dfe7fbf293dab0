# The two commands a fresh machine needs: `make demo` and `make test`. Both set up .venv first
# (safe to run again: it reinstalls only when settings.ini or setup.py changed).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test sync nbtest pytest calibrate bench readme notebooks docs clean

$(VENV)/.installed: settings.ini setup.py Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps pipecat-ai==1.14.0  # only for the Smart Turn model file inside it (02d_smart_turn)
	touch $@

# The main job: an offline phone call to the hotline, with its transcript, latency table, WAV and plot in out/demo.
demo: $(VENV)/.installed
	$(BIN)/artist-hotline demo --out out/demo

# Everything CI checks: notebooks clean and in sync with the package, then the notebook tests and pytest side by side
# (most of pytest waits on calls played in real time, while the notebooks keep the CPU busy); each one's output is
# printed whole when it is done.
test: $(VENV)/.installed sync
	$(MAKE) --no-print-directory -j2 --output-sync=target nbtest pytest

sync: $(VENV)/.installed
	$(BIN)/python .ci/check_sync.py

nbtest: $(VENV)/.installed
	$(BIN)/nbdev_test --n_workers 2 --timing

pytest: $(VENV)/.installed
	$(BIN)/pytest -q -n 4 --dist worksteal  # four at a time: most tests wait on a call in real time, not on the CPU

# README.md from nbs/index.ipynb (the docs site's home page), without Quarto; `make sync` checks they agree.
readme:
	$(PY) .ci/readme.py

# Every notebook re-run top to bottom in a Jupyter kernel ("Run All"), kept with its outputs (about 5 min, one at a time).
notebooks: $(VENV)/.installed
	$(BIN)/python .ci/notebooks.py

# The docs site in _docs/ without Quarto: nbdev's processing of the notebooks, then nbconvert's HTML, a contents column
# and Pagefind's search (open _docs/index.html; the search box needs it served: python3 -m http.server -d _docs).
docs: $(VENV)/.installed
	$(BIN)/python .ci/docs.py

calibrate: $(VENV)/.installed
	$(BIN)/artist-hotline calibrate ../shared/corpus --out out/calibration

# The benchmarks (bench/results/*.json); latency, turns and interruptions exit 1 when a goal is missed, and the next one runs anyway.
bench: $(VENV)/.installed
	$(BIN)/python bench/codec.py
	-$(BIN)/python bench/latency.py --modes offline cloud oracle
	-$(BIN)/python bench/turns.py --modes offline cloud oracle
	-$(BIN)/python bench/interruptions.py --modes offline before --before 104f528
	$(BIN)/python bench/capacity.py

clean:
	rm -rf $(VENV) out _docs _proc *.egg-info
