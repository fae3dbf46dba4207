#!/usr/bin/env python3
"""The figures of scripts/bench-overlay.sh side by side: reads the RESULT lines
of overlay_p2psip.py and opendht-anchor.py from the run's output and prints one
table with the ratio p2psip / OpenDHT (standard library only)."""
import json
import sys


def load(path):
    p2p = dht = None
    with open(path) as f:
        for line in f:
            if not line.startswith("RESULT "):
                continue
            r = json.loads(line[7:])
            if "boot_ring_s" in r:
                p2p = r
            elif "boot_k_s" in r:
                dht = r
    return p2p, dht


def num(x):
    return x if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def main():
    p, d = load(sys.argv[1])
    if not p or not d:
        print("# no side-by-side table: a peer has no RESULT line")
        return 0
    ms = 1000.0
    rows = [
        ("bootstrap: ring correct / tables full (s)", p.get("boot_ring_s"), d.get("boot_k_s")),
        ("bootstrap: p2psip finger tables full (s)", p.get("boot_fingers_s"), None),
        ("put (REGISTER) p50 ms", p.get("put_p50_ms"), d.get("put_p50_ms")),
        ("put (REGISTER) p99 ms", p.get("put_p99_ms"), d.get("put_p99_ms")),
        ("put ok", p.get("put_ok"), d.get("put_ok")),
        ("put requests/op (p2psip: SIP datagrams)", p.get("put_sip_req_per_op"), d.get("put_msgs_out_per_op")),
        ("put ring requests/op (p2psip)", p.get("put_ring_req_per_op"), None),
        ("lookup p50 ms (OpenDHT: first answer)", p.get("get_p50_ms"), d.get("get_first_p50_ms")),
        ("lookup p99 ms (OpenDHT: first answer)", p.get("get_p99_ms"), d.get("get_first_p99_ms")),
        ("lookup ok", p.get("get_ok"), d.get("get_ok")),
        ("lookup requests/op (p2psip: SIP datagrams)", p.get("get_sip_req_per_op"), d.get("get_msgs_out_per_op")),
        ("lookup ring requests/op (p2psip)", p.get("get_ring_req_per_op"), None),
        ("churn t0: found", p.get("churn0_ok"), d.get("churn0_ok")),
        ("churn t0: p50 ms", p.get("churn0_p50_ms"), d.get("churn0_first_p50_ms")),
        ("churn t0: p99 ms", p.get("churn0_p99_ms"), d.get("churn0_first_p99_ms")),
        ("churn t0: requests/op (p2psip: SIP datagrams)", p.get("churn0_sip_req_per_op"), None),
        ("churn t0: ring requests/op (p2psip)", p.get("churn0_ring_req_per_op"), None),
        ("churn t0: missing, registrar alive (p2psip)", p.get("churn0_missing_registrar_alive"), None),
        ("churn t+30: found", p.get("churn30_ok"), d.get("churn30_ok")),
        ("churn t+30: p50 ms", p.get("churn30_p50_ms"), d.get("churn30_first_p50_ms")),
        ("churn t+30: p99 ms", p.get("churn30_p99_ms"), d.get("churn30_first_p99_ms")),
        ("churn t+30: requests/op (p2psip: SIP datagrams)", p.get("churn30_sip_req_per_op"), None),
        ("churn t+30: missing, registrar alive (p2psip)", p.get("churn30_missing_registrar_alive"), None),
        ("users whose r holders all died (p2psip)", p.get("churn_all_holders_dead"), None),
        ("... and their registrar too (p2psip)", p.get("churn_registrar_and_holders_dead"), None),
        ("idle requests per node per s", p.get("idle_ring_req_per_node_s"), d.get("idle_msgs_per_node_per_s")),
        ("idle CPU ms per node per s", p.get("idle_cpu_ms_per_node_s"), d.get("idle_cpu_ms_per_node_per_s")),
        ("RSS per node MiB (OpenDHT: peak increase / N)",
         (p.get("rss_end_kb_per_node") or 0) / 1024, (d.get("rss_per_node_kb") or 0) / 1024),
        ("CPU per node, whole run, ms", (p.get("cpu_per_node_s") or 0) * ms, (d.get("cpu_per_node_s") or 0) * ms),
    ]
    print(f"\n== N={p.get('N')}: p2psip beside OpenDHT, same run")
    print(f"  {'figure':<50} {'p2psip':>10} {'OpenDHT':>10} {'ratio':>7}")
    for name, a, b in rows:
        fa = "-" if num(a) is None else f"{a:.2f}".rstrip("0").rstrip(".")
        fb = "-" if num(b) is None else f"{b:.2f}".rstrip("0").rstrip(".")
        ratio = f"{a / b:.2f}" if num(a) is not None and num(b) else ""
        print(f"  {name:<50} {fa:>10} {fb:>10} {ratio:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
