#!/usr/bin/env python3
"""The p2psip side of scripts/bench-overlay.sh (python3 standard library only).

Starts N `p2psip node` processes on 127.0.0.1 (node 0 first, the others all at
once, each joining node 0), then, with one UDP socket as the phones of all users:

  bootstrap  time from the first start until every node's successor and
             predecessor are the true ones (ring correct), and until every
             node's finger table holds exactly the true distinct fingers
             (tables full); /status of every node is read every 0.25 s;
  idle       a 10 s quiet window: ring requests per node per second and CPU;
  put        --ops users, each REGISTERed (Expires 3600) through a random node,
             --concurrency in flight; latency from the first send to the 200;
  get        each user looked up once by an OPTIONS to sip:user@domain sent to
             a random node that is neither the user's registrar nor one of the
             key's r holders (computed from the true ring: successor of
             SHA-1(user@domain) and the next r-1 nodes): the node fetches the
             binding from the ring and proxies the OPTIONS to the contact, this
             socket, which answers 200; latency from the send to the relayed
             200. The node forwards the OPTIONS once, so the ring lookup and
             fetch are the latency, plus two loopback hops;
  churn      --churn of the nodes SIGKILLed at once; all users looked up again
             at once (t0) and --churn-wait s after the kill (t30), each time
             from a surviving node that is not the registrar, not an old or
             new holder and has not looked the user up before (a node caches
             an answer for 30 s).

Requests per operation are read from the nodes' own counters: the ring
requests they started (/status overlay.requests_out) and the SIP request
datagrams they sent, retransmissions included (/metrics), summed over the
live nodes, over the phase, divided by the operations; the OPTIONS the nodes
proxied to this socket are not counted. RSS (VmRSS, VmHWM) and CPU
(utime+stime) are read from /proc for every node. Prints one summary line and
`RESULT {json}`. Every wait is bounded.
"""
import argparse
import hashlib
import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

T1, T2 = 0.5, 4.0


def pct(xs, p):
    if not xs:
        return None
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def fmt(x, nd=1):
    return "NA" if x is None else f"{x:.{nd}f}"


def sha1_int(text):
    return int.from_bytes(hashlib.sha1(text.encode()).digest(), "big")


class Ring:
    """The true ring of a set of node addresses."""

    def __init__(self, addrs):
        self.ids = sorted((sha1_int(a), a) for a in addrs)

    def successor_index(self, key):
        for i, (nid, _) in enumerate(self.ids):
            if nid >= key:
                return i
        return 0

    def holders(self, key, r):
        i = self.successor_index(key)
        return [self.ids[(i + j) % len(self.ids)][1] for j in range(min(r, len(self.ids)))]

    def neighbours(self, addr):
        i = [a for _, a in self.ids].index(addr)
        return self.ids[(i + 1) % len(self.ids)][1], self.ids[(i - 1) % len(self.ids)][1]

    def fingers(self, addr):
        me = sha1_int(addr)
        return {self.ids[self.successor_index((me + (1 << k)) % (1 << 160))][1] for k in range(160)} - {addr}


class Node:
    def __init__(self, i, args):
        self.i = i
        self.sip = f"127.0.0.1:{args.base_port + i}"
        self.http = f"127.0.0.1:{args.base_port + 10000 + i}"
        self.proc = None
        self.alive = True

    def start(self, args, join):
        conf = os.path.join(args.tmp, f"node-{self.i}.toml")
        with open(conf, "w") as f:
            f.write(f'sip = "{self.sip}"\nhttp = "{self.http}"\ndomains = ["{args.domain}"]\n')
            f.write(f'replicas = {args.replicas}\nauth = "open"\nlog_level = "warn"\n')
            if join:
                f.write(f'join = ["{join}"]\n')
            f.write("[limits]\nrequests = 0\n")
            if args.semi_recursive:
                f.write("[ring]\nsemi_recursive = true\n")
        out = open(os.path.join(args.tmp, f"node-{self.i}.out"), "w")
        err = open(os.path.join(args.tmp, f"node-{self.i}.err"), "w")
        self.proc = subprocess.Popen([args.bin, "node", "--config", conf], stdout=out, stderr=err,
                                     stdin=subprocess.DEVNULL)

    def get(self, path, timeout=2.0):
        try:
            with urllib.request.urlopen(f"http://{self.http}{path}", timeout=timeout) as r:
                return r.read().decode()
        except Exception:
            return None

    def status(self):
        t = self.get("/status")
        try:
            return json.loads(t) if t else None
        except ValueError:
            return None

    def proc_stat(self):
        """(cpu seconds, VmRSS kB, VmHWM kB) or None."""
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                s = f.read().rsplit(")", 1)[1].split()
            cpu = (int(s[11]) + int(s[12])) / os.sysconf("SC_CLK_TCK")
            rss = hwm = 0
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1])
                    elif line.startswith("VmHWM:"):
                        hwm = int(line.split()[1])
            return cpu, rss, hwm
        except (OSError, IndexError, ValueError):
            return None


