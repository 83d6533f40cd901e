#!/bin/sh
# Fake agent that fails with status 3.
echo "something went wrong" >&2
exit 3
