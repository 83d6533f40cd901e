#!/usr/bin/env python3
# Fake agent for restart tests: prints "got usr1" (and leaves usr1.mark in its working
# directory) on SIGUSR1, and answers every line it reads with "said <line>".
import signal
import sys


def on_usr1(signum, frame):
    print("got usr1", flush=True)
    open("usr1.mark", "w").close()


signal.signal(signal.SIGUSR1, on_usr1)
print("ready for signals", flush=True)
for line in sys.stdin:
    print("said " + line.strip(), flush=True)
