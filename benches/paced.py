#!/usr/bin/env python3
"""Open-loop HTTP/1.1 load at an even pace, for the load harness's fixed-rate runs.

`h2load --h1 -c 10 --rps 100` does not send 1,000 requests a second one by one: its clients'
timers fire together, so it sends bursts of 10 requests at once, 100 times a second, and the
latency it reports is that of the last request of a burst, queued behind the other nine on the
proxy's core. This client sends one request every 1/rate seconds, spread round-robin over
`--connections` keep-alive connections, and measures each request's latency from the instant it
was due, not the instant it went out: a request that waits for a free connection counts that
wait (no coordinated omission).

It paces with a timerfd (nanosecond resolution) and sleeps in epoll between events: a client
that busy-polled would be preempted for whole time slices by whatever else runs on its core, and
its p99 would be that. Prints one JSON object: requests, errors, rps, p50_ms, p99_ms,
max_ms. Standard library only.
"""

import argparse
import collections
import ctypes
import json
import os
import select
import socket
import sys
import time


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", Timespec), ("it_value", Timespec)]


def periodic_timer(period_ns):
    """A timerfd (CLOCK_MONOTONIC) that expires every `period_ns`, the first time one period
    from now: nanosecond resolution, where epoll's own timeout has milliseconds."""
    libc = ctypes.CDLL(None, use_errno=True)
    clock_monotonic, tfd_nonblock, tfd_cloexec = 1, 0o4000, 0o2000000
    fd = libc.timerfd_create(clock_monotonic, tfd_nonblock | tfd_cloexec)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "timerfd_create")
    every = Timespec(period_ns // 1_000_000_000, period_ns % 1_000_000_000)
    if libc.timerfd_settime(fd, 0, ctypes.byref(Itimerspec(every, every)), None) != 0:
        raise OSError(ctypes.get_errno(), "timerfd_settime")
    return fd


def percentile(sorted_values, q):
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def complete(buf):
    """Whether `buf` holds one whole response (Content-Length bodies only), and its status."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return False, 0
    head = bytes(buf[:head_end]).decode("latin-1")
    status = int(head.split(" ", 2)[1])
    length = 0
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    return len(buf) >= head_end + 4 + length, status


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True, help="127.0.0.1:PORT")
    p.add_argument("--rate", type=int, default=1000, help="requests a second")
    p.add_argument("--duration", type=float, default=10.0, help="seconds")
    p.add_argument("--connections", type=int, default=10)
    p.add_argument("--authority", default=None, help="Host header (default 127.0.0.1:PORT)")
    a = p.parse_args()

    host = a.authority or f"127.0.0.1:{a.port}"
    request = f"GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: vigil-paced\r\n\r\n".encode()
    conns = []
    for _ in range(a.connections):
        s = socket.create_connection(("127.0.0.1", a.port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        conns.append(s)
    by_fd = {s.fileno(): i for i, s in enumerate(conns)}
    poller = select.epoll()
    for s in conns:
        poller.register(s.fileno(), select.EPOLLIN)

    total = int(a.rate * a.duration)
    period_ns = 1_000_000_000 // a.rate
    timer = periodic_timer(period_ns)
    start = time.clock_gettime(time.CLOCK_MONOTONIC)
    poller.register(timer, select.EPOLLIN)
    free = collections.deque(range(len(conns)))
    due = collections.deque()      # instants of requests not yet sent
    inflight = {}                  # connection -> (instant due, bytes read so far)
    latencies, errors, ticks = [], 0, 0
    while ticks < total or due or inflight:
        # Blocks until the timer or a socket is ready: the client sleeps
        # between requests, so other work on its core does not preempt it
        # for a whole time slice (as it would a busy loop).
        events = poller.poll(1.0)
        if not events and time.clock_gettime(time.CLOCK_MONOTONIC) > start + a.duration + 10:
            errors += len(due) + len(inflight)
            break
        for fd, _ in events:
            if fd == timer:
                expired = int.from_bytes(os.read(timer, 8), "little")
                for _ in range(expired):
                    if ticks < total:
                        ticks += 1
                        due.append(start + ticks * period_ns / 1e9)
                if ticks >= total:
                    poller.unregister(timer)
                continue
            i = by_fd[fd]
            data = conns[i].recv(65536)
            if not data or i not in inflight:
                raise SystemExit(f"connection {i} closed or sent unasked bytes: {data[:80]!r}")
            when, buf = inflight[i]
            buf += data
            done, status = complete(buf)
            if done:
                latencies.append(time.clock_gettime(time.CLOCK_MONOTONIC) - when)
                if status >= 400:
                    errors += 1
                del inflight[i]
                free.append(i)
        while due and free:
            i = free.popleft()
            conns[i].send(request)
            inflight[i] = (due.popleft(), bytearray())
    os.close(timer)
    elapsed = time.clock_gettime(time.CLOCK_MONOTONIC) - start
    latencies.sort()
    ms = [x * 1000.0 for x in latencies]
    json.dump({"requests": len(ms), "errors": errors, "rps": len(ms) / elapsed,
               "p50_ms": percentile(ms, 0.50), "p99_ms": percentile(ms, 0.99),
               "max_ms": ms[-1] if ms else 0.0}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