def counters(nodes, pool):
    """(ring requests started, SIP request datagrams sent) summed over the live nodes."""
    def one(n):
        st = n.status()
        ring = (st or {}).get("overlay", {}).get("requests_out", 0)
        sip = 0
        for line in (n.get("/metrics") or "").splitlines():
            if line.startswith("p2psip_sip_messages_total{") and 'direction="out"' in line \
                    and 'method="response"' not in line:
                try:
                    sip += int(float(line.rsplit(" ", 1)[1]))
                except ValueError:
                    pass
        return ring, sip
    res = list(pool.map(one, [n for n in nodes if n.alive]))
    return sum(r for r, _ in res), sum(s for _, s in res)


class Phones:
    """One UDP socket: REGISTERs and OPTIONS out with RFC 3261 Timer E/F-like
    retransmission, answers 200 to the OPTIONS the nodes proxy to it."""

    def __init__(self, args):
        self.args = args
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.proxied = 0
        self.seq = 0

    def user(self, u):
        return f"user{u:05d}"

    def register(self, u, cid):
        a, user = self.args, self.user(u)
        return (f"REGISTER sip:{a.domain} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{cid};rport\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:{user}@{a.domain}>;tag=f{cid}\r\n"
                f"To: <sip:{user}@{a.domain}>\r\nCall-ID: {cid}\r\nCSeq: 1 REGISTER\r\n"
                f"Contact: <sip:{user}@127.0.0.1:{self.port}>\r\nExpires: 3600\r\n"
                f"User-Agent: p2psip-bench-overlay\r\nContent-Length: 0\r\n\r\n").encode()

    def options(self, u, cid):
        a, user = self.args, self.user(u)
        return (f"OPTIONS sip:{user}@{a.domain} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{cid};rport\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:probe@{a.domain}>;tag=f{cid}\r\n"
                f"To: <sip:{user}@{a.domain}>\r\nCall-ID: {cid}\r\nCSeq: 1 OPTIONS\r\n"
                f"User-Agent: p2psip-bench-overlay\r\nContent-Length: 0\r\n\r\n").encode()

    def answer(self, data, src):
        """200 to a request a node proxied here (the lookup's end)."""
        head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        keep = []
        for line in head[1:]:
            name = line.split(b":", 1)[0].strip().lower()
            if name in (b"via", b"v", b"from", b"f", b"call-id", b"i", b"cseq"):
                keep.append(line)
            elif name in (b"to", b"t"):
                keep.append(line + b";tag=bench")
        self.sock.sendto(b"SIP/2.0 200 OK\r\n" + b"\r\n".join(keep) + b"\r\nContent-Length: 0\r\n\r\n", src)
        self.proxied += 1

    def run(self, jobs, make, timeout):
        """jobs: list of (user, node address). Returns {user: (status or None, ms)}."""
        out, inflight, queue = {}, {}, list(jobs)
        queue.reverse()
        conc = self.args.concurrency
        hard_end = time.monotonic() + timeout * (len(jobs) / conc + 2) + 30
        while (queue or inflight) and time.monotonic() < hard_end:
            now = time.monotonic()
            while queue and len(inflight) < conc:
                u, dest = queue.pop()
                self.seq += 1
                cid = f"b{self.seq:x}x{random.getrandbits(32):x}"
                msg = make(u, cid)
                host, port = dest.rsplit(":", 1)
                dst = (host, int(port))
                self.sock.sendto(msg, dst)
                inflight[cid] = [u, now, now + T1, T1, msg, dst]
            nxt = min([v[2] for v in inflight.values()] + [v[1] + timeout for v in inflight.values()]
                      + [now + 0.5])
            r, _, _ = select.select([self.sock], [], [], max(0.0, nxt - now))
            for _ in range(256 if r else 0):
                try:
                    data, src = self.sock.recvfrom(65535)
                except BlockingIOError:
                    break
                t = time.monotonic()
                if not data.startswith(b"SIP/2.0 "):
                    if data[:8] == b"OPTIONS ":
                        self.answer(data, src)
                    continue
                try:
                    code = int(data[8:11])
                except ValueError:
                    continue
                cid = None
                for line in data.split(b"\r\n"):
                    low = line[:8].lower()
                    if low.startswith(b"call-id:") or low.startswith(b"i:"):
                        cid = line.split(b":", 1)[1].strip().decode(errors="replace")
                        break
                if cid not in inflight:
                    continue
                v = inflight[cid]
                if code >= 200:
                    del inflight[cid]
                    out[v[0]] = (code, (t - v[1]) * 1000.0)
                else:
                    v[2] = v[1] + timeout + 1   # a provisional answer: no more retransmissions
            now = time.monotonic()
            for cid in list(inflight):
                v = inflight[cid]
                if now - v[1] >= timeout:
                    out[v[0]] = (None, None)
                    del inflight[cid]
                elif now >= v[2]:
                    self.sock.sendto(v[4], v[5])
                    v[3] = min(v[3] * 2, T2)
                    v[2] = now + v[3]
        for v in inflight.values():
            out[v[0]] = (None, None)
        return out


