#!/usr/bin/env python3
"""Idle TCP connections for scripts/bench-flood.sh (python3 standard library only).

  tcp_idle.py --bind IP --server IP:PORT --count N --hold SECS [--ready FILE] [--batch 200]

Opens N TCP connections from IP (each socket bound to IP, port chosen by the kernel) to the
server, sending nothing, in batches (non-blocking connects, up to 5 s per batch), then holds
them for SECS seconds and reports how many were established, how many connects failed (and
why), and how many the server closed (EOF/reset) during the hold. Writes a line to --ready once
the connections are open (the caller probes then). Raises its own RLIMIT_NOFILE to the hard limit.
"""
import argparse
import errno
import os
import resource
import select
import socket
import time

p = argparse.ArgumentParser()
p.add_argument("--bind", required=True)
p.add_argument("--server", required=True)
p.add_argument("--count", type=int, default=10000)
p.add_argument("--hold", type=float, default=30.0)
p.add_argument("--batch", type=int, default=200)
p.add_argument("--ready")
a = p.parse_args()
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
host, port = a.server.rsplit(":", 1)
dst = (host, int(port))

est, fails = [], {}
t0 = time.monotonic()
left = a.count
while left > 0:
    batch = []
    for _ in range(min(a.batch, left)):
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as e:
            fails[errno.errorcode.get(e.errno, str(e.errno))] = fails.get(errno.errorcode.get(e.errno, str(e.errno)), 0) + 1
            continue
        s.setblocking(False)
        try:
            s.bind((a.bind, 0))
            s.connect_ex(dst)
            batch.append(s)
        except OSError as e:
            k = errno.errorcode.get(e.errno, str(e.errno))
            fails[k] = fails.get(k, 0) + 1
            s.close()
    left -= a.batch
    pending = {s.fileno(): s for s in batch}
    poller = select.poll()   # poll, not select: the descriptors go far beyond FD_SETSIZE
    for fd in pending:
        poller.register(fd, select.POLLOUT)
    deadline = time.monotonic() + 5.0
    while pending and time.monotonic() < deadline:
        for fd, _ in poller.poll(max(0.0, deadline - time.monotonic()) * 1000):
            s = pending.pop(fd, None)
            poller.unregister(fd)
            if s is None:
                continue
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                k = errno.errorcode.get(err, str(err))
                fails[k] = fails.get(k, 0) + 1
                s.close()
            else:
                est.append(s)
    for s in pending.values():
        fails["connect_timeout_5s"] = fails.get("connect_timeout_5s", 0) + 1
        s.close()
t_open = time.monotonic() - t0
print(f"opened={len(est)} of={a.count} failed={sum(fails.values())} why={fails or '-'} open_s={t_open:.1f} "
      f"nofile={hard}", flush=True)
if a.ready:
    with open(a.ready, "w") as f:
        f.write(f"{len(est)}\n")

# hold: notice connections the server closes (readable with EOF or an error)
alive = {s.fileno(): s for s in est}
poller = select.poll()
for fd in alive:
    poller.register(fd, select.POLLIN)
closed = 0
end = time.monotonic() + a.hold
while time.monotonic() < end and alive:
    for fd, _ in poller.poll(max(0.0, min(0.5, end - time.monotonic())) * 1000):
        s = alive.get(fd)
        if s is None:
            continue
        try:
            data = s.recv(4096)
        except OSError:
            data = b""
        if not data:
            poller.unregister(fd)
            del alive[fd]
            closed += 1
            s.close()
print(f"held_s={a.hold:.0f} still_open={len(alive)} closed_by_server={closed}", flush=True)
for s in alive.values():
    s.close()
