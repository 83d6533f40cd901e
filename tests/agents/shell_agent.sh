#!/bin/sh
# Fake agent CLI that is an interactive bash: it ignores the arguments a CLI with hooks is
# given (--settings, --mcp-config), so tests can see what a shell makes of typed text.
exec bash --noprofile --norc -i
