//! What `liger serve` is doing, as counters: `GET /metrics` in Prometheus' text format, and the
//! scheduler's state that `/health` reports.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

/// Counters since the server started.
#[derive(Default)]
pub(crate) struct Metrics {
    /// Answers by status class: 2xx, 4xx, 5xx (other classes are not answered).
    answers: [AtomicU64; 3],
    /// Requests refused for a missing or wrong key (also counted in 4xx).
    unauthorized: AtomicU64,
    /// Jobs handed to the scheduler.
    jobs: AtomicU64,
    prompt_tokens: AtomicU64,
    cached_tokens: AtomicU64,
    generated_tokens: AtomicU64,
    steps: AtomicU64,
    step_micros: AtomicU64,
}

impl Metrics {
    pub fn answered(&self, status: u16) {
        let class = match status {
            200..=299 => 0,
            400..=499 => 1,
            500..=599 => 2,
            _ => return,
        };
        self.answers[class].fetch_add(1, Relaxed);
    }

    pub fn unauthorized(&self) {
        self.unauthorized.fetch_add(1, Relaxed);
    }

    pub fn job(&self) {
        self.jobs.fetch_add(1, Relaxed);
    }

    pub fn completed(&self, prompt: usize, cached: usize, generated: usize) {
        self.prompt_tokens.fetch_add(prompt as u64, Relaxed);
        self.cached_tokens.fetch_add(cached as u64, Relaxed);
        self.generated_tokens.fetch_add(generated as u64, Relaxed);
    }

    pub fn step(&self, micros: u64) {
        self.steps.fetch_add(1, Relaxed);
        self.step_micros.fetch_add(micros, Relaxed);
    }

    /// Prometheus' text exposition format.
    pub fn render(&self, scheduler: &SchedulerState) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(
                out,
                "# HELP liger_{name} {help}\n# TYPE liger_{name} {kind}"
            );
            for (labels, value) in samples {
                let _ = writeln!(out, "liger_{name}{labels} {value}");
            }
        };
        let a = |i: usize| self.answers[i].load(Relaxed);
        metric(
            "requests_total",
            "counter",
            "HTTP answers by status class.",
            &[
                ("{status=\"2xx\"}", a(0)),
                ("{status=\"4xx\"}", a(1)),
                ("{status=\"5xx\"}", a(2)),
            ],
        );
        let counters = [
            (
                "unauthorized_total",
                "Requests refused for a missing or wrong API key.",
                &self.unauthorized,
            ),
            (
                "jobs_total",
                "Completions handed to the scheduler.",
                &self.jobs,
            ),
            (
                "prompt_tokens_total",
                "Prompt tokens of finished completions.",
                &self.prompt_tokens,
            ),
            (
                "cached_tokens_total",
                "Prompt tokens taken from the prefix-state cache.",
                &self.cached_tokens,
            ),
            (
                "generated_tokens_total",
                "Tokens generated.",
                &self.generated_tokens,
            ),
            ("steps_total", "Batched model steps.", &self.steps),
        ];
        for (name, help, value) in counters {
            metric(name, "counter", help, &[("", value.load(Relaxed))]);
        }
        let status = scheduler.status();
        metric(
            "active_sequences",
            "gauge",
            "Sequences being decoded.",
            &[("", status.active as u64)],
        );
        metric(
            "lagging_sequences",
            "gauge",
            "Sequences paused because their client has not taken what it was sent.",
            &[("", status.lagging as u64)],
        );
        metric(
            "waiting_requests",
            "gauge",
            "Requests waiting for a slot.",
            &[("", status.waiting as u64)],
        );
        metric(
            "scheduler_up",
            "gauge",
            "1 while the scheduler runs.",
            &[("", u64::from(status.gone.is_none()))],
        );
        let seconds = self.step_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "# HELP liger_step_seconds_total Time in batched model steps.\n\
             # TYPE liger_step_seconds_total counter\nliger_step_seconds_total {seconds}"
        );
        out
    }
}

/// The scheduler thread's state, shared with the HTTP side.
#[derive(Default)]
pub(crate) struct SchedulerState {
    /// Why the scheduler is gone, once it is.
    gone: Mutex<Option<String>>,
    pub active: AtomicUsize,
    pub waiting: AtomicUsize,
    /// Active sequences paused for a client that does not read.
    pub lagging: AtomicUsize,
    /// Set when the shutdown grace is over: every sequence ends at the next step.
    pub end_all: AtomicBool,
}

/// A snapshot of [`SchedulerState`].
pub(crate) struct SchedulerStatus {
    pub gone: Option<String>,
    pub active: usize,
    pub waiting: usize,
    pub lagging: usize,
}

impl SchedulerState {
    pub fn status(&self) -> SchedulerStatus {
        SchedulerStatus {
            gone: self
                .gone
                .lock()
                .map(|g| g.clone())
                .unwrap_or_else(|p| p.into_inner().clone()),
            active: self.active.load(Relaxed),
            waiting: self.waiting.load(Relaxed),
            lagging: self.lagging.load(Relaxed),
        }
    }

    pub fn set_gone(&self, reason: String) {
        match self.gone.lock() {
            Ok(mut g) => *g = Some(reason),
            Err(p) => *p.into_inner() = Some(reason),
        }
    }
}
