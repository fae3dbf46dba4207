#!/usr/bin/python3
"""OpenDHT peer benchmark ("anchor") for the P2P-SIP overlay comparison.

The OpenDHT side of scripts/bench-overlay.sh, which runs it as
`opendht-anchor.py --single N ...` and reads its `RESULT {json}` line. Taken
from the project's interop kit (interop/opendht, with its README) with one
change: the idle window also counts the requests the nodes send
(`idle_msgs_per_node_per_s`, the background rate).

Run with Debian's interpreter (/usr/bin/python3), which sees python3-opendht
from /usr/lib/python3/dist-packages; a pyenv python3 usually does not.

For each N in --n (default 50,100,200) a fresh child process (same script,
--single N) starts N opendht.DhtRunner nodes bound to 127.0.0.1 only (no IPv6
socket, no peer discovery, private network id, no public bootstrap), bootstraps
nodes 1..N-1 off node 0 and measures bootstrap time, put/get, churn and
resources.  The parent prints one summary line per N and appends the summary
and the raw JSON to results.txt next to this script.

Every wait is bounded in time, every loop in count.
"""
import argparse
import datetime
import json
import os
import platform
import random
import re
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
AF_INET = socket.AF_INET          # 2
LOOPBACK = "127.0.0.1"
TARGET_K = 8                      # OpenDHT bucket size / TARGET_NODES (replication set of a put)


# --------------------------------------------------------------------------- helpers
def rss_kb():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
    return out.get("VmRSS", 0), out.get("VmHWM", 0)


def cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def pct(xs, p):
    """Nearest-rank percentile of a list (ms), None when empty."""
    if not xs:
        return None
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def fmt(x, nd=1):
    return "NA" if x is None else f"{x:.{nd}f}"


def own_udp_sockets():
    """Map this process's socket inodes onto /proc/net/udp{,6}; return
    (list of local addrs of IPv4 UDP sockets, number of IPv6 UDP sockets)."""
    inodes = set()
    fd_dir = "/proc/self/fd"
    for fd in os.listdir(fd_dir)[:100000]:
        try:
            t = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if t.startswith("socket:["):
            inodes.add(t[8:-1])
    v4, v6 = [], 0
    for path in ("/proc/self/net/udp", "/proc/self/net/udp6"):
        try:
            with open(path) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 10 or parts[9] not in inodes:
                continue
            if path.endswith("udp6"):
                v6 += 1
            else:
                hexip, hexport = parts[1].split(":")
                ip = socket.inet_ntoa(bytes.fromhex(hexip)[::-1])
                v4.append(f"{ip}:{int(hexport, 16)}")
    return v4, v6


def nic_tx_packets():
    """Sum of tx_packets of every non-loopback interface (sanity check only:
    other processes on the machine may also send)."""
    tot = 0
    base = "/sys/class/net"
    for ifc in os.listdir(base):
        if ifc == "lo":
            continue
        try:
            with open(os.path.join(base, ifc, "statistics", "tx_packets")) as f:
                tot += int(f.read().strip())
        except OSError:
            pass
    return tot


class Waiter:
    """Counts outstanding async ops; bounded concurrency via a semaphore."""

    def __init__(self, concurrency):
        self.sem = threading.BoundedSemaphore(concurrency)
        self.cv = threading.Condition()
        self.pending = 0

    def begin(self, timeout):
        if not self.sem.acquire(timeout=timeout):
            return False
        with self.cv:
            self.pending += 1
        return True

    def end(self):
        with self.cv:
            self.pending -= 1
            self.cv.notify_all()
        self.sem.release()

    def wait_all(self, timeout):
        deadline = time.monotonic() + timeout
        with self.cv:
            while self.pending > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cv.wait(timeout=min(left, 1.0))
        return True


