#!/usr/bin/python3
"""A network link with latency, jitter and loss, for kernels without `tc netem`.

    tapwire.py NAME_A NAME_B --delay MS --jitter MS --loss PERCENT

Makes two TAP devices, NAME_A and NAME_B, and carries every Ethernet frame written to one out of the other,
each after DELAY +- JITTER milliseconds (uniform, so frames are reordered as on a real path with jitter), and
drops LOSS percent of them. The caller moves the devices into network namespaces and gives them addresses:
they behave as the two ends of a cable. It prints "ready" once both exist. SIGUSR1 turns the impairment on
(the default), SIGUSR2 off (frames then pass at once); SIGTERM ends it, and the devices go with it.
"""
import argparse
import fcntl
import heapq
import os
import random
import selectors
import signal
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000


def open_tap(name):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    return fd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--delay", type=float, default=50)
    ap.add_argument("--jitter", type=float, default=10)
    ap.add_argument("--loss", type=float, default=5)
    args = ap.parse_args()
    fa, fb = open_tap(args.a), open_tap(args.b)
    other = {fa: fb, fb: fa}
    impaired = [True]
    running = [True]
    signal.signal(signal.SIGUSR1, lambda *_: impaired.__setitem__(0, True))
    signal.signal(signal.SIGUSR2, lambda *_: impaired.__setitem__(0, False))
    signal.signal(signal.SIGTERM, lambda *_: running.__setitem__(0, False))
    sel = selectors.DefaultSelector()
    sel.register(fa, selectors.EVENT_READ)
    sel.register(fb, selectors.EVENT_READ)
    due = []  # (time, sequence, fd, frame)
    seq = 0
    rnd = random.Random(1)
    print("ready", flush=True)
    while running[0]:
        timeout = max(0.0, due[0][0] - time.monotonic()) if due else 0.5
        try:
            events = sel.select(min(timeout, 0.5))
        except InterruptedError:
            continue
        now = time.monotonic()
        for key, _ in events:
            for _ in range(64):
                try:
                    frame = os.read(key.fd, 65536)
                except BlockingIOError:
                    break
                except OSError:
                    break
                if impaired[0]:
                    if rnd.random() * 100 < args.loss:
                        continue
                    at = now + max(0.0, args.delay + rnd.uniform(-args.jitter, args.jitter)) / 1000
                else:
                    at = now
                seq += 1
                heapq.heappush(due, (at, seq, other[key.fd], frame))
        now = time.monotonic()
        while due and due[0][0] <= now:
            _, _, fd, frame = heapq.heappop(due)
            try:
                os.write(fd, frame)
            except OSError:
                pass  # the device is down, or its queue full: a lost frame
    return 0


if __name__ == "__main__":
    sys.exit(main())
