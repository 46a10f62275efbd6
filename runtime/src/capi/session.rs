//! Sessions through the C ABI: feed, logits, sampling, streaming generation, state bytes.

use super::*;
use crate::constraint::{Grammar, GrammarKind};
use crate::generate::{GenerateOptions, Generator, Step};
use crate::sampler::{Sampler, SamplerOptions};
use crate::session::Session;
use std::ffi::c_void;

/// Sampling settings; `liger_sampler_options_default` fills the defaults. `temperature <= 0`
/// is greedy.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LigerSamplerOptions {
    pub temperature: f32,
    /// Keep the k most likely tokens (0 = all).
    pub top_k: u32,
    /// Keep the smallest set whose probability reaches p (1 = all).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` × p(most likely) (0 = none).
    pub min_p: f32,
    /// Penalize the last `repeat_last_n` tokens fed (1 = off).
    pub repeat_penalty: f32,
    pub repeat_last_n: u32,
    /// Seed of the session's sampler (runs are reproducible).
    pub seed: u64,
}

impl From<LigerSamplerOptions> for SamplerOptions {
    fn from(o: LigerSamplerOptions) -> SamplerOptions {
        SamplerOptions {
            temperature: o.temperature,
            top_k: o.top_k as usize,
            top_p: o.top_p,
            min_p: o.min_p,
            repeat_penalty: o.repeat_penalty,
            repeat_last_n: o.repeat_last_n as usize,
            seed: o.seed,
            ..SamplerOptions::default()
        }
    }
}

/// Called by `liger_session_generate` with each generated token and the text it completes
/// (UTF-8, `text_len` bytes, NUL-terminated; may be empty while a character is incomplete;
/// valid during the call). A last call with `token == LIGER_TOKEN_NONE` delivers text still
/// pending at the end. Return 0 to go on, anything else to stop. It must not free the session.
pub type LigerTokenCallback = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        token: u32,
        text: *const c_char,
        text_len: usize,
    ) -> i32,
>;

/// The `token` of a callback that only delivers pending text.
pub const LIGER_TOKEN_NONE: u32 = u32::MAX;

/// One sequence on a model (opaque).
pub struct LigerSession {
    session: Session,
    model: Arc<LigerModel>,
    /// The sampler and the options it was made with (remade when they change).
    sampler: Option<(LigerSamplerOptions, Sampler)>,
    /// Tokens fed, for a sampler made later (its repetition window).
    recent: std::collections::VecDeque<u32>,
    /// The grammar every `liger_session_generate` output follows (`liger_session_set_grammar`).
    grammar: Option<Grammar>,
    /// Where every `liger_session_generate` output ends (`liger_session_set_stop_strings`).
    stop_strings: Vec<String>,
    /// Added to logits before sampling (`liger_session_set_logit_bias`).
    logit_bias: Vec<(u32, f32)>,
}

/// Most stop strings a session holds, and the longest one (bytes).
const MAX_STOP_STRINGS: usize = 16;
const MAX_STOP_BYTES: usize = 1024;

/// Tokens remembered for the repetition penalty of a sampler made later.
const RECENT: usize = 1024;

impl LigerSession {
    fn feed(&mut self, tokens: &[u32]) -> CResult {
        self.session.feed(tokens)?;
        for &t in tokens {
            self.remember(t);
            if let Some((_, s)) = &mut self.sampler {
                s.observe(t);
            }
        }
        Ok(())
    }

    fn remember(&mut self, token: u32) {
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(token);
    }

    fn sample(&mut self, options: LigerSamplerOptions) -> CResult<u32> {
        if self.session.position() == 0 {
            return Err(CError::new(
                LIGER_ERROR_INVALID_ARGUMENT,
                "nothing fed yet: feed a prompt before sampling",
            ));
        }
        let sampler = sampler_for(&mut self.sampler, &self.recent, &self.logit_bias, options);
        Ok(sampler.sample(self.session.logits()))
    }

    /// One step of `generator` (the runtime's one generation loop) with this session's sampler.
    fn generate_step(
        &mut self,
        generator: &mut Generator,
        options: LigerSamplerOptions,
    ) -> CResult<Step> {
        let sampler = sampler_for(&mut self.sampler, &self.recent, &self.logit_bias, options);
        let step = generator.step(&mut self.session, sampler)?;
        if let Step::Token { id, .. } = step {
            self.remember(id);
        }
        Ok(step)
    }
}

