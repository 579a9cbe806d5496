#!/usr/bin/env bash
# The benchmark in one command: set up (bench extras, age) and run bench/run.py; arguments go
# to run.py (e.g. --runs 3, --smoke, --no-glance, --update-readme). See bench/README.md.
# `scripts/bench.sh --only luks [ARGS]` runs only the LUKS1 section (bench/luks.py ARGS);
# `scripts/bench.sh --only import-sweep [ARGS]` only the import sweep (bench/run.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --bench
if [[ "${1:-}" == "--only" ]]; then
    case "${2:-}" in
        luks) shift 2; exec .venv/bin/python bench/luks.py "$@" ;;
        import-sweep) exec .venv/bin/python bench/run.py "$@" ;;
        *) echo "bench.sh: --only takes one section: luks or import-sweep" >&2; exit 2 ;;
    esac
fi
exec .venv/bin/python bench/run.py "$@"
