//! The fuzzing harness (stable Rust): mutates each target's seeds for a time budget and
//! reports executions, panics, oversized allocations and hangs.
//!
//! ```text
//! fdistill-fuzz [--seconds N] [--seed S] [all | TARGET...]   fuzz (default: all, 10 s each)
//! fdistill-fuzz seeds                                         rewrite seeds/ from code
//! fdistill-fuzz list                                          the targets
//! ```
//!
//! Targets run one at a time, on one thread with the main thread's 8 MiB stack. For each
//! input the harness
//!
//! - catches a panic, saves the input to `crashes/<target>-<n>.bin` and goes on (a run with
//!   any finding exits with status 1);
//! - caps every single allocation at 16 MiB + 5000 × the input's length (a loader may
//!   decompress and widen bytes to `f32`, but must not allocate what a header merely claims;
//!   sizes are to be checked against the data first): a larger one stops the process with
//!   status 3;
//! - stops the process with status 4 if one input runs for more than 20 s.
//!
//! Before each input, the input is written to `crashes/<target>-current.bin` (removed when
//! the target finishes), so an abort (oversize, hang, stack overflow) leaves its reproducer.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fdistill_fuzz::{TARGETS, Target, corpus, crate_dir, mutate, target, write_seeds};
use rand::{RngExt, SeedableRng};

/// The per-allocation limit; `usize::MAX` outside a target's execution.
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);
/// The fd of the current target's `-current.bin` file (for the abort message only).
static CURRENT_FD: AtomicI32 = AtomicI32::new(-1);
/// Milliseconds since `EPOCH` when the current input started; 0 when none runs.
static STARTED_MS: AtomicU64 = AtomicU64::new(0);

struct CappedAlloc;

/// Writes `msg` and `n` to stderr without allocating, then exits with `code`.
fn die(msg: &[u8], n: usize, code: i32) -> ! {
    let mut buf = [0u8; 24];
    let mut i = buf.len();
    let mut v = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    // SAFETY: writing plain byte buffers to fd 2, then ending the process.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::write(2, buf[i..].as_ptr().cast(), buf.len() - i);
        libc::write(2, b"\n".as_ptr().cast(), 1);
        libc::_exit(code)
    }
}

fn check(size: usize) {
    if size > LIMIT.load(Ordering::Relaxed) {
        die(
            b"fdistill-fuzz: OVERSIZED ALLOCATION (the input is in crashes/<target>-current.bin); bytes: ",
            size,
            3,
        );
    }
}

// SAFETY: forwards to the system allocator after a size check that never allocates.
unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CappedAlloc = CappedAlloc;

/// The allocation limit for an input of `len` bytes.
fn limit_for(len: usize) -> usize {
    (16 << 20) + 5000 * len
}

/// Longest run of one input.
const HANG: Duration = Duration::from_secs(20);

fn now_ms(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64 + 1
}

#[derive(Default)]
struct Report {
    execs: u64,
    panics: u64,
    max_len: usize,
    seconds: f64,
}

fn crashes_dir() -> PathBuf {
    crate_dir().join("crashes")
}

