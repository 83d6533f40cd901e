#!/usr/bin/env bash
# The dashboard embeds xterm.js and its fit addon as unmodified copies of the npm releases
# pinned in src/web/vendor/package-lock.json. This installs that lockfile into
# target/tmp/xterm-vendor (once per lockfile) and then
#   --check (default): fails, naming the file, if a vendored file differs from the release;
#   --update:          copies the release files over the vendored ones.
set -euo pipefail
# npm's cache stays under target/ like everything the tests install.
export npm_config_cache="${npm_config_cache:-$(cd "$(dirname "$0")/../.." && pwd)/target/npm-cache}"
cd "$(dirname "$0")/../.."
mode=${1:---check}
case "$mode" in
    --check | --update) ;;
    *) echo "usage: $0 [--check|--update]" >&2; exit 2 ;;
esac
vendor=src/web/vendor
dir=target/tmp/xterm-vendor
stamp="$dir/.lock-sha256"
want=$(sha256sum "$vendor/package-lock.json" | cut -d' ' -f1)
modules="$dir/node_modules/@xterm"
if ! [ -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] \
    || ! [ -f "$modules/xterm/package.json" ] || ! [ -f "$modules/addon-fit/package.json" ]; then
    rm -rf "$dir"
    mkdir -p "$dir"
    cp "$vendor/package.json" "$vendor/package-lock.json" "$dir/"
    (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) >&2
    echo "$want" > "$stamp"
fi
# vendored name -> file in the release
pairs=(
    "xterm.js=$modules/xterm/lib/xterm.js"
    "xterm.css=$modules/xterm/css/xterm.css"
    "LICENSE.xterm=$modules/xterm/LICENSE"
    "addon-fit.js=$modules/addon-fit/lib/addon-fit.js"
    "LICENSE.addon-fit=$modules/addon-fit/LICENSE"
)
status=0
for pair in "${pairs[@]}"; do
    name=${pair%%=*}
    release=${pair#*=}
    if [ "$mode" = --update ]; then
        cp "$release" "$vendor/$name"
    elif ! cmp -s "$release" "$vendor/$name"; then
        echo "vendor-xterm: $vendor/$name differs from the npm release ($release); run $0 --update" >&2
        status=1
    fi
done
[ "$status" -eq 0 ] && echo "vendor-xterm: $mode ok (@xterm/xterm $(node -p "require('./$modules/xterm/package.json').version"), @xterm/addon-fit $(node -p "require('./$modules/addon-fit/package.json').version"))"
exit "$status"
