//! `ring-sim --churn`: continuous churn at each N (`p2psip::ring::churn`),
//! one phase per median session time on one settled ring, printed as a
//! table; optionally the "## Ring under continuous churn (simulator)"
//! section of docs/BENCHMARKS.md and a plot of success and latency against
//! session time.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use p2psip::ring::churn::{self, ChurnConfig, ChurnStats};

use super::{Args, replace_section};

const TITLE: &str = "## Ring under continuous churn (simulator)";

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Phase {
    n: usize,
    stats: ChurnStats,
    wall_secs: f64,
}

pub(super) fn main(args: &Args) {
    if let Some(json) = &args.replot {
        // Redraw the plot from the JSON line a run printed last.
        let text = std::fs::read_to_string(json).expect("read the JSON of a churn run");
        let line = text
            .lines()
            .rev()
            .find(|l| l.starts_with('['))
            .unwrap_or("[]");
        let phases: Vec<Phase> = serde_json::from_str(line).expect("JSON of a churn run");
        if let Some(path) = &args.svg {
            std::fs::write(path, svg(&phases)).expect("write svg");
        }
        return;
    }
    let mut phases = Vec::new();
    println!(
        "{:>6} {:>9} | {:>8} {:>6} {:>6} | {:>9} {:>10} | {:>9} {:>5} | {:>8} {:>8} | {:>11} | {:>6}",
        "N",
        "session",
        "nodes",
        "joins",
        "departs",
        "lookups",
        "success",
        "hops mean",
        "p99",
        "p50 ms",
        "p99 ms",
        "msgs/node/s",
        "wall s"
    );
    for &n in &args.nodes {
        let wall = Instant::now();
        let mut sim = super::settled_ring(args, n, args.seed ^ n as u64, "yet before churn");
        for &minutes in &args.sessions {
            let config = ChurnConfig {
                median_session: Duration::from_secs_f64(minutes * 60.0),
                crash_share: args.crash_share,
                lookup_rate: args.lookup_rate,
                warmup: Duration::from_secs(args.warmup_secs),
                window: Duration::from_secs(args.window_secs),
                ..ChurnConfig::default()
            };
            let stats = churn::run(&mut sim, n, &config);
            let phase = Phase {
                n,
                stats,
                wall_secs: wall.elapsed().as_secs_f64(),
            };
            let s = &phase.stats;
            println!(
                "{:>6} {:>7.0} s | {:>8.0} {:>6} {:>7} | {:>9} {:>9.3}% | {:>9.2} {:>5} | {:>8.0} {:>8.0} | {:>11.2} | {:>6.1}",
                n,
                s.median_session_s,
                s.nodes_mean,
                s.joins,
                s.leaves + s.crashes,
                s.lookups.count + s.unfinished,
                s.success * 100.0,
                s.lookups.hops_mean,
                s.lookups.hops_p99,
                s.lookups.latency_p50_ms,
                s.lookups.latency_p99_ms,
                s.msgs_per_node_s,
                phase.wall_secs
            );
            phases.push(phase);
        }
    }
    println!("{}", serde_json::to_string(&phases).expect("json"));
    if let Some(path) = &args.svg {
        std::fs::write(path, svg(&phases)).expect("write svg");
    }
    if let Some(path) = &args.markdown {
        replace_section(path, TITLE, &markdown(args, &phases));
    }
}

fn session_label(secs: f64) -> String {
    if secs >= 3600.0 && secs % 3600.0 == 0.0 {
        format!("{} h", secs / 3600.0)
    } else if secs >= 60.0 && secs % 60.0 == 0.0 {
        format!("{} min", secs / 60.0)
    } else {
        format!("{secs} s")
    }
}

