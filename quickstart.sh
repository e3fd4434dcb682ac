#!/usr/bin/env bash
# Set up gg-py in ./.venv and run the main job: the bundled example project built
# through gg on the local engine. Safe to run again; re-runs are cache hits.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
if [ "${1:-}" = "--setup-only" ]; then
    exit 0
fi
exec .venv/bin/python -m examples.run_main_job