def summarise(label, res, results, users, elapsed):
    ok = [ms for s, ms in results.values() if s == 200]
    codes = {}
    for s, _ in results.values():
        codes[str(s)] = codes.get(str(s), 0) + 1
    res[f"{label}_ok"] = len(ok)
    res[f"{label}_p50_ms"] = pct(ok, 50)
    res[f"{label}_p99_ms"] = pct(ok, 99)
    res[f"{label}_max_ms"] = max(ok) if ok else None
    res[f"{label}_codes"] = codes
    res[f"{label}_wall_s"] = elapsed
    res[f"{label}_missing"] = sorted(u for u in users if results.get(u, (None,))[0] != 200)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--ops", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--churn", type=float, default=0.2)
    ap.add_argument("--churn-wait", type=float, default=30.0)
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--base-port", type=int, default=30000)
    ap.add_argument("--domain", default="overlay.test")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--op-timeout", type=float, default=8.0)
    ap.add_argument("--bootstrap-timeout", type=float, default=120.0)
    ap.add_argument("--idle", type=float, default=10.0)
    ap.add_argument("--semi-recursive", action="store_true",
                    help="nodes run with [ring] semi_recursive = true")
    args = ap.parse_args()
    rng = random.Random(args.seed * 1000 + args.n)
    random.seed(args.seed)
    n = args.n
    res = {"N": n, "ops": args.ops, "concurrency": args.concurrency, "replicas": args.replicas,
           "op_timeout_s": args.op_timeout}
    nodes = [Node(i, args) for i in range(n)]
    pool = ThreadPoolExecutor(max_workers=8)

    def stop_all(*_):
        for nd in nodes:
            if nd.proc and nd.proc.poll() is None:
                nd.proc.kill()
    signal.signal(signal.SIGTERM, lambda *_: (stop_all(), sys.exit(1)))

    try:
        # ------------------------------------------------------------ bootstrap
        t_start = time.monotonic()
        nodes[0].start(args, None)
        deadline = time.monotonic() + 20
        while nodes[0].status() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        for nd in nodes[1:]:
            nd.start(args, nodes[0].sip)
        res["start_all_s"] = time.monotonic() - t_start
        ring = Ring([nd.sip for nd in nodes])
        want = {nd.sip: ring.neighbours(nd.sip) for nd in nodes}
        fingers = {nd.sip: ring.fingers(nd.sip) for nd in nodes}
        t_ring = t_full = None
        deadline = time.monotonic() + args.bootstrap_timeout
        wrong = full_missing = n
        while time.monotonic() < deadline:
            sts = list(pool.map(lambda nd: nd.status(), nodes))
            now = time.monotonic() - t_start
            wrong = full_missing = 0
            for nd, st in zip(nodes, sts):
                succ, pred = want[nd.sip]
                ok = bool(st) and (st.get("successors") or [{}])[0].get("addr") == succ \
                    and (st.get("predecessor") or {}).get("addr") == pred
                wrong += not ok
                full_missing += not (st and {f.get("addr") for f in st.get("fingers") or []} == fingers[nd.sip])
            if t_ring is None and wrong == 0:
                t_ring = now
            if t_full is None and full_missing == 0:
                t_full = now
            if t_ring is not None and t_full is not None:
                break
            time.sleep(0.25)
        res["boot_ring_s"] = t_ring
        res["boot_fingers_s"] = t_full
        res["boot_wrong_at_end"] = wrong
        res["boot_fingers_missing_at_end"] = full_missing
        dead_early = [nd.i for nd in nodes if nd.proc.poll() is not None]
        if dead_early or t_ring is None:
            print(f"ring did not form: {wrong} nodes wrong, exited {dead_early}", file=sys.stderr)
            print("RESULT " + json.dumps(res), flush=True)
            return 1
        res["fingers_distinct_median"] = sorted(len(f) for f in fingers.values())[n // 2]

        # ------------------------------------------------------------ idle window
        time.sleep(2)
        c0 = counters(nodes, pool)
        cpu0 = sum((nd.proc_stat() or (0, 0, 0))[0] for nd in nodes)
        time.sleep(args.idle)
        c1 = counters(nodes, pool)
        cpu1 = sum((nd.proc_stat() or (0, 0, 0))[0] for nd in nodes)
        res["idle_ring_req_per_node_s"] = (c1[0] - c0[0]) / n / args.idle
        res["idle_sip_req_per_node_s"] = (c1[1] - c0[1]) / n / args.idle
        res["idle_cpu_ms_per_node_s"] = (cpu1 - cpu0) * 1000.0 / n / args.idle
        mem = [nd.proc_stat() or (0, 0, 0) for nd in nodes]
        res["rss_after_boot_kb_per_node"] = sum(m[1] for m in mem) / n

        phones = Phones(args)
        users = list(range(args.ops))

        def phase(label, jobs, make):
            a = counters(nodes, pool)
            proxied0 = phones.proxied
            t = time.monotonic()
            out = phones.run(jobs, make, args.op_timeout)
            el = time.monotonic() - t
            time.sleep(0.5)   # late retransmissions of the phase's own transactions are its cost
            b = counters(nodes, pool)
            summarise(label, res, out, [u for u, _ in jobs], el)
            ops = max(1, len(jobs))
            res[f"{label}_ring_req_per_op"] = (b[0] - a[0]) / ops
            res[f"{label}_sip_req_per_op"] = (b[1] - a[1] - (phones.proxied - proxied0)) / ops
            return out

        # ------------------------------------------------------------ put
        registrar = {u: rng.randrange(n) for u in users}
        phase("put", [(u, nodes[registrar[u]].sip) for u in users], phones.register)

        key = {u: sha1_int(f"{phones.user(u)}@{args.domain}") for u in users}
        holders = {u: set(ring.holders(key[u], args.replicas)) for u in users}
        asked = {u: set() for u in users}

        def pick(u, alive, extra=()):
            for _ in range(500):
                g = rng.choice(alive)
                if g.i != registrar[u] and g.sip not in holders[u] and g.sip not in extra \
                        and g.i not in asked[u]:
                    asked[u].add(g.i)
                    return (u, g.sip)
            g = rng.choice(alive)
            return (u, g.sip)

        # ------------------------------------------------------------ get
        phase("get", [pick(u, nodes) for u in users], phones.options)

        # ------------------------------------------------------------ churn
        k = int(round(args.churn * n))
        victims = rng.sample(range(n), k)
        for v in victims:
            nodes[v].proc.send_signal(signal.SIGKILL)
            nodes[v].alive = False
        t_kill = time.monotonic()
        for v in victims:
            try:
                nodes[v].proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        alive = [nd for nd in nodes if nd.alive]
        ring_after = Ring([nd.sip for nd in alive])
        dead_addrs = {nodes[v].sip for v in victims}
        new_holders = {u: set(ring_after.holders(key[u], args.replicas)) for u in users}
        res["churn_killed"] = k
        reg_dead = {u for u in users if registrar[u] in victims}
        all_holders_dead = {u for u in users if holders[u] <= dead_addrs}
        res["churn_registrar_dead"] = len(reg_dead)
        res["churn_all_holders_dead"] = len(all_holders_dead)
        res["churn_registrar_and_holders_dead"] = len(reg_dead & all_holders_dead)
        phase("churn0", [pick(u, alive, new_holders[u]) for u in users], phones.options)
        res["churn0_start_after_kill_s"] = 0.0
        wait = args.churn_wait - (time.monotonic() - t_kill)
        if wait > 0:
            time.sleep(wait)
        res["churn30_start_after_kill_s"] = time.monotonic() - t_kill
        phase("churn30", [pick(u, alive, new_holders[u]) for u in users], phones.options)
        for label in ("churn0", "churn30"):
            miss = set(res[f"{label}_missing"])
            res[f"{label}_missing_registrar_alive"] = len(miss - reg_dead)
            res[f"{label}_missing_registrar_dead"] = len(miss & reg_dead)
            res[f"{label}_missing"] = len(miss)

        # ------------------------------------------------------------ resources
        mem = [nd.proc_stat() or (0, 0, 0) for nd in alive]
        res["cpu_per_node_s"] = sum(m[0] for m in mem) / len(alive)
        res["rss_end_kb_per_node"] = sum(m[1] for m in mem) / len(alive)
        res["rss_peak_kb_per_node"] = sum(m[2] for m in mem) / len(alive)
        res["wall_total_s"] = time.monotonic() - t_start
        res["exited_unexpectedly"] = [nd.i for nd in alive if nd.proc.poll() is not None]
    finally:
        stop_all()
        for nd in nodes:
            if nd.proc:
                try:
                    nd.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
    r = res
    print(f"p2psip N={n} boot ring={fmt(r['boot_ring_s'], 2)}s fingers={fmt(r['boot_fingers_s'], 2)}s | "
          f"put ok={r['put_ok']}/{args.ops} p50={fmt(r['put_p50_ms'])} p99={fmt(r['put_p99_ms'])}ms "
          f"req/op ring={r['put_ring_req_per_op']:.1f} sip={r['put_sip_req_per_op']:.1f} | "
          f"get ok={r['get_ok']} p50={fmt(r['get_p50_ms'])} p99={fmt(r['get_p99_ms'])}ms "
          f"req/op ring={r['get_ring_req_per_op']:.1f} sip={r['get_sip_req_per_op']:.1f} | "
          f"churn{int(round(100 * args.churn))}% t0 ok={r['churn0_ok']} p50={fmt(r['churn0_p50_ms'])} "
          f"p99={fmt(r['churn0_p99_ms'])}ms missing {r['churn0_missing']} "
          f"(registrar alive {r['churn0_missing_registrar_alive']}) sip req/op={r['churn0_sip_req_per_op']:.1f}; "
          f"t+{r['churn30_start_after_kill_s']:.0f}s ok={r['churn30_ok']} p50={fmt(r['churn30_p50_ms'])} "
          f"p99={fmt(r['churn30_p99_ms'])}ms missing {r['churn30_missing']} "
          f"(registrar alive {r['churn30_missing_registrar_alive']}) | all 3 holders dead "
          f"{r['churn_all_holders_dead']}, with registrar {r['churn_registrar_and_holders_dead']} | "
          f"rss/node={r['rss_end_kb_per_node'] / 1024:.1f}MiB cpu/node={r['cpu_per_node_s'] * 1000:.0f}ms "
          f"idle={r['idle_cpu_ms_per_node_s']:.2f}ms/s {r['idle_ring_req_per_node_s']:.1f}req/s/node "
          f"wall={r['wall_total_s']:.0f}s", flush=True)
    print("RESULT " + json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
