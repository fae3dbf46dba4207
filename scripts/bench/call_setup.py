#!/usr/bin/env python3
"""A minimal SIP UAC (stdlib only) that times call setup, INVITE to 180,
with microsecond resolution (SIPp's response times have 1 ms resolution).
Each call: INVITE -> 100/180/200 -> ACK -> BYE -> 200, through one node.
Usage: call_setup.py NODE_PORT USER DOMAIN CALLS [LOCAL_PORT]
Prints one setup time in ms per line."""
import re, socket, sys, time, uuid

node = ("127.0.0.1", int(sys.argv[1]))
user, domain, calls = sys.argv[2], sys.argv[3], int(sys.argv[4])
port = int(sys.argv[5]) if len(sys.argv) > 5 else 0
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", port))
sock.settimeout(5.0)
me = "127.0.0.1:%d" % sock.getsockname()[1]
SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n"

def request(method, uri, call_id, tag, cseq, to, routes=(), body=""):
    branch = "z9hG4bK" + uuid.uuid4().hex[:16]
    lines = [f"{method} {uri} SIP/2.0", f"Via: SIP/2.0/UDP {me};branch={branch};rport",
             "Max-Forwards: 70", f"From: <sip:bench@{me}>;tag={tag}", f"To: {to}",
             f"Call-ID: {call_id}", f"CSeq: {cseq} {method}", f"Contact: <sip:bench@{me}>"]
    lines += [f"Route: {r}" for r in routes]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()

def responses(cseq_method):
    while True:
        data = sock.recv(65536).decode(errors="replace")
        head = data.split("\r\n\r\n", 1)[0]
        m = re.match(r"SIP/2.0 (\d+)", head)
        if m and re.search(r"^CSeq:\s*\d+\s+" + cseq_method, head, re.M | re.I):
            yield int(m.group(1)), head

for _ in range(calls):
    call_id, tag = uuid.uuid4().hex, uuid.uuid4().hex[:8]
    to = f"<sip:{user}@{domain}>"
    t0 = time.perf_counter()
    sock.sendto(request("INVITE", f"sip:{user}@{domain}", call_id, tag, 1, to, body=SDP), node)
    setup = None
    for status, head in responses("INVITE"):
        if status == 180 and setup is None:
            setup = (time.perf_counter() - t0) * 1000
        if status >= 200:
            break
    if status != 200:
        sys.exit(f"call failed: {status}")
    to_hdr = re.search(r"^To:\s*(.*)$", head, re.M | re.I).group(1).strip()
    contact = re.search(r"^Contact:\s*<([^>]*)>", head, re.M | re.I).group(1)
    rr = re.findall(r"^Record-Route:\s*(.*)$", head, re.M | re.I)
    routes = [r.strip() for line in rr for r in line.split(",")][::-1]
    sock.sendto(request("ACK", contact, call_id, tag, 1, to_hdr, routes), node)
    sock.sendto(request("BYE", contact, call_id, tag, 2, to_hdr, routes), node)
    for status, _ in responses("BYE"):
        if status >= 200:
            break
    print(f"{setup:.3f}")
