#!/bin/sh
# Fake interactive agent: announces itself, then echoes every line it is given.
echo "echo agent ready in $(pwd)"
exec cat
