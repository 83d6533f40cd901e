#!/bin/sh
# Fake agent that dies from a signal.
echo "about to crash"
kill -9 $$
