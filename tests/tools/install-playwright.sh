#!/usr/bin/env bash
# Installs what the browser tests need: Debian's Chromium (/usr/bin/chromium, with apt when
# it is missing and we may) and the pinned playwright-core from tests/browser/package-lock.json
# into target/tmp/playwright (once per lockfile). Never downloads a browser of its own.
# Prints the node_modules directory on its last line.
set -euo pipefail
# npm's cache stays under target/ like everything the tests install.
export npm_config_cache="${npm_config_cache:-$(cd "$(dirname "$0")/../.." && pwd)/target/npm-cache}"
cd "$(dirname "$0")/../.."
if ! [ -x /usr/bin/chromium ]; then
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq >&2 && apt-get install -y -qq chromium >&2
    elif sudo -n true 2>/dev/null; then
        sudo apt-get update -qq >&2 && sudo apt-get install -y -qq chromium >&2
    else
        echo "install-playwright: /usr/bin/chromium is missing; install Debian's chromium package" >&2
        exit 1
    fi
fi
dir=target/tmp/playwright
stamp="$dir/.lock-sha256"
want=$(sha256sum tests/browser/package-lock.json | cut -d' ' -f1)
if ! [ -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! [ -d "$dir/node_modules/playwright-core" ]; then
    rm -rf "$dir"
    mkdir -p "$dir"
    cp tests/browser/package.json tests/browser/package-lock.json "$dir/"
    (cd "$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) >&2
    echo "$want" > "$stamp"
fi
echo "$(pwd)/$dir/node_modules"
