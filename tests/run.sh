#!/usr/bin/env bash
# The README's test command: on a fresh Debian or Ubuntu machine with only Rust, installs
# what the tests need, then runs `cargo test` (arguments are passed on, e.g.
# `tests/run.sh --test it trust`).
#
# - System packages, with apt when missing: tmux (agents run in it), git (task results,
#   worktrees), python3 with venv (the reference's Python client, schemathesis), node 20+
#   and npm (the reference's TypeScript client, the browser tests, the pinned agent CLIs),
#   chromium (Debian's, for the browser tests), util-linux (setpriv, for the test that
#   another user cannot use the daemon's socket). As root, or with passwordless sudo, they
#   are installed; otherwise the command names them and stops before running anything.
# - Pinned tools from npm and PyPI, under target/ (npm's cache too): the Claude Code,
#   Codex and Gemini CLIs, playwright-core, schemathesis, nats-server (the cluster tests' NATS).
set -euo pipefail
cd "$(dirname "$0")/.."
export npm_config_cache="$PWD/target/npm-cache"

# Each check runs the program (bash's `command -v` also names files it cannot execute).
missing=()
tmux -V >/dev/null 2>&1 || missing+=(tmux)
git --version >/dev/null 2>&1 || missing+=(git)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3 python3-venv)
node -e 'process.exit(parseInt(process.versions.node) >= 20 ? 0 : 1)' >/dev/null 2>&1 \
    || missing+=(nodejs)
npm --version >/dev/null 2>&1 || missing+=(npm)
[ -x /usr/bin/chromium ] || missing+=(chromium)
setpriv --version >/dev/null 2>&1 || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        as_root=()
    elif sudo -n true 2>/dev/null; then
        as_root=(sudo)
    else
        echo "tests/run.sh: the tests need these packages: ${missing[*]}" >&2
        echo "install them with: sudo apt-get install ${missing[*]}   (then run tests/run.sh again)" >&2
        exit 1
    fi
    echo "tests/run.sh: installing ${missing[*]}" >&2
    "${as_root[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq "${missing[@]}"
fi

tests/tools/install-claude.sh >/dev/null
tests/tools/install-codex.sh >/dev/null
tests/tools/install-gemini.sh >/dev/null
tests/tools/install-playwright.sh >/dev/null
tests/tools/install-schemathesis.sh >/dev/null
tests/tools/install-nats.sh >/dev/null
# The dashboard's vendored xterm.js must be the unmodified npm release.
tests/tools/vendor-xterm.sh --check

exec cargo test "$@"
