//! Progress of a training loop on stderr.
//!
//! On a terminal: an `indicatif` bar (`elapsed [=====>   ] step/total it/s message`). When
//! stderr is not a terminal (CI logs, `nohup`, a pipe): one plain line every
//! `FDISTILL_PROGRESS_SECS` seconds (default 10) and a last one when the loop ends,
//!
//! ```text
//! [teacher] step 1200/6000 (20%), 95.3 it/s, ETA 50 s, loss 0.1234
//! ```
//!
//! with the steps per second of this process (a resumed run counts from its first step).

use std::cell::RefCell;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

thread_local! {
    /// The group of the reporters this thread creates ([`in_group`]): the shared bars and the
    /// name that tells this thread's loop from the others.
    static GROUP: RefCell<Option<(MultiProgress, String)>> = const { RefCell::new(None) };
}

/// Runs `f` (on this thread) with every [`Progress`] it creates named `name` (`[distill
/// forward-kl] step …`) and, on a terminal, drawn as one line of `bars`: how loops that run
/// concurrently on several threads (the demo's students) report without drawing over each
/// other. [`eprint_line`] prints above the bars.
pub fn in_group<R>(bars: &MultiProgress, name: &str, f: impl FnOnce() -> R) -> R {
    GROUP.with(|g| *g.borrow_mut() = Some((bars.clone(), name.to_string())));
    let out = f();
    GROUP.with(|g| *g.borrow_mut() = None);
    out
}

/// `eprintln!`, above the bars when this thread is [`in_group`].
pub fn eprint_line(line: &str) {
    GROUP.with(|g| match &*g.borrow() {
        Some((bars, _)) if std::io::stderr().is_terminal() => {
            let _ = bars.println(line);
        }
        _ => eprintln!("{line}"),
    });
}

/// Environment variable with the seconds between log lines when stderr is not a terminal.
pub const PROGRESS_SECS_ENV: &str = "FDISTILL_PROGRESS_SECS";
/// Default seconds between log lines.
pub const DEFAULT_PROGRESS_SECS: f64 = 10.0;

enum Mode {
    Bar(ProgressBar),
    Lines { every: Duration, last: Instant },
    Hidden,
}

/// A progress reporter for steps `first..=total` of a loop.
pub struct Progress {
    mode: Mode,
    label: String,
    total: u64,
    /// Steps done before this process started (a resumed run).
    done_before: u64,
    start: Instant,
    step: u64,
    message: String,
}

/// `1 h 02 min`, `3 min 20 s`, `42 s`.
pub fn format_duration(s: f64) -> String {
    if !s.is_finite() {
        return "?".into();
    }
    let s = s.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
    }
}

impl Progress {
    /// A reporter labelled `label` (`teacher`, `distill`) for a loop that ends at step
    /// `total` and has `done_before` steps already (0, or the checkpoint's step on resume).
    /// `hidden` draws nothing (the caller reports otherwise).
    pub fn new(label: &str, done_before: u64, total: u64, hidden: bool) -> Progress {
        let group = GROUP.with(|g| g.borrow().clone());
        let label = match &group {
            Some((_, name)) => format!("{label} {name}"),
            None => label.to_string(),
        };
        let mode = if hidden {
            Mode::Hidden
        } else if std::io::stderr().is_terminal() {
            let (bar, template) = match &group {
                Some((bars, _)) => (
                    bars.add(ProgressBar::new(total)),
                    "{prefix} {elapsed_precise} [{bar:30}] {pos}/{len} {per_sec} {msg}",
                ),
                None => (
                    ProgressBar::new(total),
                    "{elapsed_precise} [{bar:30}] {pos}/{len} {per_sec} {msg}",
                ),
            };
            bar.set_style(
                ProgressStyle::with_template(template)
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(format!("[{label}]"));
            bar.set_position(done_before);
            Mode::Bar(bar)
        } else {
            let secs = std::env::var(PROGRESS_SECS_ENV)
                .ok()
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0)
                .unwrap_or(DEFAULT_PROGRESS_SECS);
            Mode::Lines {
                every: Duration::from_secs_f64(secs),
                last: Instant::now(),
            }
        };
        Progress {
            mode,
            label,
            total,
            done_before,
            start: Instant::now(),
            step: done_before,
            message: String::new(),
        }
    }

