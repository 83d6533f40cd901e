#!/bin/sh
# A tmux stand-in that never answers, for testing that a hung tmux cannot stall the daemon.
exec sleep 600