/// The session's sampler for `options` and `logit_bias`, made anew (with the tokens fed so
/// far) when the options change (a new bias empties the slot).
fn sampler_for<'s>(
    slot: &'s mut Option<(LigerSamplerOptions, Sampler)>,
    recent: &std::collections::VecDeque<u32>,
    logit_bias: &[(u32, f32)],
    options: LigerSamplerOptions,
) -> &'s mut Sampler {
    if slot.as_ref().is_some_and(|(o, _)| *o != options) {
        *slot = None;
    }
    let made = slot.get_or_insert_with(|| {
        let mut sampler = Sampler::new(SamplerOptions {
            logit_bias: logit_bias.to_vec(),
            ..options.into()
        });
        recent.iter().for_each(|&t| sampler.observe(t));
        (options, sampler)
    });
    &mut made.1
}

fn lock(s: &Mutex<LigerSession>) -> std::sync::MutexGuard<'_, LigerSession> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` on a live session (waiting for another thread's call on it to finish).
fn with_session<T>(
    ptr: *const LigerSession,
    f: impl FnOnce(&mut LigerSession) -> CResult<T>,
) -> CResult<T> {
    let s = session_of(ptr)?;
    let mut guard = lock(&s);
    f(&mut guard)
}

fn sampler_options(ptr: *const LigerSamplerOptions) -> CResult<LigerSamplerOptions> {
    if ptr.is_null() {
        return Ok(greedy());
    }
    Ok(slice_arg(ptr, 1, "sampler options")?[0])
}

fn greedy() -> LigerSamplerOptions {
    LigerSamplerOptions {
        temperature: 0.0,
        ..default_sampler()
    }
}

fn default_sampler() -> LigerSamplerOptions {
    let d = SamplerOptions::default();
    LigerSamplerOptions {
        temperature: d.temperature,
        top_k: d.top_k as u32,
        top_p: d.top_p,
        min_p: d.min_p,
        repeat_penalty: d.repeat_penalty,
        repeat_last_n: d.repeat_last_n as u32,
        seed: d.seed,
    }
}

/// Fills `out` with the default sampling settings (temperature 0.8, top-k 40, top-p 0.95,
/// min-p 0.05, no repetition penalty).
#[no_mangle]
pub extern "C" fn liger_sampler_options_default(out: *mut LigerSamplerOptions) -> LigerStatus {
    ffi(|| write_out(out, default_sampler(), "sampler options out-pointer"))
}

/// A new session (empty state) on `model`; free it with `liger_session_free`.
#[no_mangle]
pub extern "C" fn liger_session_new(
    model: *const LigerModel,
    out_session: *mut *mut LigerSession,
) -> LigerStatus {
    ffi(|| {
        let m = model_of(model)?;
        if out_session.is_null() {
            return Err(CError::new(LIGER_ERROR_NULL, "out_session is NULL"));
        }
        let session = LigerSession {
            session: Session::on(&m.backend, m.mode)?,
            model: m,
            sampler: None,
            recent: Default::default(),
            grammar: None,
            stop_strings: Vec::new(),
            logit_bias: Vec::new(),
        };
        hand_out(out_session, register_session(session), true)
    })
}

/// Frees a session. NULL is a no-op.
#[no_mangle]
pub extern "C" fn liger_session_free(session: *mut LigerSession) -> LigerStatus {
    ffi(|| {
        if session.is_null() || unregister(session as usize, true) {
            return Ok(());
        }
        Err(CError::new(
            LIGER_ERROR_INVALID_HANDLE,
            format!("{session:p} is not a live session handle (freed twice?)"),
        ))
    })
}

/// Forgets everything fed.
#[no_mangle]
pub extern "C" fn liger_session_reset(session: *mut LigerSession) -> LigerStatus {
    ffi(|| {
        with_session(session, |s| {
            s.session.reset()?;
            s.recent.clear();
            s.sampler = None;
            Ok(())
        })
    })
}

/// Tokens fed so far.
#[no_mangle]
pub extern "C" fn liger_session_position(
    session: *const LigerSession,
    out_position: *mut u64,
) -> LigerStatus {
    ffi(|| {
        with_session(session, |s| {
            write_out(out_position, s.session.position() as u64, "out_position")
        })
    })
}

