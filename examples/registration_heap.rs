//! Heap bytes per held registration, counted: a node's core (a ring of one
//! as its location store, as `scripts/bench-memory.sh` runs it) is fed N
//! distinct REGISTERs like the benchmark's SIPp scenario at 2,000/s of
//! virtual time, then 40 s pass (the transactions end). A counting allocator
//! reports the live bytes the program asked for, before and after: what the
//! data structures cost, without the allocator's own pages and
//! fragmentation (which `scripts/bench-memory.sh` sees in PSS).
//!
//! Usage: cargo run --release --example registration_heap [N=100000]

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use p2psip::core::{Core, CoreConfig, Input, Location, Output};
use p2psip::overlay::Overlay;
use p2psip::ring::RingConfig;
use p2psip::sip::transaction::{Peer, TransportKind};

struct Counting;

thread_local! {
    /// Set while a large allocation's backtrace is printed (it allocates).
    static TRACING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static LIVE_BLOCKS: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
        if layout.size() >= 1 << 20 && std::env::var_os("TRACE_LARGE").is_some() {
            TRACING.with(|t| {
                if !t.replace(true) {
                    eprintln!(
                        "alloc {}: {}",
                        layout.size(),
                        std::backtrace::Backtrace::force_capture()
                    );
                    t.set(false);
                }
            });
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        LIVE_BLOCKS.fetch_sub(1, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        if new_size >= 1 << 20 && std::env::var_os("TRACE_LARGE").is_some() {
            TRACING.with(|t| {
                if !t.replace(true) {
                    eprintln!(
                        "realloc {new_size}: {}",
                        std::backtrace::Backtrace::force_capture()
                    );
                    t.set(false);
                }
            });
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> (isize, isize) {
    (
        LIVE_BYTES.load(Ordering::Relaxed),
        LIVE_BLOCKS.load(Ordering::Relaxed),
    )
}

static OK: AtomicIsize = AtomicIsize::new(0);

fn drain(core: &mut Core) -> Instant {
    loop {
        match core.poll_output() {
            Output::Timeout(at) => return at,
            Output::Transmit { bytes, .. } if bytes.starts_with(b"SIP/2.0 200") => {
                OK.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

fn register(i: usize) -> Bytes {
    let user = format!("user{i:06}");
    Bytes::from(format!(
        "REGISTER sip:legacy.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:7000;branch=z9hG4bK-{i}-1-0\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@legacy.test>;tag=4242SIPpTag00{i}\r\n\
         To: <sip:{user}@legacy.test>\r\n\
         Call-ID: {i}-4242@127.0.0.1\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:{user}@127.0.0.1:7000;transport=UDP>\r\n\
         Expires: 3600\r\n\
         User-Agent: sipp-register-bench\r\n\
         Content-Length: 0\r\n\r\n"
    ))
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let t0 = Instant::now();
    let local = SocketAddr::from(([127, 0, 0, 1], 5060));
    let config = CoreConfig::new(local, vec!["legacy.test".into()]);
    let overlay = Overlay::new(local, RingConfig::default(), &[], t0);
    let mut core = Core::new(config, Location::Overlay(Box::new(overlay)), t0);
    let mut now = t0;
    drain(&mut core);
    core.handle_input(Input::Timeout, now + Duration::from_secs(2));
    drain(&mut core);
    let from = Peer {
        transport: TransportKind::Udp,
        addr: SocketAddr::from(([127, 0, 0, 1], 7000)),
    };
    let (b0, k0) = live();
    let mut deadline = now;
    for i in 1..=n {
        now = t0 + Duration::from_secs(2) + Duration::from_micros(500 * i as u64);
        if deadline <= now {
            core.handle_input(Input::Timeout, now);
            drain(&mut core);
        }
        core.handle_input(
            Input::Datagram {
                bytes: register(i),
                from,
            },
            now,
        );
        deadline = drain(&mut core);
    }
    let (b1, k1) = live();
    let end = now + Duration::from_secs(40);
    while now < end {
        now = (deadline.max(now + Duration::from_millis(100))).min(end);
        core.handle_input(Input::Timeout, now);
        deadline = drain(&mut core);
    }
    let (b2, k2) = live();
    // Kept alive: a heap profiler then reports what it holds as "leaked".
    let core = std::mem::ManuallyDrop::new(core);
    println!(
        "registrations: {n}, 200 OK: {}, cached: {}",
        OK.load(Ordering::Relaxed),
        core.metrics.registrations.get()
    );
    let per = |b: isize| b as f64 / n as f64;
    println!(
        "after the last REGISTER: {:.0} B, {:.1} blocks per registration",
        per(b1 - b0),
        per(k1 - k0)
    );
    println!(
        "40 s later (settled):    {:.0} B, {:.1} blocks per registration",
        per(b2 - b0),
        per(k2 - k0)
    );
}
