#!/bin/sh
# Fake agent that ignores polite signals and has a child that does too, so only SIGKILL
# ends the tree. It prints the child's pid so tests can check it is gone.
trap '' TERM HUP INT
sleep 600 &
echo "child $!"
while :; do sleep 600; done
