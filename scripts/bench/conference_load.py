#!/usr/bin/env python3
"""Conference load (stdlib only): N participants call one room through one
node, each from an RTP socket of its own, then all send 20 ms PCMU packets
(a tone) for SECONDS while the node mixes; each received packet is counted.
The node is the focus (a ring of one). At the end every participant hangs
up, so the node logs the room's lateness ("conference room closed").
Usage: conference_load.py NODE_PORT N SECONDS
Prints: joined=N sent=S received=R"""
import math, re, select, socket, struct, sys, time, uuid

node = ("127.0.0.1", int(sys.argv[1]))
n, seconds = int(sys.argv[2]), float(sys.argv[3])
sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sip.bind(("127.0.0.1", 0))
sip.settimeout(5.0)
me = "127.0.0.1:%d" % sip.getsockname()[1]
ROOM = "conf-bench@example.test"

def request(method, uri, call_id, tag, cseq, to, body=""):
    branch = "z9hG4bK" + uuid.uuid4().hex[:16]
    lines = [f"{method} {uri} SIP/2.0", f"Via: SIP/2.0/UDP {me};branch={branch};rport",
             "Max-Forwards: 70", f"From: <sip:bench@example.test>;tag={tag}", f"To: {to}",
             f"Call-ID: {call_id}", f"CSeq: {cseq} {method}", f"Contact: <sip:bench@{me}>"]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()

def final(call_id):
    while True:
        text = sip.recv(65535).decode(errors="replace")
        if call_id in text and re.match(r"SIP/2.0 [2-6]", text):
            return text

calls = []
for i in range(n):
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind(("127.0.0.1", 0))
    rtp.setblocking(False)
    port = rtp.getsockname()[1]
    sdp = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
           f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
    call_id, tag = uuid.uuid4().hex, uuid.uuid4().hex[:8]
    sip.sendto(request("INVITE", f"sip:{ROOM}", call_id, tag, 1, f"<sip:{ROOM}>", sdp), node)
    ok = final(call_id)
    if not ok.startswith("SIP/2.0 200"):
        print(f"participant {i}: {ok.splitlines()[0]}", file=sys.stderr)
        break
    to = re.search(r"^To: (.*)$", ok, re.M | re.I).group(1).strip()
    contact = re.search(r"^Contact: <(.*)>", ok, re.M | re.I).group(1)
    media = int(re.search(r"^m=audio (\d+)", ok, re.M).group(1))
    sip.sendto(request("ACK", contact, call_id, tag, 1, to), node)
    calls.append((rtp, ("127.0.0.1", media), call_id, tag, to, contact))

# One 20 ms packet of a 440 Hz tone, µ-law by the G.711 formula.
def ulaw(x):
    sign = 0x80 if x < 0 else 0
    x = min(abs(x), 32635) + 0x84
    exp = max(e for e in range(8) if x & (0x80 << e) or e == 0)
    return ~(sign | (exp << 4) | ((x >> (exp + 3)) & 0x0F)) & 0xFF
payload = bytes(ulaw(int(6000 * math.sin(2 * math.pi * 440 * k / 8000))) for k in range(160))

socks = [c[0] for c in calls]
sent = received = 0
start = time.monotonic()
tick = 0
while time.monotonic() - start < seconds:
    header = struct.pack("!BBHII", 0x80, 0, tick & 0xFFFF, (tick * 160) & 0xFFFFFFFF, 0)
    for i, (rtp, to, *_rest) in enumerate(calls):
        rtp.sendto(header[:8] + struct.pack("!I", i + 1) + payload, to)
        sent += 1
    tick += 1
    due = start + tick * 0.02
    while True:
        left = due - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select(socks, [], [], left)
        for s in ready:
            try:
                while True:
                    s.recv(2048)
                    received += 1
            except BlockingIOError:
                pass

for rtp, to, call_id, tag, to_header, contact in calls:
    sip.sendto(request("BYE", contact, call_id, tag, 2, to_header), node)
    final(call_id)
print(f"joined={len(calls)} sent={sent} received={received}")
