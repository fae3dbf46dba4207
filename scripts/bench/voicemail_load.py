#!/usr/bin/env python3
"""Voicemail load (stdlib only): N callers each call a different offline
user (vm-0 ... vm-N-1 of example.test, registered and unregistered first so
the node knows them) through one node (a ring of one), all INVITEs at
once; each caller ACKs voicemail's 200 and from then sends 20 ms PCMU
packets of a tone for SECONDS, receiving the greeting, then hangs up.
With NODE_PID the node's CPU (utime+stime) is read over the steady part:
from the moment every call is answered and past its greeting (1 s) to the
first BYE.
Usage: voicemail_load.py NODE_PORT N SECONDS [NODE_PID]
Prints: answered=A sent=S received=R steady_s=T steady_ticks=C"""
import math, os, re, select, socket, struct, sys, time, uuid

node = ("127.0.0.1", int(sys.argv[1]))
n, seconds = int(sys.argv[2]), float(sys.argv[3])
pid = int(sys.argv[4]) if len(sys.argv) > 4 else None
sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sip.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
sip.bind(("127.0.0.1", 0))
me = "127.0.0.1:%d" % sip.getsockname()[1]

def cpu():
    if pid is None:
        return 0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])

def request(method, uri, call_id, tag, cseq, to, frm, extra="", body=""):
    branch = "z9hG4bK" + uuid.uuid4().hex[:16]
    lines = [f"{method} {uri} SIP/2.0", f"Via: SIP/2.0/UDP {me};branch={branch};rport",
             "Max-Forwards: 70", f"From: {frm};tag={tag}", f"To: {to}",
             f"Call-ID: {call_id}", f"CSeq: {cseq} {method}", f"Contact: <sip:bench@{me}>"]
    lines += [l for l in extra.split("\r\n") if l]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()

def finals(pending, limit):
    """Reads responses until every Call-ID in pending has a final one."""
    got, deadline = {}, time.monotonic() + limit
    sip.settimeout(0.5)
    while len(got) < len(pending) and time.monotonic() < deadline:
        try:
            text = sip.recv(65535).decode(errors="replace")
        except socket.timeout:
            continue
        m = re.search(r"^Call-ID: (\S+)", text, re.M | re.I)
        if m and m.group(1) in pending and re.match(r"SIP/2.0 [2-6]", text):
            got[m.group(1)] = text
    return got

# Make every user known (a binding set's tombstone), with no live binding.
reg_ids = [uuid.uuid4().hex for _ in range(n)]
for cseq, expires in ((1, 60), (2, 0)):
    ids = {}
    for i in range(n):
        aor = f"<sip:vm-{i}@example.test>"
        cid = reg_ids[i]
        ids[cid] = i
        sip.sendto(request("REGISTER", "sip:example.test", cid, "r", cseq, aor, aor,
                           f"Contact: <sip:vm@{me}>;expires={expires}"), node)
    got = finals(ids, 30)
    bad = [t for t in got.values() if not t.startswith("SIP/2.0 200")]
    if len(got) < n or bad:
        sys.exit(f"registrations: {len(got)}/{n} answered, {len(bad)} refused")

def ulaw(x):
    sign = 0x80 if x < 0 else 0
    x = min(abs(x), 32635) + 0x84
    exp = max(e for e in range(8) if x & (0x80 << e) or e == 0)
    return ~(sign | (exp << 4) | ((x >> (exp + 3)) & 0x0F)) & 0xFF
payload = bytes(ulaw(int(6000 * math.sin(2 * math.pi * 1000 * k / 8000))) for k in range(160))

calls = {}  # Call-ID -> state
for i in range(n):
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind(("127.0.0.1", 0))
    rtp.setblocking(False)
    port = rtp.getsockname()[1]
    sdp = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
           f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
    cid, tag = uuid.uuid4().hex, uuid.uuid4().hex[:8]
    to = f"<sip:vm-{i}@example.test>"
    calls[cid] = {"rtp": rtp, "tag": tag, "i": i, "to": None, "contact": None,
                  "media": None, "tick": 0, "start": None}
    sip.sendto(request("INVITE", f"sip:vm-{i}@example.test", cid, tag, 1, to,
                       "<sip:bob@elsewhere.test>", body=sdp), node)

sip.setblocking(False)
sent = received = 0
answered = 0
steady_at = steady_c = None
t0 = time.monotonic()
socks = [c["rtp"] for c in calls.values()] + [sip]
while True:
    now = time.monotonic()
    live = [c for c in calls.values() if c["start"] is not None]
    if answered == n and all(c["tick"] >= seconds * 50 for c in live):
        break
    if answered < n and now - t0 > 30:
        break
    if steady_at is None and answered == n and now - max(c["start"] for c in live) > 1.0:
        steady_at, steady_c = now, cpu()
    for c in live:
        due = c["start"] + c["tick"] * 0.02
        if c["tick"] < seconds * 50 and now >= due:
            header = struct.pack("!BBHII", 0x80, 0, c["tick"] & 0xFFFF,
                                 (c["tick"] * 160) & 0xFFFFFFFF, c["i"] + 1)
            c["rtp"].sendto(header + payload, c["media"])
            c["tick"] += 1
            sent += 1
    dues = [c["start"] + c["tick"] * 0.02 for c in live if c["tick"] < seconds * 50]
    wait = max(0.0, min(dues) - time.monotonic()) if dues else 0.01
    ready, _, _ = select.select(socks, [], [], min(wait, 0.01))
    for s in ready:
        try:
            while True:
                data = s.recv(65535)
                if s is not sip:
                    received += 1
                    continue
                text = data.decode(errors="replace")
                m = re.search(r"^Call-ID: (\S+)", text, re.M | re.I)
                c = calls.get(m.group(1)) if m else None
                if not c or not text.startswith("SIP/2.0 200") or " INVITE" not in text.split("CSeq:")[1].split("\r\n")[0]:
                    continue
                if c["start"] is None:
                    c["to"] = re.search(r"^To: (.*)$", text, re.M | re.I).group(1).strip()
                    c["contact"] = re.search(r"^Contact: <(.*)>", text, re.M | re.I).group(1)
                    c["media"] = ("127.0.0.1", int(re.search(r"^m=audio (\d+)", text, re.M).group(1)))
                    c["start"] = time.monotonic()
                    answered += 1
                sip.sendto(request("ACK", c["contact"], m.group(1), c["tag"], 1, c["to"],
                                   "<sip:bob@elsewhere.test>"), node)
        except BlockingIOError:
            pass

steady_s = time.monotonic() - steady_at if steady_at else 0
steady_ticks = cpu() - steady_c if steady_at else 0
byes = {}
for cid, c in calls.items():
    if c["start"] is not None:
        byes[cid] = 1
        sip.sendto(request("BYE", c["contact"], cid, c["tag"], 2, c["to"],
                           "<sip:bob@elsewhere.test>"), node)
sip.setblocking(True)
done = finals(byes, 30)
print(f"answered={answered} sent={sent} received={received} steady_s={steady_s:.2f} "
      f"steady_ticks={steady_ticks} byes={len(done)}")
