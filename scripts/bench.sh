#!/usr/bin/env bash
# The benchmark in one command: set up (bench extras, age) and run bench/run.py; arguments go
# to run.py (e.g. --runs 3, --smoke, --no-glance, --update-readme). See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --bench
exec .venv/bin/python bench/run.py "$@"
