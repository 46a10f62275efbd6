//! Continuous batching: one scheduler thread drives every active request in one step per
//! token over all of them ([`Session::feed_many`]: each weight read once per step for every
//! sequence). Requests join between steps — their prompts fed in chunks beside the others'
//! decode tokens, a step holding at most `step_rows` tokens so that a long prompt does not
//! stall the others — and leave when they stop, run out of tokens or their client leaves.
//! The HTTP threads only parse, queue a [`Job`] and forward its [`Event`]s to their client.
//!
//! A job asking for `n` answers is fed once: when its prompt is in, the sequence is forked
//! into `n` (the fixed-size state copied), and the `n` decode side by side in the same steps.

use super::cache::PrefixCache;
use super::metrics::{Metrics, SchedulerState};
use super::Completion;
use liger::backend::share_rows;
use liger::constraint::Constraint;
use liger::generate::{GenerateOptions, Generator, Step, StopReason};
use liger::model::SequenceState;
use liger::openai::ApiError;
use liger::sampler::TokenLogprob;
use liger::{Backend, DecodeMode, Model, Sampler, SamplerOptions, Session};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// A request for the scheduler.
pub(crate) struct Job {
    pub prompt: Vec<u32>,
    pub sampling: SamplerOptions,
    pub max_tokens: usize,
    pub ignore_eos: bool,
    /// The output grammar's state for each answer (`response_format`, tool calls), compiled
    /// when the request came in; each answer takes its own.
    pub constraints: std::sync::Mutex<Vec<Option<Constraint>>>,
    /// The answer ends where its text reaches one of these.
    pub stop_strings: Vec<String>,
    /// Each token's log-probability with this many alternatives, if asked for.
    pub logprobs: Option<usize>,
    /// Answers to give, each its own sequence after the prompt (`n`).
    pub choices: usize,
    /// Set by the HTTP side when its client leaves: the job ends at the next step.
    pub cancelled: Arc<AtomicBool>,
    pub events: EventSender,
}

/// How long the scheduler sleeps when every answer waits for its client.
const IDLE_WAIT: Duration = Duration::from_millis(5);

/// A job's answer is not decoded further while this many of its events wait for its client
/// (a stream whose client reads slowly or not at all costs no compute; the write deadline
/// drops it).
const UNREAD_EVENTS: usize = 4;

/// The scheduler's end of a job's events, counting those its client has not taken yet.
pub(crate) struct EventSender {
    sender: UnboundedSender<Event>,
    unread: Arc<AtomicUsize>,
}

/// The HTTP side's end of a job's events.
pub(crate) struct EventReceiver {
    receiver: UnboundedReceiver<Event>,
    unread: Arc<AtomicUsize>,
}

pub(crate) fn event_channel() -> (EventSender, EventReceiver) {
    let (sender, receiver) = unbounded_channel();
    let unread = Arc::new(AtomicUsize::new(0));
    let receiver = EventReceiver {
        receiver,
        unread: Arc::clone(&unread),
    };
    (EventSender { sender, unread }, receiver)
}

impl EventSender {
    /// Sends `event`; false when its receiver is gone.
    pub fn send(&self, event: Event) -> bool {
        self.unread.fetch_add(1, Ordering::Relaxed);
        self.sender.send(event).is_ok()
    }

    /// Whether the client lags so far behind that its answer should wait.
    fn backlogged(&self) -> bool {
        self.unread.load(Ordering::Relaxed) >= UNREAD_EVENTS
    }
}

impl EventReceiver {
    /// The next event; None once the scheduler has dropped the job.
    pub async fn recv(&mut self) -> Option<Event> {
        let event = self.receiver.recv().await;
        if event.is_some() {
            self.unread.fetch_sub(1, Ordering::Relaxed);
        }
        event
    }
}

/// What the scheduler tells a job's HTTP thread, about one of its answers (`choice` in
/// `0..n`).
pub(crate) enum Event {
    /// A generated token: the text it adds (may be empty: an incomplete character, or text
    /// that may begin a stop string) and, when asked for, its log-probability.
    Token {
        choice: usize,
        text: String,
        logprob: Option<TokenLogprob>,
    },
    /// Text held back until the end (no token of its own).
    Text { choice: usize, text: String },
    /// The answer is complete (each choice ends with one).
    Done {
        choice: usize,
        outcome: Result<Completion, ApiError>,
    },
}

