#!/usr/bin/env python3
"""Stand-in for a pane pipe that stays open but never delivers (see tmux-silence-pipe.sh).

Run by tmux as a `pipe-pane` command, with the daemon's helper command line as arguments: it
runs that helper with one end of a fresh socketpair instead of the pane's pipe, so the daemon
gets a socket nobody writes to. The pane's real output, on standard input, is read and
dropped; when tmux closes that pipe (a later `pipe-pane` replaces it), the socketpair closes
too, as the real pipe would.
"""
import os
import socket
import subprocess
import sys

ours, theirs = socket.socketpair()
subprocess.run(sys.argv[1:], stdin=theirs.fileno(), check=False)
theirs.close()
while os.read(0, 65536):
    pass
ours.close()