# --------------------------------------------------------------------------- one N
def run_single(args):
    import opendht as dht

    n = args.single
    rng = random.Random(args.seed * 1000 + n)
    res = {"N": n, "concurrency": args.concurrency, "ops": args.ops,
           "value_bytes": args.value_bytes, "base_port": args.base_port}
    rss0, _ = rss_kb()
    cpu0 = cpu_s()
    tx0 = nic_tx_packets()
    res["rss_baseline_kb"] = rss0

    # ---------------------------------------------------------------- start + bootstrap
    nodes = []
    t_start = time.perf_counter()
    for i in range(n):
        cfg = dht.DhtConfig()
        cfg.setNetwork(args.netid)          # private network id: ignore/ignored by the public DHT
        cfg.setRateLimit(-1, -1)            # all peers share 127.0.0.1: per-IP limiter would throttle
        cfg.setMaintainStorage(False)       # no storage hand-off on shutdown (abrupt churn)
        cfg.setBootstrapMode(False)
        # DhtRunnerConfig.peer_discovery / peer_publish default to false and are
        # not exposed by the 2.4.12 bindings: no multicast discovery.
        r = dht.DhtRunner()
        # ipv6="" -> no IPv6 socket at all (bind6 stays empty); IPv4 on loopback only.
        r.run(port=args.base_port + i, ipv4=LOOPBACK, ipv6="", config=cfg)
        b4 = r.getBound(AF_INET)
        if b4.getPort() != args.base_port + i or not b4.isLoopback():
            raise SystemExit(f"node {i}: bad bind {b4} (port busy?)")
        if i > 0:
            # numeric host, no DNS, no default public bootstrap anywhere
            r.bootstrap(LOOPBACK, str(args.base_port))
        nodes.append(r)
    res["start_all_s"] = time.perf_counter() - t_start
    v4, v6 = own_udp_sockets()
    res["udp4_sockets"] = len(v4)
    res["udp4_non_loopback"] = [a for a in v4 if not a.startswith("127.")]
    res["udp6_sockets"] = v6

    def table(r):
        log = r.getRoutingTablesLog(AF_INET)
        known = sum(1 for ln in log.splitlines()
                    if ln.startswith("    Node ") and "[expired]" not in ln)
        return known, log.count("[good]")

    # Criteria (polled every --poll s on every node's IPv4 routing table):
    #   connected: every node has >=1 good node (OpenDHT's own NodeStatus::Connected);
    #   k-full:    every node has >= min(8, N-1) non-expired nodes (good or dubious)
    #              in its routing table, 8 = OpenDHT bucket size / TARGET_NODES.
    want = min(TARGET_K, n - 1)
    t_conn = t_full = None
    tabs = []
    deadline = time.monotonic() + args.bootstrap_timeout
    for _ in range(100000):
        tabs = [table(r) for r in nodes]
        now = time.perf_counter() - t_start
        if t_conn is None and min(g for _, g in tabs) >= 1:
            t_conn = now
        if t_full is None and min(k for k, _ in tabs) >= want:
            t_full = now
        if (t_conn is not None and t_full is not None) or time.monotonic() > deadline:
            break
        time.sleep(args.poll)
    res["boot_connected_s"] = t_conn
    res["boot_k_s"] = t_full
    res["boot_k"] = want
    res["known_min"] = min(k for k, _ in tabs)
    res["good_min"] = min(g for _, g in tabs)
    if args.settle > 0:
        time.sleep(args.settle)
    tabs = [table(r) for r in nodes]
    res["known_median_settled"] = statistics.median(k for k, _ in tabs)
    res["good_median_settled"] = statistics.median(g for _, g in tabs)

    def msg_out():
        tot = [0, 0, 0, 0, 0]
        for idx, r in enumerate(nodes):
            if idx in dead:
                continue
            st = r.getNodeMessageStats()
            for j in range(min(5, len(st))):
                tot[j] += st[j]
        return tot

    dead = set()

    # idle cost after bootstrap: CPU and requests sent (the background rate)
    msg_out()                      # the node stats reset on each read
    c_a = cpu_s()
    time.sleep(args.idle)
    res["idle_cpu_ms_per_node_per_s"] = (cpu_s() - c_a) * 1000.0 / n / args.idle
    res["idle_msgs_per_node_per_s"] = sum(msg_out()) / n / args.idle
    res["rss_after_boot_kb"] = rss_kb()[0]

    # ---------------------------------------------------------------- put phase
    keys, vals, owner = [], [], []
    for i in range(args.ops):
        aor = f"sip:user{i:05d}-n{n}@overlay.test"
        contact = (f"<sip:user{i:05d}@127.0.0.1:{5060 + i % 1000};transport=udp>;expires=600;"
                   f"+sip.instance=\"<urn:uuid:{rng.getrandbits(128):032x}>\";reg-id=1;q=1.0")
        data = (aor + "|" + contact).encode()
        data = (data + b"#" * args.value_bytes)[:args.value_bytes]
        keys.append(dht.InfoHash.get(aor))
        vals.append(data)
    m0 = msg_out()
    put_lat, put_ok = [], [0]
    w = Waiter(args.concurrency)
    lock = threading.Lock()
    t_phase = time.perf_counter()
    c_phase = cpu_s()
    for i in range(args.ops):
        src = rng.randrange(n)
        owner.append(src)
        if not w.begin(args.op_timeout):
            break
        t0 = time.perf_counter()

        def done(ok, _nodes, t0=t0):
            dt = (time.perf_counter() - t0) * 1000.0
            with lock:
                put_lat.append(dt)
                if ok:
                    put_ok[0] += 1
            w.end()
        nodes[src].put(keys[i], dht.Value(vals[i]), done_cb=done)
    w.wait_all(args.op_timeout * 2)
    res["put_wall_s"] = time.perf_counter() - t_phase
    res["put_cpu_s"] = cpu_s() - c_phase
    res["put_ok"] = put_ok[0]
    res["put_p50_ms"] = pct(put_lat, 50)
    res["put_p99_ms"] = pct(put_lat, 99)
    m1 = msg_out()
    res["put_msgs_out_per_op"] = sum(m1) / max(1, args.ops)   # stats reset on each read

    # ---------------------------------------------------------------- get phase
    def storage_map(alive):
        """node index -> set of key hex strings it stores (incl. its own puts)."""
        m = {}
        for idx in alive:
            m[idx] = set(re.findall(r"^Storage ([0-9a-f]{40}) ", nodes[idx].getStorageLog(), re.M))
        return m

    def get_pass(label, alive, exclude_owner):
        # getter = random alive node that neither put the key nor stores a copy
        # (so every get is a remote lookup), fallback after 200 tries.
        smap = storage_map(alive)
        res[f"{label}_replicas_alive_mean"] = sum(
            sum(1 for idx in alive if keys[i].toString().decode() in smap[idx]) for i in range(args.ops)) / args.ops
        fallback = 0
        first_lat, done_lat = [], []
        okc = [0]
        wt = Waiter(args.concurrency)
        lk = threading.Lock()
        tp = time.perf_counter()
        cp = cpu_s()
        for i in range(args.ops):
            kh = keys[i].toString().decode()
            for _try in range(200):
                g = rng.choice(alive)
                if kh not in smap[g] and (not exclude_owner or g != owner[i]):
                    break
            else:
                fallback += 1
            if not wt.begin(args.op_timeout):
                break
            st = {"t0": time.perf_counter(), "first": None}
            want_v = vals[i]

            def gcb(v, st=st, want_v=want_v):
                if st["first"] is None and v.data == want_v:
                    st["first"] = (time.perf_counter() - st["t0"]) * 1000.0
                return True   # keep going: we also time full search completion

            def dcb(ok, _nodes, st=st):
                dt = (time.perf_counter() - st["t0"]) * 1000.0
                with lk:
                    done_lat.append(dt)
                    if st["first"] is not None:
                        okc[0] += 1
                        first_lat.append(st["first"])
                wt.end()
            nodes[g].get(keys[i], get_cb=gcb, done_cb=dcb)
        wt.wait_all(args.op_timeout * 2)
        res[f"{label}_wall_s"] = time.perf_counter() - tp
        res[f"{label}_cpu_s"] = cpu_s() - cp
        res[f"{label}_ok"] = okc[0]
        res[f"{label}_local_fallback"] = fallback
        res[f"{label}_first_p50_ms"] = pct(first_lat, 50)
        res[f"{label}_first_p99_ms"] = pct(first_lat, 99)
        res[f"{label}_done_p50_ms"] = pct(done_lat, 50)
        res[f"{label}_done_p99_ms"] = pct(done_lat, 99)

    alive = list(range(n))
    get_pass("get", alive, True)
    m2 = msg_out()
    res["get_msgs_out_per_op"] = sum(m2) / max(1, args.ops)

    # ---------------------------------------------------------------- churn
    k = int(round(args.churn * n))
    victims = rng.sample(range(n), k)
    t_kill = time.perf_counter()
    for v in victims:
        # join() without shutdown(): stop the socket + threads, drop state,
        # no goodbye, no storage hand-off (maintain_storage=False).
        nodes[v].join()
        dead.add(v)
    res["churn_killed"] = k
    res["churn_kill_s"] = time.perf_counter() - t_kill
    alive = [i for i in range(n) if i not in dead]
    get_pass("churn0", alive, False)
    res["churn0_start_after_kill_s"] = 0.0
    wait = args.churn_wait - (time.perf_counter() - t_kill)
    if wait > 0:
        time.sleep(wait)
    res["churn30_start_after_kill_s"] = time.perf_counter() - t_kill
    get_pass("churn30", alive, False)

    # ---------------------------------------------------------------- resources
    rss_end, hwm = rss_kb()
    res["rss_end_kb"] = rss_end
    res["rss_peak_kb"] = hwm
    res["rss_per_node_kb"] = (hwm - rss0) / n
    res["cpu_total_s"] = cpu_s() - cpu0
    res["cpu_per_node_s"] = res["cpu_total_s"] / n
    res["threads"] = threading.active_count()
    try:
        res["os_threads"] = len(os.listdir("/proc/self/task"))
    except OSError:
        res["os_threads"] = None
    res["wall_total_s"] = time.perf_counter() - t_start

    for i, r in enumerate(nodes):
        if i not in dead:
            r.join()
    res["nic_tx_packets_delta"] = nic_tx_packets() - tx0
    print("RESULT " + json.dumps(res), flush=True)
    sys.stdout.flush()
    os._exit(0)   # avoid binding destructors racing at interpreter exit


