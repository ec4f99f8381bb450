//! Ctrl-C (SIGINT) and SIGTERM during training.
//!
//! While a training loop is [`arm`]ed, the first signal only sets a flag: the loop finishes
//! its current step, writes a checkpoint and stops ([`requested`] → the observer returns
//! [`StopRequested`](fdistill::train::distill::StopRequested)); the command then prints how
//! to resume and exits with code 130. A second signal exits at once, inside the signal
//! handler, with code 130: checkpoints are swapped in by renames, so an exit at any instant
//! leaves the last complete checkpoint in place.
//!
//! Outside an armed loop (before training starts, between the demo's stages, while
//! evaluating) a signal exits at once with code 130, as an unhandled Ctrl-C would.
//!
//! The handlers are `signal-hook`'s flag actions, installed on first use and run in the
//! order they were registered: "exit if `exit_now`", then "set `requested`", then "set
//! `exit_now`".

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// Exit status after an interrupt (128 + SIGINT, as shells report Ctrl-C).
pub const EXIT_INTERRUPTED: u8 = 130;

struct Flags {
    /// A stop was asked for since the loop was armed.
    requested: Arc<AtomicBool>,
    /// The next signal exits at once.
    exit_now: Arc<AtomicBool>,
    /// A loop is armed (for the acknowledgement message only).
    armed: Arc<AtomicBool>,
}

static FLAGS: OnceLock<Flags> = OnceLock::new();

#[cfg(unix)]
const SIGNALS: [i32; 2] = [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM];
#[cfg(not(unix))]
const SIGNALS: [i32; 1] = [signal_hook::consts::SIGINT];

fn flags() -> &'static Flags {
    FLAGS.get_or_init(|| {
        let flags = Flags {
            requested: Arc::new(AtomicBool::new(false)),
            exit_now: Arc::new(AtomicBool::new(true)),
            armed: Arc::new(AtomicBool::new(false)),
        };
        for sig in SIGNALS {
            // Order matters: the exit check must run before the first signal arms it.
            let installed = signal_hook::flag::register_conditional_shutdown(
                sig,
                i32::from(EXIT_INTERRUPTED),
                Arc::clone(&flags.exit_now),
            )
            .and_then(|_| signal_hook::flag::register(sig, Arc::clone(&flags.requested)))
            .and_then(|_| signal_hook::flag::register(sig, Arc::clone(&flags.exit_now)));
            if let Err(e) = installed {
                tracing::warn!("cannot install the handler of signal {sig}: {e}");
            }
        }
        acknowledge(Arc::clone(&flags.armed));
        flags
    })
}

/// Prints, as soon as the first signal arrives, what happens next (the loop itself notices
/// only after its current step, which may take a while on images).
#[cfg(unix)]
fn acknowledge(armed: Arc<AtomicBool>) {
    let Ok(mut signals) = signal_hook::iterator::Signals::new(SIGNALS) else {
        return;
    };
    std::thread::spawn(move || {
        for _ in signals.forever() {
            if armed.swap(false, Ordering::SeqCst) {
                eprintln!(
                    "\nstopping after the current step and writing a checkpoint; press Ctrl-C \
                     again to quit at once (the last checkpoint stays intact)"
                );
            }
        }
    });
}

#[cfg(not(unix))]
fn acknowledge(_armed: Arc<AtomicBool>) {}

/// While alive, the first SIGINT/SIGTERM asks for a clean stop instead of ending the process.
#[derive(Debug)]
pub struct Armed(());

/// Training loops armed now: loops on several threads (the demo's students) arm together,
/// and the handlers go back to "exit at once" when the last one ends.
static ARMED_LOOPS: std::sync::Mutex<usize> = std::sync::Mutex::new(0);

/// Arms the handlers for one training loop (installing them on first use). The first loop
/// armed clears an earlier stop request; a signal then stops every armed loop.
pub fn arm() -> Armed {
    let f = flags();
    let mut loops = ARMED_LOOPS.lock().unwrap_or_else(|e| e.into_inner());
    if *loops == 0 {
        f.requested.store(false, Ordering::SeqCst);
        f.armed.store(true, Ordering::SeqCst);
        f.exit_now.store(false, Ordering::SeqCst);
    }
    *loops += 1;
    Armed(())
}

impl Drop for Armed {
    fn drop(&mut self) {
        let f = flags();
        let mut loops = ARMED_LOOPS.lock().unwrap_or_else(|e| e.into_inner());
        *loops = loops.saturating_sub(1);
        if *loops == 0 {
            f.exit_now.store(true, Ordering::SeqCst);
            f.armed.store(false, Ordering::SeqCst);
        }
    }
}

/// Whether a stop was asked for since the loop was armed.
pub fn requested() -> bool {
    FLAGS
        .get()
        .is_some_and(|f| f.requested.load(Ordering::SeqCst))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handlers_disarm_when_the_last_concurrent_loop_ends() {
        let exit_now = || flags().exit_now.load(Ordering::SeqCst);
        let first = arm();
        let second = arm();
        assert!(!exit_now(), "armed: a signal asks for a clean stop");
        flags().requested.store(true, Ordering::SeqCst);
        drop(first);
        assert!(
            !exit_now(),
            "one loop still runs: a signal must still stop it cleanly"
        );
        assert!(
            requested(),
            "the stop request reaches the loop still running"
        );
        drop(second);
        assert!(exit_now(), "no loop left: a signal exits at once");
        let again = arm();
        assert!(!requested(), "a new run starts without the old request");
        drop(again);
    }
}
