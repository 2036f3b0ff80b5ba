# Everything installs into .venv at the repo root; re-running a target only reinstalls when
# pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean browser

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("PYCPilot needs Python 3.11+, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# The main job on the built-in default corpus (this interpreter's standard library):
# data -> tokenizer -> pack -> train (the tiny preset, 4 minutes) -> a few completions of familiar prompts
# (CodeParrot's; like theirs they end without a newline: a lone newline token is rare in training, where the
# newline merges with the next line's indentation) -> a small HumanEval run (20 problems x 5 samples, sandboxed).
DEMO := runs/demo
demo: install
	$(BIN)/pycpilot data --source stdlib --out $(DEMO)/data --overwrite
	$(BIN)/pycpilot tokenizer --data $(DEMO)/data --out $(DEMO)/tokenizer --preset tiny --overwrite
	$(BIN)/pycpilot pack --data $(DEMO)/data --tokenizer $(DEMO)/tokenizer --out $(DEMO)/packed --preset tiny --overwrite
	$(BIN)/pycpilot train --packed $(DEMO)/packed --out $(DEMO)/model --preset tiny --max-time 4m --overwrite
	printf 'def area_of_rectangle(a: float, b: float):\n    """Return the area of the rectangle."""' \
		| $(BIN)/pycpilot complete --model $(DEMO)/model
	printf 'def get_urls_from_html(html):\n    """Get all embedded URLs in a HTML string."""' \
		| $(BIN)/pycpilot complete --model $(DEMO)/model
	printf 'import os\n\n\ndef list_python_files(folder):' | $(BIN)/pycpilot complete --model $(DEMO)/model
	$(BIN)/pycpilot eval humaneval --model $(DEMO)/model --out $(DEMO)/eval/humaneval --limit 20 -n 5 \
		--temperature 0.2 --overwrite

lint: install
	$(BIN)/ruff check src tests bench

# The playground test drives Debian's Chromium (Playwright's own browser download needs the internet).
CHROMIUM := /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >/dev/null \
			|| { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >/dev/null; }; \
		else echo "make: Chromium is missing: install Debian's chromium package (sudo apt-get install chromium)"; exit 1; fi; }

test: lint browser
	PYCPILOT_REQUIRE_BROWSER=1 $(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/bench_data.py
	$(BIN)/python bench/bench_tokenizer_pack.py
	$(BIN)/python bench/bench_train.py
	$(BIN)/python bench/bench_generate.py
	$(BIN)/python bench/bench_sandbox.py
	$(BIN)/python bench/bench_serve.py

clean:
	rm -rf runs .pytest_cache .ruff_cache
