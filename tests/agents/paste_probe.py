#!/usr/bin/env python3
"""Fake TUI agent: enables bracketed paste, puts the tty in raw mode, and reports every
byte it receives (hex) so tests can check how input arrived."""
import os, sys, termios, tty

fd = sys.stdin.fileno()
tty.setraw(fd)
sys.stdout.write("\x1b[?2004h")
sys.stdout.write("probe ready\r\n")
sys.stdout.flush()
received = b""
while True:
    chunk = os.read(fd, 4096)
    if not chunk:
        break
    received += chunk
    sys.stdout.write("GOT " + received.hex() + "\r\n")
    sys.stdout.flush()
