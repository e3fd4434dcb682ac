#!/usr/bin/env bash
# Static security scan of terraform/ with checkov, in a virtual environment of its own
# (checkov pins an old boto3 that would break the project's aiobotocore/botocore pair).
#
# Idempotent and quick on re-runs: the venv lives in the user cache, keyed by the
# checkov version, and is only (re)built when its stamp file is missing.
# Fails when any check fails, and when a skip has no justification: every skip must be
# a comment `checkov:skip=CKV_...:<reason>` next to the resource it applies to.
set -euo pipefail
cd "$(dirname "$0")/.."

CHECKOV_VERSION=3.3.30
PYTHON=${PYTHON:-python3}
VENV=${GG_CHECKOV_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/gg-py/checkov-$CHECKOV_VERSION}

if [ ! -f "$VENV/.installed" ]; then
    echo "checkov.sh: installing checkov $CHECKOV_VERSION into $VENV" >&2
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION"
    touch "$VENV/.installed"
fi

# Every skip carries a reason (checkov itself accepts a bare `checkov:skip=ID`).
unjustified=$(grep -rnE 'checkov:skip=[A-Z0-9_]+ *($|[^:A-Z0-9_])' terraform --include='*.tf' || true)
if [ -n "$unjustified" ]; then
    echo "checkov.sh: skipped checks without a justification:" >&2
    echo "$unjustified" >&2
    exit 1
fi

echo "checkov.sh: skipped checks (justified in terraform/):"
grep -rhoE 'checkov:skip=[A-Z0-9_]+' terraform --include='*.tf' | sed 's/checkov:skip=/  /' | sort

# --skip-download: no Bridgecrew/Prisma platform calls (offline, no API key).
exec "$VENV/bin/checkov" -d terraform --framework terraform --skip-download --quiet --compact
