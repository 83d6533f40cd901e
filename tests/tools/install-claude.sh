#!/usr/bin/env bash
# Installs the pinned Claude Code CLI that the tests run (offline, against a scripted model
# server) into DIR (default: target/tmp/claude-code), unless it is there already.
# Prints the path of the `claude` program.
set -euo pipefail
# npm's cache stays under target/ like everything the tests install.
export npm_config_cache="${npm_config_cache:-$(cd "$(dirname "$0")/../.." && pwd)/target/npm-cache}"
VERSION=2.1.328
dir=${1:-"$(cd "$(dirname "$0")/../.." && pwd)/target/tmp/claude-code"}
bin="$dir/node_modules/@anthropic-ai/claude-code/bin/claude.exe"
if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "^$VERSION "; then
    echo "$bin"
    exit 0
fi
mkdir -p "$dir"
cd "$dir"
npm install --no-audit --no-fund --loglevel=error --prefix "$dir" "@anthropic-ai/claude-code@$VERSION" >&2
# The package's postinstall puts the native binary in place; run it when npm skipped it.
if ! [ -x "$bin" ] || ! "$bin" --version >/dev/null 2>&1; then
    (cd node_modules/@anthropic-ai/claude-code && node install.cjs) >&2
fi
"$bin" --version >&2
echo "$bin"
