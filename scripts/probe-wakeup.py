#!/usr/bin/env python3
"""How late this machine wakes a blocked process after an idle spell.

Why: an expiry handoff happens after the waiting client (and the server's reaper) have
idled for a whole TTL, so a machine that wakes threads late after idling adds that
lateness to every expiry measurement (bench/analysis.md, "expiry"). This probe
measures it without fenced: two processes on a socketpair; the parent idles for a while,
then sends its monotonic clock reading; the child, blocked in recv() all that time, reads
the clock as soon as it wakes and reports the difference.

Usage: python3 scripts/probe-wakeup.py [IDLE_SECONDS ...]   (default 0 0.01 0.1 0.5 2)
"""

import os
import socket
import statistics
import sys
import time


def child(sock: socket.socket) -> None:
    """Answers each send time with how long after it this process woke."""
    while True:
        data = sock.recv(64)
        if not data:
            return
        woke = time.monotonic_ns()
        sock.send(str(woke - int(data.decode())).encode())


def main() -> None:
    idles = [float(arg) for arg in sys.argv[1:]] or [0.0, 0.01, 0.1, 0.5, 2.0]
    parent_end, child_end = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        parent_end.close()
        child(child_end)
        os._exit(0)
    child_end.close()
    for idle in idles:
        tries = 5 if idle >= 0.5 else 20
        wakeups_us = []
        for _ in range(tries):
            time.sleep(idle)
            parent_end.send(str(time.monotonic_ns()).encode())
            wakeups_us.append(int(parent_end.recv(64).decode()) / 1000)
        print(
            f"idle {idle:6.3f} s: wake-up p50 {statistics.median(wakeups_us):7.0f} us, "
            f"max {max(wakeups_us):7.0f} us ({tries} tries)"
        )
    parent_end.close()
    os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