/// Feeds `n_ids` token ids as one call (in hf-compat mode the window sees only them).
#[no_mangle]
pub extern "C" fn liger_session_feed(
    session: *mut LigerSession,
    ids: *const u32,
    n_ids: usize,
) -> LigerStatus {
    ffi(|| {
        let ids = slice_arg(ids, n_ids, "ids")?;
        with_session(session, |s| s.feed(ids))
    })
}

/// Feeds `tokens[i]` to `sessions[i]` for every i < `n`, in one step over all of them: each
/// weight is read once for the `n` sessions (several conversations of an app advance together
/// at little more than the cost of one). The sessions must be distinct and of one model;
/// each ends as `liger_session_feed` of its one token leaves it. On error none is fed.
#[no_mangle]
pub extern "C" fn liger_sessions_decode(
    sessions: *const *mut LigerSession,
    tokens: *const u32,
    n: usize,
) -> LigerStatus {
    ffi(|| {
        let handles = slice_arg(sessions, n, "sessions")?;
        let tokens = slice_arg(tokens, n, "tokens")?;
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| handles[i] as usize);
        if let Some(w) = order.windows(2).find(|w| handles[w[0]] == handles[w[1]]) {
            return Err(CError::new(
                LIGER_ERROR_INVALID_ARGUMENT,
                format!(
                    "sessions[{}] and sessions[{}] are the same session",
                    w[0], w[1]
                ),
            ));
        }
        let live = handles
            .iter()
            .map(|&h| session_of(h))
            .collect::<CResult<Vec<_>>>()?;
        // Locked in address order, so that concurrent calls over overlapping sets cannot
        // deadlock.
        let mut guards: Vec<Option<std::sync::MutexGuard<LigerSession>>> =
            (0..n).map(|_| None).collect();
        for &i in &order {
            guards[i] = Some(lock(&live[i]));
        }
        let mut guards: Vec<_> = guards.into_iter().flatten().collect();
        let mut work: Vec<(&mut Session, &[u32])> = guards
            .iter_mut()
            .zip(tokens.chunks(1))
            .map(|(g, t)| (&mut g.session, t))
            .collect();
        Session::feed_many(&mut work)?;
        for (g, &t) in guards.iter_mut().zip(tokens) {
            g.remember(t);
            if let Some((_, s)) = &mut g.sampler {
                s.observe(t);
            }
        }
        Ok(())
    })
}

/// Tokenizes `text` (with BOS etc. when `add_special`) and feeds it as one call.
#[no_mangle]
pub extern "C" fn liger_session_feed_text(
    session: *mut LigerSession,
    text: *const c_char,
    add_special: bool,
) -> LigerStatus {
    ffi(|| {
        let text = str_arg(text, "text")?;
        with_session(session, |s| {
            let ids = tokenizer_of(&s.model)?.encode(text, add_special)?;
            s.feed(&ids)
        })
    })
}

/// Copies the logits after the last token fed ([vocab] floats; zeros before any) into
/// `out_logits` (capacity `capacity` floats); `*out_len` = vocab.
#[no_mangle]
pub extern "C" fn liger_session_logits(
    session: *const LigerSession,
    out_logits: *mut f32,
    capacity: usize,
    out_len: *mut usize,
) -> LigerStatus {
    ffi(|| {
        with_session(session, |s| {
            copy_out(s.session.logits(), out_logits, capacity, out_len, "logits")
        })
    })
}

/// Picks the next token from the last logits with `options` (NULL = greedy); the session's
/// sampler keeps its random state across calls with the same options. Does not feed it.
#[no_mangle]
pub extern "C" fn liger_session_sample(
    session: *mut LigerSession,
    options: *const LigerSamplerOptions,
    out_token: *mut u32,
) -> LigerStatus {
    ffi(|| {
        let options = sampler_options(options)?;
        with_session(session, |s| {
            write_out(out_token, s.sample(options)?, "out_token")
        })
    })
}

