//! Progress of long work (converting a checkpoint, downloading one) on stderr: a bar with
//! bytes, rate and time left on a terminal (indicatif), a plain line every 10 % (or 10 s)
//! when stderr is a file or a pipe (CI logs, `2> log`), nothing when quiet.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How progress is shown.
pub enum Progress {
    Bar(indicatif::ProgressBar),
    Lines(Lines),
    Quiet,
}

/// The state of plain-line progress.
pub struct Lines {
    what: String,
    total: u64,
    done: u64,
    started: Instant,
    last: Instant,
    last_tenth: u64,
}

/// Seconds between two plain lines at most.
const LINE_EVERY: Duration = Duration::from_secs(10);

impl Progress {
    /// Progress of `total` bytes of `what`: a bar on a terminal, plain lines otherwise, nothing
    /// unless `enabled`.
    pub fn new(enabled: bool, what: &str, total: u64) -> Progress {
        if !enabled {
            return Progress::Quiet;
        }
        if !std::io::stderr().is_terminal() {
            let now = Instant::now();
            return Progress::Lines(Lines {
                what: what.to_owned(),
                total,
                done: 0,
                started: now,
                last: now,
                last_tenth: 0,
            });
        }
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:28!} [{bar:32}] {bytes}/{total_bytes} {bytes_per_sec} {eta} left",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(what.to_owned());
        Progress::Bar(bar)
    }

    /// What is being worked on now (a tensor, a file).
    pub fn set_message(&mut self, message: &str) {
        if let Progress::Bar(bar) = self {
            bar.set_message(message.to_owned());
        }
    }

    /// `n` more bytes done.
    pub fn inc(&mut self, n: u64) {
        match self {
            Progress::Bar(bar) => bar.inc(n),
            Progress::Lines(l) => {
                l.done = (l.done + n).min(l.total);
                let tenth = if l.total == 0 {
                    10
                } else {
                    l.done * 10 / l.total
                };
                if tenth > l.last_tenth || l.last.elapsed() >= LINE_EVERY {
                    l.last_tenth = tenth;
                    l.last = Instant::now();
                    eprintln!("{}", l.line());
                }
            }
            Progress::Quiet => {}
        }
    }

    /// The work is done (the bar is cleared; a last line is printed if the lines stopped short).
    pub fn finish(&mut self) {
        match self {
            Progress::Bar(bar) => bar.finish_and_clear(),
            Progress::Lines(l) if l.last_tenth < 10 => eprintln!("{}", l.line()),
            _ => {}
        }
    }
}

impl Lines {
    fn line(&self) -> String {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = self.done as f64 / secs;
        let left = if rate > 0.0 {
            format!(", {:.0} s left", (self.total - self.done) as f64 / rate)
        } else {
            String::new()
        };
        format!(
            "{}: {:.0} % ({:.1} / {:.1} MiB, {:.1} MiB/s{left})",
            self.what,
            if self.total == 0 {
                100.0
            } else {
                100.0 * self.done as f64 / self.total as f64
            },
            mib(self.done),
            mib(self.total),
            mib(rate as u64),
        )
    }
}