# --------------------------------------------------------------------------- driver
def summary_line(r):
    ops = r["ops"]
    return (
        f"N={r['N']} boot(>=1 good)={fmt(r['boot_connected_s'],2)}s boot(>={r['boot_k']} known)={fmt(r['boot_k_s'],2)}s "
        f"table med known={r['known_median_settled']} good={r['good_median_settled']} | "
        f"put ok={r['put_ok']}/{ops} p50={fmt(r['put_p50_ms'])}ms p99={fmt(r['put_p99_ms'])}ms | "
        f"get ok={r['get_ok']}/{ops} first p50={fmt(r['get_first_p50_ms'])}ms p99={fmt(r['get_first_p99_ms'])}ms "
        f"done p50={fmt(r['get_done_p50_ms'])}ms p99={fmt(r['get_done_p99_ms'])}ms | "
        f"churn{int(round(r['churn_killed']*100/r['N']))}% t0 ok={r['churn0_ok']}/{ops} first p50={fmt(r['churn0_first_p50_ms'])} "
        f"p99={fmt(r['churn0_first_p99_ms'])} done p50={fmt(r['churn0_done_p50_ms'])} p99={fmt(r['churn0_done_p99_ms'])}ms; "
        f"t+{r['churn30_start_after_kill_s']:.0f}s ok={r['churn30_ok']}/{ops} first p50={fmt(r['churn30_first_p50_ms'])} "
        f"p99={fmt(r['churn30_first_p99_ms'])} done p50={fmt(r['churn30_done_p50_ms'])} p99={fmt(r['churn30_done_p99_ms'])}ms | "
        f"rss/node={r['rss_per_node_kb']/1024:.2f}MiB (peak {r['rss_peak_kb']/1024:.0f}MiB) "
        f"cpu/node={r['cpu_per_node_s']*1000:.0f}ms idle={r['idle_cpu_ms_per_node_per_s']:.2f}ms/s/node "
        f"msgs/put={r['put_msgs_out_per_op']:.1f} msgs/get={r['get_msgs_out_per_op']:.1f} wall={r['wall_total_s']:.0f}s"
    )


