#!/usr/bin/env python3
"""Summariser for scripts/bench-node.sh (python3 standard library only).

  summarise.py line --stf F --kind K --phase P --server S --rate R --n N --ticks T --hz HZ
                    --wall SECS --rc RC --stamp STAMP      -> one raw key=value line
  summarise.py pretty  < one raw line                       -> one human line
  summarise.py table   < raw lines                          -> table, ratios, highest clean rates

"OK" follows the shared interop bench.sh: 0 failed, 0 retransmissions and an achieved rate
(successful calls / elapsed) of at least 95% of the offered one. Elapsed is taken from the
SIPp statistics file (StartTime -> CurrentTime, microseconds), falling back to wall time.
"""
import argparse
import csv
import sys

SERVERS = ("kamailio", "p2psip")


def epoch(field):
    # SIPp writes "YYYY-MM-DD\tHH:MM:SS.uuuuuu\tEPOCH.uuuuuu"
    try:
        return float(field.split("\t")[-1])
    except (ValueError, IndexError):
        return None


def line(a):
    d = {"kind": a.kind, "phase": a.phase, "server": a.server, "rate": a.rate, "n": a.n,
         "ticks": a.ticks, "run": a.stamp}
    ok = failed = retr = 0
    gen = 0.0
    elapsed = None
    try:
        rows = [r for r in csv.reader(open(a.stf), delimiter=";") if r]
        h, last = rows[0], rows[-1]
        g = lambda k: last[h.index(k)]
        ok, failed = int(g("SuccessfulCall(C)")), int(g("FailedCall(C)"))
        retr = int(g("Retransmissions(C)"))
        gen = float(g("CallRate(C)"))
        t0, t1 = epoch(g("StartTime")), epoch(g("CurrentTime"))
        if t0 and t1 and t1 > t0:
            elapsed = t1 - t0
    except (OSError, IndexError, ValueError):
        pass
    if elapsed is None:
        elapsed = a.wall
    done = ok + failed
    cpu_ms = a.ticks * 1000.0 / a.hz
    per1000 = cpu_ms / (done / 1000.0) if done else float("nan")
    achieved = ok / elapsed if elapsed else 0.0
    verdict = "OK" if (failed == 0 and retr == 0 and done > 0 and achieved >= 0.95 * a.rate) else "SATURATED"
    note = []
    if done < a.n:
        note.append(f"unfinished({a.n - done})")
    if a.drops:
        note.append(f"server_udp_drops={a.drops}")
    if a.client_drops:
        note.append(f"sipp_udp_drops={a.client_drops}")
    if a.rc not in (0,):
        note.append(f"sipp_rc={a.rc}")
    if gen < 0.95 * a.rate and failed == 0 and retr == 0:
        note.append("sipp-limited")
    d.update(ok=ok, failed=failed, retrans=retr, cpu_ms=round(cpu_ms), cpu_ms_per_1000=round(per1000, 1),
             sipp_gen=round(gen, 1), achieved=round(achieved), elapsed=round(elapsed, 2),
             wall=round(a.wall, 2), verdict=verdict, note=",".join(note) or "-")
    print(" ".join(f"{k}={v}" for k, v in d.items()))


def parse(text):
    out = []
    for raw in text.splitlines():
        raw = raw.strip()
        if not raw or raw.startswith("#"):
            continue
        d = dict(kv.split("=", 1) for kv in raw.split() if "=" in kv)
        for k in ("rate", "n", "ticks", "ok", "failed", "retrans", "cpu_ms", "achieved"):
            d[k] = int(float(d[k]))
        d["cpu_ms_per_1000"] = float(d["cpu_ms_per_1000"])
        out.append(d)
    return out


HEAD = ("kind", "rate", "server", "phase", "n", "cpu_ms_per_1000", "ok", "failed", "retrans",
        "achieved", "verdict", "note")
FMT = "{:<13} {:>6} {:<8} {:<5} {:>6} {:>15} {:>6} {:>6} {:>7} {:>8}  {:<9} {}"


def fmt_row(d):
    return FMT.format(d["kind"], d["rate"], d["server"], d["phase"], d["n"], f'{d["cpu_ms_per_1000"]:.1f}',
                      d["ok"], d["failed"], d["retrans"], d["achieved"], d["verdict"], d["note"])


def pretty():
    for d in parse(sys.stdin.read()):
        print(fmt_row(d), flush=True)


def pooled(runs):
    """CPU ms per 1,000 over several runs: total CPU / total transactions."""
    done = sum(d["ok"] + d["failed"] for d in runs)
    return sum(d["cpu_ms"] for d in runs) * 1000.0 / done if done else float("nan")


