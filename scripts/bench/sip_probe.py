#!/usr/bin/env python3
"""OPTIONS probe for scripts/bench-flood.sh (python3 standard library only).

  sip_probe.py udp --bind IP --server IP:PORT --every 0.1 --count N [--wait 2.0] [--out FILE]
      sends an OPTIONS every --every seconds, N in all, each with its own Call-ID; an answer
      is any response with that Call-ID within --wait seconds. Prints one summary line:
      sent, answered, unanswered, p50/p99/max latency (ms) and the status codes seen;
      --out writes one line per probe (send time, latency ms or -, status).
  sip_probe.py tcp --bind IP --server IP:PORT [--wait 5.0]
      one TCP connection, one OPTIONS, prints connect and answer latency (or why not).
Bounded: at most N probes, and nothing waits longer than --wait after the last one.
"""
import argparse
import random
import select
import socket
import time


def options(server, bind, port, transport, cid, branch):
    return (f"OPTIONS sip:{server} SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport} {bind}:{port};branch=z9hG4bK{branch};rport\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:probe@{bind}>;tag=p{branch}\r\n"
            f"To: <sip:{server}>\r\n"
            f"Call-ID: {cid}\r\n"
            f"CSeq: 1 OPTIONS\r\n"
            f"Contact: <sip:probe@{bind}:{port}>\r\n"
            f"Accept: application/sdp\r\n"
            f"User-Agent: p2psip-bench-probe\r\n"
            f"Content-Length: 0\r\n\r\n").encode()


def call_id_of(data):
    for line in data.split(b"\r\n"):
        low = line.lower()
        if low.startswith(b"call-id:") or low.startswith(b"i:"):
            return line.split(b":", 1)[1].strip().decode(errors="replace")
    return None


def pct(sorted_vals, p):
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


def udp(a):
    host, port = a.server.rsplit(":", 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((a.bind, 0))
    lport = s.getsockname()[1]
    tag = random.getrandbits(32)
    sent = {}      # cid -> send time
    got = {}       # cid -> (latency ms, status)
    order = []
    t0 = time.monotonic()
    end = t0 + a.every * a.count + a.wait
    i = 0
    while True:
        now = time.monotonic()
        if i < a.count and now >= t0 + i * a.every:
            cid = f"probe-{tag:x}-{i}"
            s.sendto(options(host, a.bind, lport, "UDP", cid, f"{tag:x}{i}"), (host, int(port)))
            sent[cid] = time.monotonic()
            order.append((cid, time.time()))
            i += 1
            continue
        if now >= end or (i >= a.count and len(got) == len(sent)):
            break
        nxt = t0 + i * a.every if i < a.count else end
        r, _, _ = select.select([s], [], [], max(0.0, min(nxt, end) - now))
        if r:
            data, _ = s.recvfrom(65535)
            t = time.monotonic()
            cid = call_id_of(data)
            if cid in sent and cid not in got and t - sent[cid] <= a.wait:
                status = data.split(b" ", 2)[1].decode(errors="replace") if data.startswith(b"SIP/2.0") else "?"
                got[cid] = ((t - sent[cid]) * 1000.0, status)
    lat = sorted(v[0] for v in got.values())
    codes = {}
    for _, st in got.values():
        codes[st] = codes.get(st, 0) + 1
    print(f"sent={len(sent)} answered={len(got)} unanswered={len(sent) - len(got)} "
          f"p50_ms={pct(lat, 50):.2f} p99_ms={pct(lat, 99):.2f} max_ms={(lat[-1] if lat else float('nan')):.2f} "
          f"codes={','.join(f'{k}:{v}' for k, v in sorted(codes.items())) or '-'}")
    if a.out:
        with open(a.out, "w") as f:
            for cid, wall in order:
                v = got.get(cid)
                f.write(f"{wall:.3f} {v[0]:.2f} {v[1]}\n" if v else f"{wall:.3f} - -\n")


def tcp(a):
    host, port = a.server.rsplit(":", 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(a.wait)
    s.bind((a.bind, 0))
    t0 = time.monotonic()
    try:
        s.connect((host, int(port)))
    except OSError as e:
        print(f"tcp_connect=failed ({e.__class__.__name__}: {e}) after_ms={(time.monotonic() - t0) * 1000:.1f}")
        return
    t1 = time.monotonic()
    cid = f"probe-tcp-{random.getrandbits(32):x}"
    try:
        s.sendall(options(host, a.bind, s.getsockname()[1], "TCP", cid, cid[-8:]))
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65535)
            if not chunk:
                raise ConnectionError("closed by the server")
            buf += chunk
        t2 = time.monotonic()
        status = buf.split(b" ", 2)[1].decode(errors="replace")
        print(f"tcp_connect=ok connect_ms={(t1 - t0) * 1000:.1f} options_answer={status} answer_ms={(t2 - t1) * 1000:.1f}")
    except OSError as e:
        print(f"tcp_connect=ok connect_ms={(t1 - t0) * 1000:.1f} options_answer=none ({e.__class__.__name__}: {e})")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=("udp", "tcp"))
    p.add_argument("--bind", required=True)
    p.add_argument("--server", required=True)
    p.add_argument("--every", type=float, default=0.1)
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--wait", type=float, default=2.0)
    p.add_argument("--out")
    a = p.parse_args()
    udp(a) if a.mode == "udp" else tcp(a)


main()
