//! Chord ring benchmark in the deterministic simulator.
//!
//! For each network size: build the ring, store one item per node, run a
//! measurement window with a steady lookup load, then crash a fifth of the
//! nodes. Prints a table of hops (beside Chord's ½·log2 N), messages per node
//! per second (beside the P2P-SIP estimate M of slide 18), correctness and
//! items lost; optionally writes the "## Ring (simulator)" section of
//! docs/BENCHMARKS.md and the hops plot docs/ring-hops.svg.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use p2psip::ring::sim::{LookupStats, Sim, SimConfig};
use p2psip::ring::{Item, NodeId, RingEvent};

#[derive(Parser, Debug)]
#[command(about = "Chord ring simulator benchmark")]
pub(crate) struct Args {
    /// Network sizes.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    nodes: Vec<usize>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Time between two joins while the network grows, in ms.
    #[arg(long, default_value_t = 5)]
    join_spacing_ms: u64,
    /// Settling time after the last join, in s.
    #[arg(long, default_value_t = 60)]
    settle_secs: u64,
    /// Measurement window, in s.
    #[arg(long, default_value_t = 60)]
    window_secs: u64,
    /// Lookups per node per second during the window (the slide's c).
    #[arg(long, default_value_t = 0.1)]
    lookup_rate: f64,
    /// Fraction of nodes crashed at once after the window.
    #[arg(long, default_value_t = 0.2)]
    crash: f64,
    /// Write the "## Ring (simulator)" section into this Markdown file.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Draw the hops plot into this SVG file.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// The command line to quote in the Markdown.
    #[arg(long, default_value = "scripts/bench-ring.sh")]
    command: String,
    /// Machine description to quote in the Markdown.
    #[arg(long, default_value = "")]
    machine: String,
    /// Continuous churn instead: for each N, one settled ring through one
    /// phase per session time (warm-up, then the window); `--markdown`
    /// writes the "## Ring under continuous churn (simulator)" section and
    /// `--svg` its plot.
    #[arg(long)]
    churn: bool,
    /// Median session times of the churn phases, in minutes, in this order.
    #[arg(long, value_delimiter = ',', default_value = "60,10,1")]
    sessions: Vec<f64>,
    /// Churn before each measured window, in s.
    #[arg(long, default_value_t = 60)]
    warmup_secs: u64,
    /// Share of departures that are crashes (the others leave gracefully).
    #[arg(long, default_value_t = 0.5)]
    crash_share: f64,
    /// With `--churn`: simulate nothing, redraw `--svg` from the output
    /// (its last line, the JSON) of an earlier churn run saved in this file.
    #[arg(long)]
    replot: Option<PathBuf>,
    /// How fast a new node is useful instead: in a settled ring of each N,
    /// this many nodes join one after another (`join.rs`); 0: off.
    #[arg(long, default_value_t = 0)]
    join_trials: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
struct Row {
    n: usize,
    consistent_after_settle: bool,
    window: LookupStats,
    half_log2_n: f64,
    msgs_per_node_s: f64,
    estimate_m: f64,
    after_crash: LookupStats,
    items: usize,
    items_doomed: usize,
    items_lost: usize,
    wall_secs: f64,
    events_virtual_secs: f64,
}

mod churn;
mod join;

fn main() {
    let args = Args::parse();
    if args.churn {
        return churn::main(&args);
    }
    if args.join_trials > 0 {
        return join::main(&args);
    }
    let mut rows = Vec::new();
    println!(
        "{:>6} | {:>9} {:>9} {:>10} | {:>12} {:>10} | {:>11} {:>9} | {:>12} | {:>7}",
        "N",
        "hops mean",
        "hops p99",
        "½·log2 N",
        "msgs/node/s",
        "M (est.)",
        "correct",
        "after crash",
        "items lost",
        "wall s"
    );
    for &n in &args.nodes {
        let row = run(&args, n);
        println!(
            "{:>6} | {:>9.2} {:>9} {:>10.2} | {:>12.2} {:>10.2} | {:>11} {:>9} | {:>5} of {:>4} | {:>7.1}",
            row.n,
            row.window.hops_mean,
            row.window.hops_p99,
            row.half_log2_n,
            row.msgs_per_node_s,
            row.estimate_m,
            format!("{}/{}", row.window.correct, row.window.count),
            format!("{}/{}", row.after_crash.correct, row.after_crash.count),
            row.items_lost,
            row.items - row.items_doomed,
            row.wall_secs
        );
        rows.push(row);
    }
    println!("{}", serde_json::to_string(&rows).expect("json"));
    if let Some(path) = &args.svg {
        std::fs::write(path, svg(&rows)).expect("write svg");
    }
    if let Some(path) = &args.markdown {
        write_markdown(path, &args, &rows);
    }
}

/// The P2P-SIP message estimate (slide 18), in messages per node per second:
/// M = r_s + r_f·(log N)² + c·log N + (k/t)·log N + (log N)²/N, log base 2.
/// Every overlay request is answered, so each term counts 2 messages per hop.
fn estimate(n: usize, args: &Args, period: f64, finger_period: f64) -> f64 {
    let log = (n as f64).log2();
    // Stabilize (GetPredecessor + Notify) and check-predecessor (Ping), each
    // a request and a response, once per period.
    let r_s = 3.0 * 2.0 / period;
    // One distinct finger refreshed per finger period: a whole table of log N
    // fingers every log N periods, each a lookup of ~½·log N hops.
    let r_f = 1.0 / (log * finger_period);
    let fingers = r_f * log * (0.5 * log) * 2.0;
    let calls = args.lookup_rate * 0.5 * log * 2.0;
    // No registrations refreshed in the window (k = 0); joins/leaves not
    // counted in the window either: the last term is shown as in the slide.
    let churn = log * log / n as f64;
    r_s + fingers + calls + churn
}

pub(crate) fn item(sim: &Sim, k: usize) -> Item {
    Item {
        key: NodeId::of_key(&format!("user{k}@overlay.test")),
        name: format!("sip:user{k}@192.0.2.1"),
        kind: "binding".into(),
        value: b"x".to_vec(),
        version: 1,
        expires: sim.now() + Duration::from_secs(86_400),
        writer: Default::default(),
        signature: Vec::new(),
        proof: None,
    }
}

/// A ring of `n` nodes grown with concurrent joins and left to settle, as
/// every mode starts; says so when it is not consistent `when` (a few words).
pub(crate) fn settled_ring(args: &Args, n: usize, seed: u64, when: &str) -> Sim {
    let mut sim = Sim::new(SimConfig {
        seed,
        ..SimConfig::default()
    });
    sim.grow_concurrent(
        n,
        Duration::from_millis(args.join_spacing_ms),
        Duration::from_secs(args.settle_secs),
    );
    if !sim.ring_consistent() {
        eprintln!(
            "N={n}: ring not consistent {when}: {:?}",
            sim.inconsistencies()
        );
    }
    sim
}

fn run(args: &Args, n: usize) -> Row {
    let wall = Instant::now();
    let mut sim = settled_ring(args, n, args.seed ^ n as u64, "yet");
    let period = sim.config.ring.stabilize_every;
    let finger_period = sim.config.ring.fix_fingers_every;
    let r = sim.config.ring.replicas;
    let consistent = sim.ring_consistent();

    // One item per node.
    let items: Vec<Item> = (0..n).map(|k| item(&sim, k)).collect();
    for it in &items {
        let from = sim.random_live();
        sim.store(from, it.clone());
    }
    sim.run_for(Duration::from_secs(5));

    // Measurement window with a steady lookup load.
    let start_msgs = sim.messages;
    let start_records = sim.lookup_records.len();
    let step = Duration::from_millis(100);
    let per_step = args.lookup_rate * n as f64 * step.as_secs_f64();
    let steps = (args.window_secs as f64 / step.as_secs_f64()) as usize;
    let mut carry = 0.0;
    for _ in 0..steps {
        carry += per_step;
        while carry >= 1.0 {
            carry -= 1.0;
            let from = sim.random_live();
            let key = sim.random_key();
            sim.lookup(from, key);
        }
        sim.run_for(step);
    }
    let msgs = sim.messages - start_msgs;
    let msgs_per_node_s = msgs as f64 / n as f64 / args.window_secs as f64;
    sim.run_for(Duration::from_secs(10));
    let window = LookupStats::of(&sim.lookup_records[start_records..]);

    // Crash a fraction at once.
    let holders: Vec<Vec<usize>> = items.iter().map(|it| sim.true_holders(it.key, r)).collect();
    let mut crashed = HashSet::new();
    let target = (n as f64 * args.crash) as usize;
    while crashed.len() < target {
        let v = sim.random_live();
        sim.crash(v);
        crashed.insert(v);
    }
    sim.run_for(period * 3);
    let after_crash = sim.lookup_batch(1000, Duration::ZERO, Duration::from_secs(120));
    sim.run_for(Duration::from_secs(20));
    let mut doomed = 0;
    let mut fetches = Vec::new();
    for (it, h) in items.iter().zip(&holders) {
        if h.iter().all(|x| crashed.contains(x)) {
            doomed += 1;
            continue;
        }
        let from = sim.random_live();
        fetches.push((it.clone(), from, sim.fetch(from, it.key)));
    }
    sim.run_for(Duration::from_secs(30));
    let mut lost = 0;
    for (it, from, op) in fetches {
        match sim.take_result(from, op) {
            Some(RingEvent::FetchDone {
                result: Ok(got), ..
            }) if got.iter().any(|g| g.name == it.name) => {}
            _ => lost += 1,
        }
    }
    Row {
        n,
        consistent_after_settle: consistent,
        half_log2_n: 0.5 * (n as f64).log2(),
        window,
        msgs_per_node_s,
        estimate_m: estimate(n, args, period.as_secs_f64(), finger_period.as_secs_f64()),
        after_crash,
        items: items.len(),
        items_doomed: doomed,
        items_lost: lost,
        wall_secs: wall.elapsed().as_secs_f64(),
        events_virtual_secs: sim.elapsed().as_secs_f64(),
    }
}

fn svg(rows: &[Row]) -> String {
    let (w, h) = (640.0, 400.0);
    let (left, right, top, bottom) = (60.0, 20.0, 40.0, 50.0);
    let max_n = rows.iter().map(|r| r.n).max().unwrap_or(10).max(10) as f64;
    let min_n = rows.iter().map(|r| r.n).min().unwrap_or(10).max(2) as f64;
    let (lx0, lx1) = (min_n.log10().floor(), max_n.log10().ceil());
    let max_y = rows
        .iter()
        .map(|r| r.window.hops_p99 as f64)
        .fold(8.0_f64, f64::max)
        .ceil();
    let x = |n: f64| left + (n.log10() - lx0) / (lx1 - lx0).max(1e-9) * (w - left - right);
    let y = |v: f64| h - bottom - v / max_y * (h - top - bottom);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="14">Chord lookup path length in the p2psip simulator</text>"#,
        w / 2.0
    );
    // Axes and grid.
    let _ = writeln!(
        s,
        r#"<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#,
        h - bottom,
        w - right,
        h - bottom
    );
    let _ = writeln!(
        s,
        r#"<line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="black"/>"#,
        h - bottom
    );
    let mut e = lx0 as i32;
    while e as f64 <= lx1 {
        let n = 10f64.powi(e);
        let _ = writeln!(
            s,
            r##"<line x1="{0}" y1="{top}" x2="{0}" y2="{1}" stroke="#ddd"/><text x="{0}" y="{2}" text-anchor="middle">{3}</text>"##,
            x(n),
            h - bottom,
            h - bottom + 16.0,
            n as u64
        );
        e += 1;
    }
    for v in 0..=(max_y as u32) {
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{0}" x2="{1}" y2="{0}" stroke="#eee"/><text x="{2}" y="{3}" text-anchor="end">{v}</text>"##,
            y(v as f64),
            w - right,
            left - 6.0,
            y(v as f64) + 4.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">nodes N (log scale)</text>"#,
        (left + w - right) / 2.0,
        h - 12.0
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{0}" text-anchor="middle" transform="rotate(-90 16 {0})">hops per lookup</text>"#,
        (top + h - bottom) / 2.0
    );
    // Chord's ½·log2 N as a continuous curve.
    let mut path = String::new();
    let steps = 50;
    for k in 0..=steps {
        let l = lx0 + (lx1 - lx0) * k as f64 / steps as f64;
        let n = 10f64.powf(l);
        let _ = write!(
            path,
            "{}{:.1},{:.1} ",
            if k == 0 { "M" } else { "L" },
            x(n),
            y(0.5 * n.log2())
        );
    }
    let _ = writeln!(
        s,
        r##"<path d="{path}" fill="none" stroke="#888" stroke-dasharray="5,4"/>"##
    );
    let series = |s: &mut String, color: &str, f: &dyn Fn(&Row) -> f64| {
        let mut d = String::new();
        for (k, r) in rows.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1},{:.1} ",
                if k == 0 { "M" } else { "L" },
                x(r.n as f64),
                y(f(r))
            );
        }
        let _ = writeln!(
            s,
            r#"<path d="{d}" fill="none" stroke="{color}" stroke-width="2"/>"#
        );
        for r in rows {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{color}"/>"#,
                x(r.n as f64),
                y(f(r))
            );
        }
    };
    series(&mut s, "#1f77b4", &|r| r.window.hops_mean);
    series(&mut s, "#d62728", &|r| r.window.hops_p99 as f64);
    let lx = left + 16.0;
    let _ = writeln!(
        s,
        r##"<rect x="{0}" y="{1}" width="190" height="62" fill="white" stroke="#ccc"/>
<line x1="{2}" y1="{3}" x2="{4}" y2="{3}" stroke="#1f77b4" stroke-width="2"/><text x="{5}" y="{6}">mean hops (measured)</text>
<line x1="{2}" y1="{7}" x2="{4}" y2="{7}" stroke="#d62728" stroke-width="2"/><text x="{5}" y="{8}">p99 hops (measured)</text>
<line x1="{2}" y1="{9}" x2="{4}" y2="{9}" stroke="#888" stroke-dasharray="5,4"/><text x="{5}" y="{10}">Chord: ½·log2 N</text>"##,
        lx - 6.0,
        top + 4.0,
        lx,
        top + 18.0,
        lx + 24.0,
        lx + 30.0,
        top + 22.0,
        top + 36.0,
        top + 40.0,
        top + 54.0,
        top + 58.0
    );
    s.push_str("</svg>\n");
    s
}