def table():
    rows = parse(sys.stdin.read())
    invalid = [d for d in rows if "INVALID" in d]
    rows = [d for d in rows if "INVALID" not in d]
    for d in invalid:
        print(f'!! left out (a benchmark process exited during it): {d["kind"]} {d["rate"]}/s {d["server"]}')
    order = {"register": 0, "call": 1, "register_auth": 2}
    key = lambda d: (order.get(d["kind"], 9), d["phase"] != "fixed", d["rate"])
    rows.sort(key=lambda d: key(d) + (SERVERS.index(d["server"]) if d["server"] in SERVERS else 9,))

    print("every run:")
    print(FMT.format(*HEAD))
    for d in rows:
        print(fmt_row(d))

    print("\nside by side (CPU ms per 1,000 transactions, pooled over the runs of a rate: total CPU /"
          " total transactions; [min-max] of single runs; verdicts OK/runs; ratio = p2psip/kamailio)")
    w = "{:<13} {:>6} {:<5} | {:>22} {:>6} | {:>22} {:>6} | {:>5}"
    print(w.format("kind", "rate", "phase", "kamailio cpu", "OK", "p2psip cpu", "OK", "ratio"))
    groups = []
    for d in rows:
        g = (d["kind"], d["rate"], d["phase"])
        if g not in groups:
            groups.append(g)
    totals = {}
    for kind, rate, phase in groups:
        cells = []
        vals = {}
        for s in SERVERS:
            runs = [d for d in rows if (d["kind"], d["rate"], d["phase"], d["server"]) == (kind, rate, phase, s)]
            if not runs:
                cells += ["-", "-"]
                continue
            v = pooled(runs)
            vals[s] = v
            if phase == "fixed":
                totals.setdefault((kind, s), []).extend(runs)
            per = [d["cpu_ms_per_1000"] for d in runs]
            spread = f" [{min(per):.1f}-{max(per):.1f}]" if len(runs) > 1 else ""
            cells += [f"{v:.1f}{spread}", f'{sum(d["verdict"] == "OK" for d in runs)}/{len(runs)}']
        ratio = f'{vals["p2psip"] / vals["kamailio"]:.2f}' if len(vals) == 2 and vals["kamailio"] > 0 else "-"
        print(w.format(kind, rate, phase, *cells, ratio))

    print("\nratio p2psip/kamailio over all fixed-rate runs of a kind (below 1.00 = p2psip uses less CPU):")
    for kind in ("register", "call", "register_auth"):
        if all((kind, s) in totals for s in SERVERS):
            k, p = pooled(totals[(kind, "kamailio")]), pooled(totals[(kind, "p2psip")])
            print(f"  {kind:<13} p2psip {p:.1f} / kamailio {k:.1f} ms per 1,000 = {p / k:.2f}")

    print("\nhighest clean rate (OK per bench.sh: 0 failed, 0 retrans, achieved >= 95% offered;"
          " a rate counts as clean when every run at it was OK)")
    for kind in ("register", "call", "register_auth"):
        for s in SERVERS:
            mine = [d for d in rows if d["kind"] == kind and d["server"] == s]
            if not mine:
                continue
            rates = sorted({d["rate"] for d in mine})
            bad = [r for r in rates if any(d["verdict"] != "OK" for d in mine if d["rate"] == r)]
            clean = [r for r in rates if r not in bad]
            txt = f"{max(clean)}/s" if clean else "none"
            if not bad:
                txt += f" (every tested rate OK; limit not reached at {rates[-1]}/s)"
            else:
                fb = next(d for d in mine if d["rate"] == bad[0] and d["verdict"] != "OK")
                why = f"achieved {fb['achieved']}/s, failed {fb['failed']}, retrans {fb['retrans']}"
                if fb["note"] != "-":
                    why += ", " + fb["note"]
                txt += f" (first rate not OK: {bad[0]}/s: {why})"
                if clean and max(clean) > bad[0]:
                    txt += "; OK again above it"
            print(f"  {kind:<8} {s:<8} {txt}")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    l = sub.add_parser("line")
    for k in ("stf", "kind", "phase", "server", "stamp"):
        l.add_argument("--" + k, required=True)
    for k in ("rate", "n", "ticks", "hz", "rc", "drops", "client-drops"):
        l.add_argument("--" + k, type=int, required=True)
    l.add_argument("--wall", type=float, required=True)
    sub.add_parser("pretty")
    sub.add_parser("table")
    a = ap.parse_args()
    {"line": lambda: line(a), "pretty": pretty, "table": table}[a.cmd]()


if __name__ == "__main__":
    main()
