# Every target sets up what it needs: a fresh clone only needs `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: venv demo test test-fast test-compat lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# The demo needs the runtime and uvicorn only; the tests need the dev tools too.
$(VENV)/.demo-installed: pyproject.toml $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[demo]'
	touch $@

$(VENV)/.installed: pyproject.toml $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.demo-installed
	@echo ""
	@echo "backbeat demo: the reference page's two examples on http://$(HOST):$(PORT)"
	@echo "In another terminal, try:"
	@echo "  curl -i -X POST http://$(HOST):$(PORT)/register -H 'content-type: application/json' -d '{\"email\": \"ann@example.com\", \"password\": \"s3cret\"}'"
	@echo "  curl -i -X POST http://$(HOST):$(PORT)/register/with-log -H 'content-type: application/json' -d '{\"email\": \"bob@example.com\", \"password\": \"s3cret\"}'"
	@echo "  curl -i -X POST http://$(HOST):$(PORT)/register -H 'content-type: application/json' -d '{\"email\": 1}'   # 422"
	@echo "The response comes back at once; the task lines appear here a second later."
	@echo "Tasks are kept in ./.backbeat/tasks.db: stop the server (Ctrl-C, even kill -9) while one"
	@echo "waits and it runs when you start again. See the store: $(BIN)/backbeat status --store sqlite:///.backbeat/tasks.db"
	@echo ""
	$(BIN)/python -m uvicorn examples.register:app --host $(HOST) --port $(PORT)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

# The browser tests (tests/dashboard/test_browser.py) drive Debian's Chromium: installed here
# when missing (as root); BACKBEAT_SKIP_BROWSER=1 skips them instead.
test: lint
	bash .ci/chromium
	bash tests/run_all.sh

# The tests that start no server and no process (pytest markers, pyproject.toml): a
# minute or so, for the edit-test loop. `make test` runs everything.
test-fast: venv
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m "not process and not redis and not postgres and not netns"

# The Redis store's tests again on Redis 6.2 and on Valkey (part of `make test`).
test-compat: venv
	bash tests/compat/run.sh

bench: venv
	bash bench/http/run.sh
	$(BIN)/python bench/runner/run.py
	bash bench/sqlite/run.sh
	$(BIN)/python bench/sqlite/timing.py

clean:
	rm -rf $(VENV) .venv-servers .venv-esmerald bench/.venv-peers .mypy_cache .ruff_cache .pytest_cache