impl Event {
    fn failed(choice: usize, message: impl Into<String>) -> Event {
        Event::Done {
            choice,
            outcome: Err(ApiError::internal(message)),
        }
    }
}

/// What the scheduler needs of the server.
pub(crate) struct Scheduler {
    pub model: Arc<Model>,
    pub backend: Arc<dyn Backend>,
    /// Host copies of recent sequences' states (a GPU sequence's read back).
    pub cache: PrefixCache<SequenceState>,
    /// Most sequences in a step (`--parallel`).
    pub slots: usize,
    /// Most tokens in a step (`--step-tokens`).
    pub step_rows: usize,
    /// What `/health` and `/metrics` read; `end_all` ends every job (shutdown).
    pub state: Arc<SchedulerState>,
    pub metrics: Arc<Metrics>,
}

/// One answer of a job being served.
struct Active {
    /// Shared by the job's answers.
    job: Arc<Job>,
    /// Which answer this is (`0..job.choices`).
    choice: usize,
    session: Session,
    sampler: Sampler,
    generator: Generator,
    /// Prompt tokens fed so far (from the cached prefix on); all of them once decoding.
    fed: usize,
    cached_tokens: usize,
    /// Tokens generated and fed.
    generated: Vec<u32>,
    /// The log-probability of the token being fed, from the logits it was sampled from.
    logprob: Option<TokenLogprob>,
    text: String,
    /// Why the job failed, if it did.
    error: Option<String>,
}

impl Active {
    fn prefilling(&self) -> bool {
        self.fed < self.job.prompt.len()
    }
}

/// What one active job puts into the next step.
enum Feed {
    Prompt(usize),
    Token(u32),
    Stop(StopReason),
    /// Nothing: its client has not taken what it was sent.
    Wait,
}

