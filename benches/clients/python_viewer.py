"""One viewer of a flood, written the way most scripts against the API are: Python's asyncio
`websockets`, every message parsed with `json.loads`. Started by `cargo bench --bench e2e --
python`: subscribes to SESSION, starts the flood (a newline), and checks every byte between
the START and END markers against the known stream of BYTES bytes. Prints one JSON line:
{"ok": bool, "bytes": n, "seconds": s, "gaps": n, "cpu_seconds": s}.

Usage: ORCHESTRA_WS_URL=ws://...?token=... python_viewer.py SESSION BYTES LINE
(with ORCHESTRA_TRIGGER=0 it prints "ready" once subscribed and leaves starting the flood to
the caller, for many viewers of one flood)
(the URL carries a token, so it comes in the environment, never on the command line, where
other users of the machine could read it).
"""
import asyncio
import json
import os
import sys
import time

import websockets


def expected_stream(size, line):
    body = (line + "\n").encode()
    body = (body * (size // len(body) + 1))[:size]
    return body.replace(b"\n", b"\r\n")


async def main(url, session, size, line):
    expected = expected_stream(size, line)
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "subscribe_terminal", "session_id": session}))
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == "terminal_output" and message.get("snapshot"):
                break
        if os.environ.get("ORCHESTRA_TRIGGER", "1") == "1":
            await ws.send(json.dumps({"type": "terminal_input", "session_id": session, "data": "\r"}))
        else:
            # One of many viewers: the bench starts the flood once all say they are ready.
            print("ready", flush=True)
        started = time.monotonic()
        cpu = time.process_time()
        text, body_started, matched, gaps, ok = "", False, 0, 0, True
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == "terminal_gap":
                gaps += 1
                continue
            if message["type"] != "terminal_output" or message.get("snapshot"):
                continue
            text += message["data"]
            if not body_started:
                at = text.find("START\r\n")
                if at < 0:
                    continue
                text, body_started = text[at + 7:], True
            end = text.find("\r\nEND\r\n")
            chunk = (text if end < 0 else text[:end]).encode()
            if end < 0:
                # Keep a short tail: a marker may be split across messages.
                keep = max(0, len(text) - 16)
                chunk, text = text[:keep].encode(), text[keep:]
            if expected[matched:matched + len(chunk)] != chunk:
                ok = False
            matched += len(chunk)
            if end >= 0:
                break
        seconds = time.monotonic() - started
        print(json.dumps({
            "ok": ok and matched == len(expected) and gaps == 0,
            "bytes": matched,
            "seconds": seconds,
            "gaps": gaps,
            "cpu_seconds": time.process_time() - cpu,
        }))


if __name__ == "__main__":
    url = os.environ["ORCHESTRA_WS_URL"]
    session, size, line = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    asyncio.run(main(url, session, size, line))