def versions():
    v = {"python": sys.executable + " " + platform.python_version(),
         "kernel": platform.release(), "nproc": os.cpu_count()}
    for pkg in ("python3-opendht", "libopendht2", "dhtnode"):
        try:
            v[pkg] = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True,
                                    text=True, timeout=10).stdout.strip() or "?"
        except Exception:
            v[pkg] = "?"
    try:
        with open("/etc/debian_version") as f:
            v["debian"] = f.read().strip()
    except OSError:
        pass
    return v


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", default="50,100,200", help="comma-separated node counts")
    ap.add_argument("--single", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--ops", type=int, default=1000, help="puts (and gets per pass)")
    ap.add_argument("--value-bytes", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=16, help="async ops in flight")
    ap.add_argument("--churn", type=float, default=0.20, help="fraction of nodes killed at once")
    ap.add_argument("--churn-wait", type=float, default=30.0, help="s after kill for the 2nd get pass")
    ap.add_argument("--base-port", type=int, default=24000, help="node i binds 127.0.0.1:base+i")
    ap.add_argument("--netid", type=int, default=0x51D0, help="private OpenDHT network id")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--poll", type=float, default=0.25)
    ap.add_argument("--bootstrap-timeout", type=float, default=120.0)
    ap.add_argument("--settle", type=float, default=5.0, help="s to wait after the bootstrap criterion")
    ap.add_argument("--idle", type=float, default=10.0, help="s idle window for CPU/node")
    ap.add_argument("--op-timeout", type=float, default=60.0)
    ap.add_argument("--child-timeout", type=float, default=900.0)
    ap.add_argument("--out", default=os.path.join(HERE, "results.txt"))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    if args.single:
        return run_single(args)

    vers = versions()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    hdr = (f"# {stamp} OpenDHT anchor: python3-opendht {vers.get('python3-opendht')} libopendht2 "
           f"{vers.get('libopendht2')} dhtnode {vers.get('dhtnode')}; {vers['python']}; Debian "
           f"{vers.get('debian')}; kernel {vers['kernel']}; nproc {vers['nproc']}; cmd: "
           + " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]))
    print(hdr, flush=True)
    lines = [hdr]
    for n in [int(x) for x in args.n.split(",") if x.strip()][:20]:
        cmd = [sys.executable, os.path.abspath(__file__), "--single", str(n)] + [
            a for a in sys.argv[1:]]
        # strip parent-only --n value from the child command line
        clean, skip = [], False
        for a in cmd:
            if skip:
                skip = False
                continue
            if a == "--n":
                skip = True
                continue
            if a.startswith("--n="):
                continue
            clean.append(a)
        try:
            p = subprocess.run(clean, capture_output=True, text=True, timeout=args.child_timeout)
            out, err, rc = p.stdout, p.stderr, p.returncode
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            err, rc = "child timeout", -1
        r = None
        for line in out.splitlines():
            if line.startswith("RESULT "):
                r = json.loads(line[7:])
        if r is None:
            msg = f"N={n} FAILED rc={rc} stderr tail: {err[-800:]!r}"
            print(msg, flush=True)
            lines.append(msg)
            continue
        s = summary_line(r)
        print(s, flush=True)
        lines.append(s)
        lines.append("#json " + json.dumps(r))
    if not args.no_write:
        with open(args.out, "a") as f:
            f.write("\n".join(lines) + "\n\n")


if __name__ == "__main__":
    main()
