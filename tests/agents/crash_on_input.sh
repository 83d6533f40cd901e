#!/bin/sh
# Fake agent that prints some lines, then fails with status 3 once it reads a line.
echo "working on it"
read -r _
echo "dying now"
exit 3
