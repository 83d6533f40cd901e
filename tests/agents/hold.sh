#!/bin/sh
# Stand-in for a slow or hung program (`tmux`, `git`), installed under that program's name by
# the tests: while the file named by $STANDIN_HOLD exists it waits, like a hung tmux server
# or a git call in a huge repository; then (or at once) it runs the real program,
# $STANDIN_REAL, with the same arguments.
if [ -n "$STANDIN_HOLD" ]; then
    while [ -e "$STANDIN_HOLD" ]; do
        sleep 0.05
    done
fi
exec "$STANDIN_REAL" "$@"
