#!/usr/bin/env bash
# Everything CI runs: set up, lint (ruff), type-check (mypy --strict), then the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
.venv/bin/ruff check img_crypt tests bench scripts specs barbican_mock
.venv/bin/mypy
.venv/bin/python -m pytest -n auto -q "$@"
