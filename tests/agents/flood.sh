#!/bin/sh
# Fake agent that, for every line it reads, prints a large known stream (with multi-byte
# characters) between START and END markers.
# $FLOOD_LINES sets the number of lines per flood (default 60000, about 3.2 MB).
while read -r _; do
    echo START
    seq 1 "${FLOOD_LINES:-60000}" | sed 's/$/ héllo wörld ✓ 😀 the quick brown fox/'
    echo END
done