/// Fuzzes `t` for `seconds`; findings go to `crashes/`.
fn fuzz(t: &Target, seconds: f64, seed: u64, epoch: Instant) -> Report {
    let seeds: Vec<Vec<u8>> = corpus("seeds", t.name)
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    assert!(
        !seeds.is_empty(),
        "no seeds for `{}`; run `fdistill-fuzz seeds`",
        t.name
    );
    std::fs::create_dir_all(crashes_dir()).expect("crashes/");
    let current_path = crashes_dir().join(format!("{}-current.bin", t.name));
    let mut current = std::fs::File::create(&current_path).expect("current input file");
    CURRENT_FD.store(current.as_raw_fd(), Ordering::SeqCst);
    let name_hash = t
        .name
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ name_hash);
    let mut recent: Vec<Vec<u8>> = Vec::new();
    let mut report = Report::default();
    let start = Instant::now();
    let budget = Duration::from_secs_f64(seconds);
    // Seeds first, unmutated.
    let mut queue: Vec<Vec<u8>> = seeds.clone();
    while start.elapsed() < budget || !queue.is_empty() {
        let input = queue.pop().unwrap_or_else(|| {
            let parent = if !recent.is_empty() && rng.random_range(0..3) == 0 {
                &recent[rng.random_range(0..recent.len())]
            } else {
                &seeds[rng.random_range(0..seeds.len())]
            };
            mutate(parent, &seeds, t.text, &mut rng)
        });
        // The reproducer of an abort, written before the run.
        current.set_len(0).expect("truncate");
        std::io::Seek::rewind(&mut current).expect("rewind");
        current.write_all(&input).expect("write current input");
        report.max_len = report.max_len.max(input.len());
        STARTED_MS.store(now_ms(epoch), Ordering::SeqCst);
        LIMIT.store(limit_for(input.len()), Ordering::SeqCst);
        let outcome = std::panic::catch_unwind(|| (t.run)(&input));
        LIMIT.store(usize::MAX, Ordering::SeqCst);
        STARTED_MS.store(0, Ordering::SeqCst);
        report.execs += 1;
        if outcome.is_err() {
            report.panics += 1;
            let path = crashes_dir().join(format!("{}-{}.bin", t.name, report.execs));
            std::fs::write(&path, &input).expect("save the crash");
            eprintln!("{}: PANIC, input saved to {}", t.name, path.display());
        }
        if recent.len() < 256 {
            recent.push(input);
        } else {
            let i = rng.random_range(0..recent.len());
            recent[i] = input;
        }
    }
    report.seconds = start.elapsed().as_secs_f64();
    CURRENT_FD.store(-1, Ordering::SeqCst);
    drop(current);
    let _ = std::fs::remove_file(&current_path);
    report
}

fn usage() -> ! {
    eprintln!(
        "usage: fdistill-fuzz [--seconds N] [--seed S] [all | TARGET...] | seeds | list\ntargets: {}",
        TARGETS
            .iter()
            .map(|t| t.name)
            .collect::<Vec<_>>()
            .join(", ")
    );
    std::process::exit(2)
}

fn main() {
    fdistill_fuzz::link();
    let mut args = std::env::args().skip(1);
    let mut seconds = 10.0;
    let mut seed = 0u64;
    let mut names = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--seed" => {
                seed = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "seeds" => {
                write_seeds(&crate_dir().join("seeds")).expect("writing the seeds");
                eprintln!("wrote {}", crate_dir().join("seeds").display());
                return;
            }
            "list" => {
                for t in TARGETS {
                    println!("{:<12} {}", t.name, t.what);
                }
                return;
            }
            "all" => names.extend(TARGETS.iter().map(|t| t.name.to_string())),
            "-h" | "--help" => usage(),
            other if target(other).is_some() => names.push(other.to_string()),
            _ => usage(),
        }
    }
    if names.is_empty() {
        names.extend(TARGETS.iter().map(|t| t.name.to_string()));
    }
    // Silence the default panic message per input; the harness reports.
    std::panic::set_hook(Box::new(|info| {
        let msg = info.to_string();
        eprintln!("  panic: {}", msg.lines().next().unwrap_or(""));
    }));
    let epoch = Instant::now();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let s = STARTED_MS.load(Ordering::SeqCst);
            if s != 0 && now_ms(epoch).saturating_sub(s) > HANG.as_millis() as u64 {
                die(
                    b"fdistill-fuzz: HANG (the input is in crashes/<target>-current.bin); ms: ",
                    (now_ms(epoch) - s) as usize,
                    4,
                );
            }
        }
    });
    let mut findings = 0;
    for name in names {
        let t = target(&name).expect("checked");
        // The same stack as the command line's main thread.
        let report = std::thread::Builder::new()
            .stack_size(8 << 20)
            .spawn(move || fuzz(t, seconds, seed, epoch))
            .expect("worker thread")
            .join()
            .expect("the harness itself does not panic");
        findings += report.panics;
        println!(
            "{:<12} {:>9} execs in {:>6.1} s ({:>6.0}/s), {} panics, largest input {} B",
            t.name,
            report.execs,
            report.seconds,
            report.execs as f64 / report.seconds.max(1e-9),
            report.panics,
            report.max_len
        );
    }
    if findings > 0 {
        std::process::exit(1);
    }
}
