#!/usr/bin/env bash
# Installs the pinned Google Gemini CLI that the tests run (offline, against a scripted Gemini
# API server) into DIR (default: target/tmp/gemini), unless it is there already. Prints the
# path of the `gemini` program.
set -euo pipefail
# npm's cache stays under target/ like everything the tests install.
export npm_config_cache="${npm_config_cache:-$(cd "$(dirname "$0")/../.." && pwd)/target/npm-cache}"
VERSION=0.61.0
dir=${1:-"$(cd "$(dirname "$0")/../.." && pwd)/target/tmp/gemini"}
bin="$dir/node_modules/.bin/gemini"
if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "^$VERSION\$"; then
    echo "$bin"
    exit 0
fi
mkdir -p "$dir"
npm install --no-audit --no-fund --loglevel=error --prefix "$dir" "@google/gemini-cli@$VERSION" >&2
"$bin" --version >&2
echo "$bin"
