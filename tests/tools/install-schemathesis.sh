#!/usr/bin/env bash
# Installs the pinned Python tools of the contract and metrics tests into a virtualenv at DIR
# (default: target/tmp/schemathesis), unless they are there already: schemathesis
# (property-based API contract tests), jsonschema (the WebSocket message test validates
# captured messages with it) and prometheus_client (whose parser reads GET /metrics). Prints the venv's bin
# directory.
set -euo pipefail
VERSION=4.32.5
PROMETHEUS_CLIENT=0.26.0
JSONSCHEMA=4.26.0
dir=${1:-"$(cd "$(dirname "$0")/../.." && pwd)/target/tmp/schemathesis"}
if [ -x "$dir/bin/st" ] && "$dir/bin/st" --version 2>/dev/null | grep -q " $VERSION\$" \
    && "$dir/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('prometheus-client') != '$PROMETHEUS_CLIENT' or m.version('jsonschema') != '$JSONSCHEMA')" 2>/dev/null; then
    echo "$dir/bin"
    exit 0
fi
rm -rf "$dir"
python3 -m venv "$dir" >&2
"$dir/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$VERSION" \
    "prometheus-client==$PROMETHEUS_CLIENT" "jsonschema==$JSONSCHEMA" >&2
"$dir/bin/st" --version >&2
echo "$dir/bin"