/// Generates up to `max_tokens` tokens after what was fed: sample (`options`, NULL = greedy),
/// feed, call `callback` (may be NULL) — until a stop token of the model (not fed, not
/// reported), a stop string of the session (its text and what follows not reported; the tokens
/// that wrote it are fed), `max_tokens`, or the callback returns non-zero. `*out_n_generated` (may be NULL)
/// = tokens generated and fed. The session is not locked while the callback runs.
#[no_mangle]
pub extern "C" fn liger_session_generate(
    session: *mut LigerSession,
    options: *const LigerSamplerOptions,
    max_tokens: usize,
    callback: LigerTokenCallback,
    user_data: *mut c_void,
    out_n_generated: *mut usize,
) -> LigerStatus {
    ffi(|| {
        let options = sampler_options(options)?;
        let s = session_of(session)?;
        let (model, grammar, stop_strings) = {
            let s = lock(&s);
            let stops = s.stop_strings.clone();
            (Arc::clone(&s.model.model), s.grammar.clone(), stops)
        };
        let mut generator = Generator::new(
            &model,
            GenerateOptions {
                max_tokens,
                grammar,
                stop_strings,
                ..Default::default()
            },
        )?;
        // The NUL-terminated copy of each piece, one buffer for the whole generation.
        let mut bytes = Vec::new();
        let mut deliver = |token: u32, piece: &str| -> bool {
            let Some(cb) = callback else { return false };
            bytes.clear();
            bytes.extend_from_slice(piece.as_bytes());
            bytes.push(0);
            // SAFETY: a callback the caller provided with this signature; `bytes` outlives
            // the call and holds `piece.len()` bytes plus a NUL.
            unsafe { cb(user_data, token, bytes.as_ptr().cast(), piece.len()) != 0 }
        };
        let mut result = Ok(());
        loop {
            // The session is locked for one step at a time, not while the callback runs.
            let step = lock(&s).generate_step(&mut generator, options);
            match step {
                Ok(Step::Token { id, text }) => {
                    if deliver(id, &text) {
                        break;
                    }
                }
                Ok(Step::Done(_)) => break,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let rest = generator.finish()?;
        if !rest.is_empty() {
            deliver(LIGER_TOKEN_NONE, &rest);
        }
        let n = generator.generated();
        if !out_n_generated.is_null() {
            write_out(out_n_generated, n, "out_n_generated")?;
        }
        result
    })
}

/// Constrains what every later `liger_session_generate` of this session writes (structured
/// output): `kind` is "json_schema" (`grammar` is a JSON schema), "json_object" (`grammar`
/// ignored, may be NULL), "lark" (llguidance's Lark syntax) or "regex". The grammar is compiled
/// now: one the engine rejects is `LIGER_ERROR_INVALID_ARGUMENT` with the reason, and the
/// session keeps its previous grammar. `kind` NULL removes the constraint. A constrained output
/// ends at a stop id where the grammar can end, or when it admits nothing more.
#[no_mangle]
pub extern "C" fn liger_session_set_grammar(
    session: *mut LigerSession,
    kind: *const c_char,
    grammar: *const c_char,
) -> LigerStatus {
    ffi(|| {
        let s = session_of(session)?;
        if kind.is_null() {
            lock(&s).grammar = None;
            return Ok(());
        }
        let kind = GrammarKind::parse(str_arg(kind, "kind")?)?;
        let text = match (kind, grammar.is_null()) {
            (GrammarKind::JsonObject, true) => String::new(),
            _ => str_arg(grammar, "grammar")?.to_owned(),
        };
        let grammar = Grammar { kind, text };
        let model = Arc::clone(&lock(&s).model.model);
        // Compiled once here for its errors (the generation compiles its own state).
        model.grammars()?.constraint(&grammar)?;
        lock(&s).grammar = Some(grammar);
        Ok(())
    })
}

/// Bytes of a saved state (fixed for a model).
#[no_mangle]
pub extern "C" fn liger_state_size(
    session: *const LigerSession,
    out_size: *mut usize,
) -> LigerStatus {
    ffi(|| {
        with_session(session, |s| {
            write_out(out_size, s.session.state_size(), "out_size")
        })
    })
}

/// Saves the state (versioned, checksummed, bound to the model and decode mode) into `out`
/// (capacity `capacity` bytes); `*out_len` = its size.
#[no_mangle]
pub extern "C" fn liger_state_save(
    session: *const LigerSession,
    out: *mut u8,
    capacity: usize,
    out_len: *mut usize,
) -> LigerStatus {
    ffi(|| {
        with_session(session, |s| {
            copy_out(&s.session.save_state()?, out, capacity, out_len, "state")
        })
    })
}

/// Restores a state saved by `liger_state_save` on the same model file and decode mode; on
/// error the session is unchanged.
#[no_mangle]
pub extern "C" fn liger_state_load(
    session: *mut LigerSession,
    data: *const u8,
    len: usize,
) -> LigerStatus {
    ffi(|| {
        let bytes = slice_arg(data, len, "state data")?;
        with_session(session, |s| {
            s.session
                .load_state(bytes)
                .map_err(|e| CError::new(LIGER_ERROR_STATE, e.to_string()))?;
            s.sampler = None;
            Ok(())
        })
    })
}

/// Ends every later `liger_session_generate` of this session where its text reaches one of
/// `stops` (`n_stops` NUL-terminated UTF-8 strings, matched across tokens; text that may begin
/// one is held back until it cannot). At most 16, each 1 to 1024 bytes; `n_stops` 0 removes
/// them (`stops` may then be NULL). On error the session keeps its previous stop strings.
#[no_mangle]
pub extern "C" fn liger_session_set_stop_strings(
    session: *mut LigerSession,
    stops: *const *const c_char,
    n_stops: usize,
) -> LigerStatus {
    ffi(|| {
        if n_stops > MAX_STOP_STRINGS {
            return Err(CError::new(
                LIGER_ERROR_INVALID_ARGUMENT,
                format!("{n_stops} stop strings: at most {MAX_STOP_STRINGS}"),
            ));
        }
        let pointers = slice_arg(stops, n_stops, "stops")?;
        let mut strings = Vec::with_capacity(n_stops);
        for (i, &p) in pointers.iter().enumerate() {
            let stop = str_arg(p, &format!("stops[{i}]"))?;
            if stop.is_empty() || stop.len() > MAX_STOP_BYTES {
                return Err(CError::new(
                    LIGER_ERROR_INVALID_ARGUMENT,
                    format!("stops[{i}] is {} bytes: 1 to {MAX_STOP_BYTES}", stop.len()),
                ));
            }
            strings.push(stop.to_owned());
        }
        with_session(session, |s| {
            s.stop_strings = strings;
            Ok(())
        })
    })
}

/// Adds `biases[i]` to the logit of token `ids[i]` before every later sample of this session
/// (`liger_session_sample`, `liger_session_generate`), as OpenAI's `logit_bias`: -100 bans a
/// token, +100 all but forces it. Ids must be in the vocabulary and biases finite; `n` 0
/// removes the bias (`ids`, `biases` may then be NULL). On error the session is unchanged.
#[no_mangle]
pub extern "C" fn liger_session_set_logit_bias(
    session: *mut LigerSession,
    ids: *const u32,
    biases: *const f32,
    n: usize,
) -> LigerStatus {
    ffi(|| {
        let ids = slice_arg(ids, n, "ids")?;
        let biases = slice_arg(biases, n, "biases")?;
        with_session(session, |s| {
            let vocab = s.model.model.config.vocab_size;
            let mut bias = Vec::with_capacity(n);
            for (&id, &b) in ids.iter().zip(biases) {
                if id as usize >= vocab || !b.is_finite() {
                    return Err(CError::new(
                        LIGER_ERROR_INVALID_ARGUMENT,
                        format!("logit bias {b} for token {id}: the vocabulary has {vocab} tokens and a bias must be finite"),
                    ));
                }
                bias.push((id, b));
            }
            s.logit_bias = bias;
            // The sampler is made anew with it at the next sample.
            s.sampler = None;
            Ok(())
        })
    })
}

/// A new, independent session starting from this one's state (free it separately).
#[no_mangle]
pub extern "C" fn liger_session_fork(
    session: *const LigerSession,
    out_session: *mut *mut LigerSession,
) -> LigerStatus {
    ffi(|| {
        if out_session.is_null() {
            return Err(CError::new(LIGER_ERROR_NULL, "out_session is NULL"));
        }
        let fork = with_session(session, |s| {
            Ok(LigerSession {
                session: s.session.fork()?,
                model: Arc::clone(&s.model),
                sampler: s.sampler.clone(),
                recent: s.recent.clone(),
                grammar: s.grammar.clone(),
                stop_strings: s.stop_strings.clone(),
                logit_bias: s.logit_bias.clone(),
            })
        })?;
        hand_out(out_session, register_session(fork), true)
    })
}