    /// Records that `step` is done; `message` (the main losses) is asked for only when it will
    /// be shown.
    pub fn update(&mut self, step: u64, message: impl FnOnce() -> String) {
        self.step = step;
        match &mut self.mode {
            Mode::Bar(bar) => {
                bar.set_position(step);
                if step.is_multiple_of(10) || step == self.total {
                    self.message = message();
                    bar.set_message(self.message.clone());
                }
            }
            Mode::Lines { every, last } => {
                if last.elapsed() >= *every {
                    *last = Instant::now();
                    self.message = message();
                    eprintln!("{}", self.line());
                }
            }
            Mode::Hidden => {}
        }
    }

    /// Steps per second of this process.
    pub fn rate(&self) -> f64 {
        (self.step - self.done_before.min(self.step)) as f64
            / self.start.elapsed().as_secs_f64().max(1e-9)
    }

    /// `[label] step s/total (p%), r it/s, ETA t, message`.
    pub fn line(&self) -> String {
        let rate = self.rate();
        let eta = (self.total - self.step.min(self.total)) as f64 / rate;
        let mut line = format!(
            "[{}] step {}/{} ({:.0}%), {:.1} it/s, ETA {}",
            self.label,
            self.step,
            self.total,
            100.0 * self.step as f64 / self.total.max(1) as f64,
            rate,
            if rate > 0.0 {
                format_duration(eta)
            } else {
                "?".into()
            }
        );
        if !self.message.is_empty() {
            line.push_str(", ");
            line.push_str(&self.message);
        }
        line
    }

    /// Runs `f` (which prints) with the bar hidden, so that its output is not drawn over.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.mode {
            Mode::Bar(bar) => bar.suspend(f),
            _ => f(),
        }
    }

    /// Clears the bar, or prints the last line (with the final `message`) when logging lines.
    pub fn finish(&mut self, message: impl FnOnce() -> String) {
        match &self.mode {
            Mode::Bar(bar) => bar.finish_and_clear(),
            Mode::Lines { .. } => {
                self.message = message();
                eprintln!("{}", self.line());
            }
            Mode::Hidden => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(format_duration(42.4), "42 s");
        assert_eq!(format_duration(200.0), "3 min 20 s");
        assert_eq!(format_duration(3720.0), "1 h 02 min");
        assert_eq!(format_duration(f64::INFINITY), "?");
    }

    #[test]
    fn a_group_names_the_lines_of_its_thread_only() {
        let bars = MultiProgress::new();
        let (named, after) = std::thread::spawn(move || {
            let named = in_group(&bars, "forward-kl", || {
                Progress::new("distill", 0, 10, true).line()
            });
            (named, Progress::new("distill", 0, 10, true).line())
        })
        .join()
        .unwrap();
        assert!(
            named.starts_with("[distill forward-kl] step 0/10"),
            "{named}"
        );
        // the group ends with `f` ...
        assert!(after.starts_with("[distill] step 0/10"), "{after}");
        // ... and other threads never see it
        let plain = Progress::new("distill", 0, 10, true).line();
        assert!(plain.starts_with("[distill] step 0/10"), "{plain}");
    }

    #[test]
    fn a_line_has_step_rate_eta_and_message() {
        let mut p = Progress::new("teacher", 100, 300, true);
        p.step = 200;
        p.message = "loss 0.5".into();
        let line = p.line();
        assert!(line.starts_with("[teacher] step 200/300 (67%), "), "{line}");
        assert!(
            line.contains(" it/s, ETA ") && line.ends_with(", loss 0.5"),
            "{line}"
        );
        // The rate counts this process's steps only: 100 steps in the elapsed time.
        let before = p.start.elapsed().as_secs_f64();
        let r = p.rate();
        let after = p.start.elapsed().as_secs_f64();
        assert!(r <= 100.0 / before && r >= 100.0 / after, "{r}");
    }
}
