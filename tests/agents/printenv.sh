#!/bin/sh
# Fake agent that reports its environment and directory, then stays alive.
echo "cwd=$(pwd)"
echo "PROJECT_NAME=${PROJECT_NAME-unset}"
echo "ODD=${ODD-unset}"
echo "SESSION=${ORCHESTRA_SESSION_ID-unset}"
echo "TMUX=${TMUX-unset}"
echo "TYPE_VAR=${TYPE_VAR-unset}"
exec cat
