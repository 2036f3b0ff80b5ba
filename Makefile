# Everything installs into .venv at the repo root; re-running a target only reinstalls when
# pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench bench-recipe bench-gpu clean browser llamacpp

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("PYCPilot needs Python 3.11+, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,distributed]'
	touch $(STAMP)

# The main job on the built-in default corpus (this interpreter's standard library): `pycpilot run`, i.e.
# data -> tokenizer -> pack -> train (the tiny preset, 4 minutes) -> eval (a small HumanEval in the sandbox,
# line completion, CodeParrot's familiar prompts) -> runs/demo/report.html. Run it again: finished stages are
# skipped; an interrupted training resumes.
DEMO := runs/demo
demo: install
	$(BIN)/pycpilot run --out $(DEMO)

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

# llama.cpp, prebuilt (npm's node-llama-cpp, pinned by tools/llamacpp/package-lock.json): the tests and benchmark
# of `pycpilot export` run the GGUF files in it (skipped, saying so, where node is absent).
LLAMACPP := tools/llamacpp
llamacpp: $(LLAMACPP)/node_modules/.package-lock.json

$(LLAMACPP)/node_modules/.package-lock.json: $(LLAMACPP)/package-lock.json
	@if command -v npm >/dev/null; then \
		npm ci --prefix $(LLAMACPP) --ignore-scripts --no-audit --no-fund --loglevel=error; \
	else echo "make: npm is missing, so llama.cpp (tools/llamacpp) is not installed: its tests need node and npm"; fi

test: lint browser llamacpp
	PYCPILOT_REQUIRE_BROWSER=1 $(BIN)/python -m pytest

bench: install llamacpp
	$(BIN)/python bench/bench_data.py
	$(BIN)/python bench/bench_tokenizer_pack.py
	$(BIN)/python bench/bench_train.py
	$(BIN)/python bench/bench_generate.py
	$(BIN)/python bench/bench_sandbox.py
	$(BIN)/python bench/bench_serve.py
	$(BIN)/python bench/bench_export.py

# Learning per CPU-minute (~55 minutes): today's recipe against the new default at 6 minutes, bf16 and fp32,
# twice each, and tokens/s on the same model.
bench-recipe: install
	$(BIN)/python bench/bench_recipe.py --rows speed,bf16,fp32 --repeat 2

# The GPU paths (a machine with a CUDA torch): small's bf16 training MFU, serving on the GPU.
bench-gpu: install
	$(BIN)/python bench/bench_gpu.py

clean:
	rm -rf runs .pytest_cache .ruff_cache $(LLAMACPP)/node_modules
