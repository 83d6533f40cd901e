#!/usr/bin/env bash
# Installs the pinned OpenAI Codex CLI that the tests run (offline, against a scripted model
# server) into DIR (default: target/tmp/codex), unless it is there already. Prints the path of
# the `codex` program.
set -euo pipefail
# npm's cache stays under target/ like everything the tests install.
export npm_config_cache="${npm_config_cache:-$(cd "$(dirname "$0")/../.." && pwd)/target/npm-cache}"
VERSION=0.171.0
dir=${1:-"$(cd "$(dirname "$0")/../.." && pwd)/target/tmp/codex"}
bin="$dir/node_modules/.bin/codex"
if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q " $VERSION\$"; then
    echo "$bin"
    exit 0
fi
mkdir -p "$dir"
npm install --no-audit --no-fund --loglevel=error --prefix "$dir" "@openai/codex@$VERSION" >&2
"$bin" --version >&2
echo "$bin"