fn write_markdown(path: &PathBuf, args: &Args, rows: &[Row]) {
    let mut sec = String::new();
    let _ = writeln!(sec, "## Ring (simulator)\n");
    let _ = writeln!(
        sec,
        "Chord ring of `src/ring` in the deterministic simulator (`src/ring/sim.rs`): \
         one-way latency uniform 5–50 ms, no loss, default `RingConfig` (successor list 8, \
         r = 3 replicas, stabilize / fix-fingers / check-predecessor every 1 s, request timeout 2 s, \
         recursive lookups). Nodes join {} ms apart through a random member, then settle {} s; \
         one item is stored per node; a {} s window with {} lookups per node per second from random \
         nodes for random keys is measured; then {:.0}% of the nodes crash at once, 1,000 lookups \
         are issued 3 stabilization periods later, and every item is fetched after 20 s more. \
         Seed {}. Virtual time; the wall time is what the simulation took.\n",
        args.join_spacing_ms,
        args.settle_secs,
        args.window_secs,
        args.lookup_rate,
        args.crash * 100.0,
        args.seed
    );
    let _ = writeln!(sec, "Command: `{}`\n", args.command.trim());
    if !args.machine.is_empty() {
        let _ = writeln!(
            sec,
            "Machine: {}; shared with other builds while it ran, so the wall times are only indicative.\n",
            args.machine
        );
    }
    let _ = writeln!(
        sec,
        "| N | mean hops | p99 hops | Chord ½·log2 N | mean lookup latency | msgs / node / s | estimate M | lookups correct (window) | correct 3 periods after crash | items lost (after the crash) | wall s |"
    );
    let _ = writeln!(
        sec,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in rows {
        let _ = writeln!(
            sec,
            "| {} | {:.2} | {} | {:.2} | {:.0} ms | {:.2} | {:.2} | {}/{} | {}/{} | {} of {} ({} more had all {} holders crashed) | {:.1} |",
            r.n,
            r.window.hops_mean,
            r.window.hops_p99,
            r.half_log2_n,
            r.window.latency_mean_ms,
            r.msgs_per_node_s,
            r.estimate_m,
            r.window.correct,
            r.window.count,
            r.after_crash.correct,
            r.after_crash.count,
            r.items_lost,
            r.items - r.items_doomed,
            r.items_doomed,
            p2psip::ring::RingConfig::default().replicas,
            r.wall_secs
        );
    }
    let _ = writeln!(
        sec,
        "\nHops count the FindSuccessor requests on a lookup's path (0 when the asking node \
         knows the answer). Messages count every SIP request and response a node sends, \
         maintenance and the lookup load together. The estimate is the seed's slide 18, \
         M = r_s + r_f·(log N)² + c·log N + (k/t)·log N + (log N)²/N with log base 2 and 2 \
         messages (request + response) per hop: r_s = 6 / s (GetPredecessor, Notify and the \
         check-predecessor Ping, each answered, once a second); r_f = 1 / (log2 N · 1 s) \
         whole finger tables per second (one distinct finger per second), each finger a lookup \
         of ½·log2 N hops; c = {} lookups / node / s of ½·log2 N hops; k = 0 (no registration \
         refreshes in the window); the churn term (log N)²/N as written. \
         Plot: `docs/ring-hops.svg`.\n",
        args.lookup_rate
    );
    let _ = writeln!(sec, "![hops](ring-hops.svg)\n");
    replace_section(path, "## Ring (simulator)", &sec);
}

/// Puts `sec` in place of the section titled `title` of the Markdown file at
/// `path` (up to the next `## `), or at its end.
fn replace_section(path: &PathBuf, title: &str, sec: &str) {
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n\n".to_string());
    let heading = format!("{title}\n");
    let new = match old.find(&heading) {
        Some(start) => {
            let rest = &old[start + 3..];
            let end = rest
                .find("\n## ")
                .map(|e| start + 3 + e + 1)
                .unwrap_or(old.len());
            format!("{}{}{}", &old[..start], sec, &old[end..])
        }
        None => format!("{}\n{}", old.trim_end(), "\n") + sec,
    };
    std::fs::write(path, new).expect("write markdown");
}
