# ClosedPaw. `make run` and `make test` work on a fresh Debian 12 machine as root.
.PHONY: run demo test bench lint deps clean

deps:
	@./scripts/install-deps.sh

# The gate's HTTP API and the web UI on http://127.0.0.1:8765 with the embedded defaults (SQLite
# and the audit log in /var/lib/closedpaw); it prints the URL, where the admin token is and a
# one-time login link for the browser. Ctrl-C stops it.
run: deps
	.venv/bin/closedpaw serve

demo: deps
	.venv/bin/closedpaw demo

test: deps
	.venv/bin/ruff check src tests benchmarks
	.venv/bin/mypy
	.venv/bin/python -m pytest tests

bench: deps
	.venv/bin/python benchmarks/oneshot.py
	.venv/bin/python benchmarks/files.py
	.venv/bin/python benchmarks/gate.py
	.venv/bin/python benchmarks/images.py
	.venv/bin/python benchmarks/agent.py
	.venv/bin/python benchmarks/pool.py
	.venv/bin/python benchmarks/assistant.py
	.venv/bin/python benchmarks/mcp_roundtrip.py
	.venv/bin/python benchmarks/channels.py
	.venv/bin/python benchmarks/channels_more.py
	.venv/bin/python benchmarks/web.py

lint: deps
	.venv/bin/ruff check src tests benchmarks
	.venv/bin/mypy

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache src/*.egg-info