impl Scheduler {
    /// Serves jobs from `jobs` until every sender is gone.
    pub(crate) fn run(mut self, jobs: Receiver<Job>) {
        let mut active: Vec<Active> = Vec::new();
        loop {
            if active.is_empty() {
                match jobs.recv() {
                    Ok(job) => self.admit(job, &mut active),
                    Err(_) => return,
                }
            }
            while active.len() < self.slots {
                match jobs.try_recv() {
                    Ok(job) => self.admit(job, &mut active),
                    Err(_) => break,
                }
            }
            self.state.active.store(active.len(), Ordering::Relaxed);
            // A bug in one step must not take the server with it: its jobs get an error.
            let start = Instant::now();
            let stepped =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.step(&mut active)));
            self.state.active.store(active.len(), Ordering::Relaxed);
            match stepped {
                Ok(true) => self.metrics.step(start.elapsed().as_micros() as u64),
                // Every answer waits for its client: wait for a new job or a moment.
                Ok(false) => match jobs.recv_timeout(IDLE_WAIT) {
                    Ok(job) => self.admit(job, &mut active),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => std::thread::sleep(IDLE_WAIT),
                },
                Err(_) => {
                    eprintln!("serve: a batched step panicked; its requests get an error");
                    for a in active.drain(..) {
                        let _ = a
                            .job
                            .events
                            .send(Event::failed(a.choice, "the batched step failed"));
                    }
                }
            }
        }
    }

    /// Starts `job` from the longest cached prefix of its prompt.
    fn admit(&mut self, job: Job, active: &mut Vec<Active>) {
        self.state.waiting.fetch_sub(1, Ordering::Relaxed);
        let started = (|| -> liger::Result<(Session, usize, Sampler, Generator)> {
            let mut session = Session::on(&self.backend, DecodeMode::Window)?;
            let cached_tokens = match self.cache.longest_prefix(&job.prompt) {
                Some((state, n)) => {
                    session.set_state(state)?;
                    n
                }
                None => 0,
            };
            let (sampler, generator) = self.answer_tools(&job, 0)?;
            Ok((session, cached_tokens, sampler, generator))
        })();
        match started {
            Ok((session, cached_tokens, sampler, generator)) => {
                let first = Active {
                    session,
                    sampler,
                    generator,
                    fed: cached_tokens,
                    cached_tokens,
                    generated: Vec::new(),
                    logprob: None,
                    text: String::new(),
                    error: None,
                    job: Arc::new(job),
                    choice: 0,
                };
                let fed = !first.prefilling();
                active.push(first);
                if fed {
                    self.fork_choices(active, active.len() - 1);
                }
            }
            Err(e) => {
                let _ = job.events.send(Event::failed(0, e.to_string()));
            }
        }
    }

    /// The sampler and the generation loop of answer `choice` of `job` (a seed moved by the
    /// choice, so that `n` sampled answers differ and repeat with the seed).
    fn answer_tools(&self, job: &Job, choice: usize) -> liger::Result<(Sampler, Generator)> {
        let mut sampling = job.sampling.clone();
        sampling.seed = sampling.seed.wrapping_add(choice as u64);
        let mut sampler = Sampler::new(sampling);
        job.prompt.iter().for_each(|&t| sampler.observe(t));
        let options = GenerateOptions {
            max_tokens: job.max_tokens,
            ignore_eos: job.ignore_eos,
            skip_special: true,
            stop_strings: job.stop_strings.clone(),
            ..Default::default()
        };
        let constraint = job
            .constraints
            .lock()
            .ok()
            .and_then(|mut c| c.get_mut(choice).and_then(Option::take));
        Ok((
            sampler,
            Generator::with_constraint(&self.model, options, constraint)?,
        ))
    }

    /// Once answer 0 of a job has its prompt in (`active[i]`), the job's other answers start
    /// from a copy of its state.
    fn fork_choices(&self, active: &mut Vec<Active>, i: usize) {
        let job = Arc::clone(&active[i].job);
        for choice in 1..job.choices {
            let forked = active[i].session.fork().and_then(|session| {
                let (sampler, generator) = self.answer_tools(&job, choice)?;
                Ok((session, sampler, generator))
            });
            match forked {
                Ok((session, sampler, generator)) => active.push(Active {
                    session,
                    sampler,
                    generator,
                    fed: job.prompt.len(),
                    cached_tokens: active[i].cached_tokens,
                    generated: Vec::new(),
                    logprob: None,
                    text: String::new(),
                    error: None,
                    job: Arc::clone(&job),
                    choice,
                }),
                Err(e) => {
                    let _ = job.events.send(Event::failed(choice, e.to_string()));
                }
            }
        }
    }

    /// One step over every active job: prompt chunks and decode tokens fed together, then
    /// each job's text sent, and finished jobs retired. False when nothing was done (every
    /// answer waits for its client).
    fn step(&mut self, active: &mut Vec<Active>) -> bool {
        // What each job feeds: a decoding job its next token (or its end), a prefilling one a
        // share of the rows left.
        let mut feeds: Vec<Feed> = Vec::with_capacity(active.len());
        let end_all = self.state.end_all.load(Ordering::Relaxed);
        for a in active.iter_mut() {
            let feed = if end_all || a.job.cancelled.load(Ordering::Relaxed) {
                Feed::Stop(StopReason::Cancelled)
            } else if a.prefilling() {
                Feed::Prompt(0)
            } else if a.job.events.backlogged() {
                Feed::Wait
            } else {
                match a.generator.next_token(&a.session, &mut a.sampler) {
                    Ok(Ok(id)) => {
                        // The model's own distribution (before penalties and filters), read
                        // before the step overwrites the logits.
                        a.logprob = a
                            .job
                            .logprobs
                            .map(|k| TokenLogprob::of(a.session.logits(), id, k));
                        Feed::Token(id)
                    }
                    Ok(Err(stop)) => Feed::Stop(stop),
                    Err(e) => {
                        a.error = Some(e.to_string());
                        Feed::Stop(StopReason::Cancelled)
                    }
                }
            };
            feeds.push(feed);
        }
        let left: Vec<usize> = active
            .iter()
            .zip(&feeds)
            .map(|(a, f)| match f {
                Feed::Prompt(_) => a.job.prompt.len() - a.fed,
                Feed::Token(_) => 1,
                Feed::Stop(_) | Feed::Wait => 0,
            })
            .collect();
        let mut take = Vec::new();
        share_rows(&left, self.step_rows, &mut take);
        for (f, &n) in feeds.iter_mut().zip(&take) {
            if let Feed::Prompt(rows) = f {
                *rows = n;
            }
        }

        let tokens: Vec<Vec<u32>> = active
            .iter()
            .zip(&feeds)
            .map(|(a, f)| match *f {
                Feed::Prompt(n) => a.job.prompt[a.fed..a.fed + n].to_vec(),
                Feed::Token(id) => vec![id],
                Feed::Stop(_) | Feed::Wait => Vec::new(),
            })
            .collect();
        let mut work: Vec<(&mut Session, &[u32])> = active
            .iter_mut()
            .zip(&tokens)
            .filter(|(_, t)| !t.is_empty())
            .map(|(a, t)| (&mut a.session, t.as_slice()))
            .collect();
        let fed_any = !work.is_empty();
        let lagging = feeds.iter().filter(|f| matches!(f, Feed::Wait)).count();
        self.state.lagging.store(lagging, Ordering::Relaxed);
        if let Err(e) = Session::feed_many(&mut work) {
            drop(work);
            for a in active.drain(..) {
                let _ = a.job.events.send(Event::failed(a.choice, e.to_string()));
            }
            return true;
        }
        drop(work);

        let mut finished = Vec::new();
        let mut prompts_in = Vec::new();
        for (i, (a, feed)) in active.iter_mut().zip(&feeds).enumerate() {
            match *feed {
                Feed::Prompt(n) => {
                    a.fed += n;
                    if !a.prefilling() && a.job.choices > 1 {
                        prompts_in.push(i);
                    }
                    // The prompt's own state too: a follow-up whose history does not
                    // re-tokenize as the answer was generated, or a regenerated answer, still
                    // starts from here.
                    if !a.prefilling() && a.cached_tokens < a.fed {
                        if let Ok(state) = a.session.state() {
                            self.cache.insert(a.job.prompt.clone(), state);
                        }
                    }
                }
                Feed::Token(id) => match a.generator.accept(id, &mut a.sampler) {
                    Ok(Step::Token { id, text }) => {
                        a.generated.push(id);
                        a.text.push_str(&text);
                        let logprob = a.logprob.take();
                        if !text.is_empty() || logprob.is_some() {
                            let _ = a.job.events.send(Event::Token {
                                choice: a.choice,
                                text,
                                logprob,
                            });
                        }
                    }
                    Ok(Step::Done(stop)) => finished.push((i, stop)),
                    Err(e) => {
                        a.error = Some(e.to_string());
                        finished.push((i, StopReason::Cancelled));
                    }
                },
                Feed::Stop(stop) => finished.push((i, stop)),
                Feed::Wait => {}
            }
        }
        let worked = fed_any || !finished.is_empty();
        // Forks go to the end: the indices of `finished` still hold.
        for i in prompts_in {
            self.fork_choices(active, i);
        }
        for (i, stop) in finished.into_iter().rev() {
            let a = active.swap_remove(i);
            self.finish(a, stop);
        }
        worked
    }

    /// Sends a job's last text and its completion; its final state goes to the prefix cache.
    fn finish(&mut self, mut a: Active, stop: StopReason) {
        let choice = a.choice;
        if let Some(e) = a.error {
            let _ = a.job.events.send(Event::failed(choice, e));
            return;
        }
        let prompt_tokens = a.job.prompt.len();
        // Stopped before its prompt was in (shutdown): the answers never forked end too.
        let unforked = if choice == 0 && a.prefilling() {
            a.job.choices
        } else {
            choice + 1
        };
        if let Ok(text) = a.generator.finish() {
            if !text.is_empty() {
                a.text.push_str(&text);
                let _ = a.job.events.send(Event::Text { choice, text });
            }
        }
        if !a.prefilling() {
            let mut fed = a.job.prompt.clone();
            fed.extend_from_slice(&a.generated);
            if let Ok(state) = a.session.state() {
                self.cache.insert(fed, state);
            }
        }
        // The prompt was fed once, whatever the number of answers.
        let (fed, cached) = if choice == 0 {
            (prompt_tokens, a.cached_tokens)
        } else {
            (0, 0)
        };
        self.metrics.completed(fed, cached, a.generated.len());
        let completion = Completion {
            text: a.text,
            prompt_tokens,
            cached_tokens: a.cached_tokens,
            completion_tokens: a.generated.len(),
            finish_reason: stop.finish_reason(),
        };
        for choice in choice..unforked {
            let _ = a.job.events.send(Event::Done {
                choice,
                outcome: Ok(completion.clone()),
            });
        }
    }
}