fn markdown(args: &Args, phases: &[Phase]) -> String {
    let mut sec = String::new();
    let _ = writeln!(sec, "{TITLE}\n");
    let _ = writeln!(
        sec,
        "Continuous churn in the deterministic simulator (`src/ring/churn.rs`; Rhea et al., \
         \"Handling Churn in a DHT\", 2004): one-way latency uniform 5–50 ms, no loss, default \
         `RingConfig`. The ring of N nodes is built as in the section above ({} ms apart, \
         settled {} s); then, on that one ring, one phase per median session time, in the \
         order of the table: nodes arrive as a Poisson process of rate N/T and every live node \
         departs at rate 1/T (T = median / ln 2, exponential session times), {:.0}% of the \
         departures crashes and the others graceful leaves; each arrival is a new node (new \
         address, new id) joining through a random member. {} s of churn, then a {} s window \
         with {} lookups per live node per second (Poisson) for random keys from random joined \
         nodes, then 30 s of churn more for the window's lookups to end. A lookup succeeds when \
         it names the key's true successor among the live nodes at the moment of the answer; \
         a lookup that fails or is still unanswered at the end counts against success; one \
         whose own node left meanwhile is not counted. Messages count every request and \
         response sent in the window (joins, leaves and hand-overs included) per mean live \
         node. Seed {}. Virtual time; the wall time is cumulative since the ring began to grow.\n",
        args.join_spacing_ms,
        args.settle_secs,
        args.crash_share * 100.0,
        args.warmup_secs,
        args.window_secs,
        args.lookup_rate,
        args.seed
    );
    let _ = writeln!(sec, "Command: `{}`\n", args.command.trim());
    if !args.machine.is_empty() {
        let _ = writeln!(sec, "Machine: {}.\n", args.machine);
    }
    let _ = writeln!(
        sec,
        "| N | median session | live nodes (mean) | joins / departures in the phase | lookups | success | mean hops | p99 hops | latency p50 | latency p99 | msgs / node / s | wall s |"
    );
    let _ = writeln!(
        sec,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for p in phases {
        let s = &p.stats;
        let _ = writeln!(
            sec,
            "| {} | {} | {:.0} | {} / {} ({} crashes) | {} | {:.3}% ({} wrong, {} failed, {} unanswered) | {:.2} | {} | {:.0} ms | {:.0} ms | {:.2} | {:.0} |",
            p.n,
            session_label(s.median_session_s),
            s.nodes_mean,
            s.joins,
            s.leaves + s.crashes,
            s.crashes,
            s.lookups.count + s.unfinished,
            s.success * 100.0,
            s.lookups.wrong,
            s.lookups.failed,
            s.unfinished,
            s.lookups.hops_mean,
            s.lookups.hops_p99,
            s.lookups.latency_p50_ms,
            s.lookups.latency_p99_ms,
            s.msgs_per_node_s,
            p.wall_secs
        );
    }
    let _ = writeln!(
        sec,
        "\nOver time (each bucket 10 s of the window: lookups issued in it, success, latency p50 / p99):\n"
    );
    for p in phases {
        let mut line = format!(
            "- N = {}, {}:",
            p.n,
            session_label(p.stats.median_session_s)
        );
        for b in &p.stats.series {
            let _ = write!(
                line,
                " {:.0}s {:.2}% {:.0}/{:.0} ms;",
                b.at_s,
                b.success * 100.0,
                b.latency_p50_ms,
                b.latency_p99_ms
            );
        }
        let _ = writeln!(sec, "{}", line.trim_end_matches(';'));
    }
    let _ = writeln!(sec, "\n![churn](ring-churn.svg)\n");
    sec
}

/// Success (left axis) and latency p50 / p99 (right axis) against the
/// median session time (log scale), one point per phase of the largest N.
fn svg(phases: &[Phase]) -> String {
    let n = phases.iter().map(|p| p.n).max().unwrap_or(0);
    let mut pts: Vec<&ChurnStats> = phases
        .iter()
        .filter(|p| p.n == n)
        .map(|p| &p.stats)
        .collect();
    pts.sort_by(|a, b| a.median_session_s.total_cmp(&b.median_session_s));
    let (w, h) = (640.0, 400.0);
    let (left, right, top, bottom) = (60.0, 60.0, 70.0, 50.0);
    let xs: Vec<f64> = pts
        .iter()
        .map(|s| s.median_session_s.max(1.0).log10())
        .collect();
    let (x0, x1) = (
        xs.iter().copied().fold(f64::INFINITY, f64::min).floor(),
        xs.iter().copied().fold(f64::NEG_INFINITY, f64::max).ceil(),
    );
    let (x0, x1) = if x0.is_finite() && x1 > x0 {
        (x0, x1)
    } else {
        (1.0, 4.0)
    };
    let min_success = pts
        .iter()
        .map(|s| s.success * 100.0)
        .fold(99.0_f64, f64::min)
        .floor()
        - 1.0;
    let max_ms = pts
        .iter()
        .map(|s| s.lookups.latency_p99_ms)
        .fold(100.0_f64, f64::max);
    let max_ms = (max_ms / 100.0).ceil() * 100.0;
    let x = |v: f64| left + (v - x0) / (x1 - x0) * (w - left - right);
    let ys = |v: f64| h - bottom - (v - min_success) / (100.0 - min_success) * (h - top - bottom);
    let yl = |v: f64| h - bottom - v / max_ms * (h - top - bottom);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="14">Lookups under continuous churn, N = {n} (simulator)</text>"#,
        w / 2.0
    );
    let _ = writeln!(
        s,
        r#"<line x1="{left}" y1="{0}" x2="{1}" y2="{0}" stroke="black"/><line x1="{left}" y1="{top}" x2="{left}" y2="{0}" stroke="black"/><line x1="{1}" y1="{top}" x2="{1}" y2="{0}" stroke="black"/>"#,
        h - bottom,
        w - right
    );
    for p in &pts {
        let e = p.median_session_s.max(1.0).log10();
        let _ = writeln!(
            s,
            r##"<line x1="{0}" y1="{top}" x2="{0}" y2="{1}" stroke="#ddd"/><text x="{0}" y="{2}" text-anchor="middle">{3}</text>"##,
            x(e),
            h - bottom,
            h - bottom + 16.0,
            session_label(p.median_session_s)
        );
    }
    for k in 0..=4 {
        let v = min_success + (100.0 - min_success) * k as f64 / 4.0;
        let ms = max_ms * k as f64 / 4.0;
        let _ = writeln!(
            s,
            r##"<text x="{0}" y="{1}" text-anchor="end" fill="#1f77b4">{v:.2}%</text><text x="{2}" y="{3}" fill="#d62728">{ms:.0}</text>"##,
            left - 6.0,
            ys(v) + 4.0,
            w - right + 6.0,
            yl(ms) + 4.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">median session time (log scale)</text>"#,
        (left + w - right) / 2.0,
        h - 12.0
    );
    let _ = writeln!(
        s,
        r##"<text x="14" y="{0}" text-anchor="middle" fill="#1f77b4" transform="rotate(-90 14 {0})">lookup success</text><text x="{1}" y="{0}" text-anchor="middle" fill="#d62728" transform="rotate(90 {1} {0})">latency, ms</text>"##,
        (top + h - bottom) / 2.0,
        w - 14.0
    );
    let line = |s: &mut String, color: &str, dash: &str, f: &dyn Fn(&ChurnStats) -> f64| {
        let mut d = String::new();
        for (k, p) in pts.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1},{:.1} ",
                if k == 0 { "M" } else { "L" },
                x(p.median_session_s.max(1.0).log10()),
                f(p)
            );
        }
        let _ = writeln!(
            s,
            r#"<path d="{d}" fill="none" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/>"#
        );
        for p in &pts {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{color}"/>"#,
                x(p.median_session_s.max(1.0).log10()),
                f(p)
            );
        }
    };
    line(&mut s, "#1f77b4", "none", &|p| ys(p.success * 100.0));
    line(&mut s, "#d62728", "none", &|p| yl(p.lookups.latency_p50_ms));
    line(&mut s, "#d62728", "5,4", &|p| yl(p.lookups.latency_p99_ms));
    // The legend in one row between the title and the plot.
    for (k, (color, dash, label)) in [
        ("#1f77b4", "none", "lookup success"),
        ("#d62728", "none", "latency p50"),
        ("#d62728", "5,4", "latency p99"),
    ]
    .iter()
    .enumerate()
    {
        let lx = left + 20.0 + k as f64 * 170.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="46" x2="{0}" y2="46" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/><text x="{1}" y="50">{label}</text>"#,
            lx + 24.0,
            lx + 30.0
        );
    }
    s.push_str("</svg>\n");
    s
}
