"""The baseline for the Python viewer: a bare Python reader of a pseudo-terminal, reading
the same flood the agent writes (LINE repeated to BYTES bytes, then END) straight from the
master, with no daemon in between. Started by `cargo bench --bench e2e -- python`. Prints
one JSON line: {"bytes": n, "seconds": s}.

Usage: python_pty_reader.py BYTES LINE
"""
import fcntl
import json
import os
import struct
import subprocess
import sys
import termios
import time


def main(size, line):
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    script = f"yes '{line}' | head -c {size}; echo; echo END"
    started = time.monotonic()
    child = subprocess.Popen(
        ["sh", "-c", script], stdin=slave, stdout=slave, stderr=slave, start_new_session=True
    )
    os.close(slave)
    total, tail = 0, b""
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            # The master reports the end as EIO.
            break
        if not data:
            break
        total += len(data)
        tail = (tail + data)[-16:]
        if tail.endswith(b"END\r\n"):
            break
    seconds = time.monotonic() - started
    child.wait()
    os.close(master)
    print(json.dumps({"bytes": total, "seconds": seconds}))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
