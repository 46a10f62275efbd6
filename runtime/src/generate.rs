//! The generation loop, written once for every front end (`liger run` and `chat`, the server,
//! the C ABI, JNI) and every backend: sample the next token from the session's logits, stop at
//! one of the model's stop ids (or the caller's), feed it, and turn it into text.

use crate::constraint::{Constraint, Grammar};
use crate::error::{Error, Result};
use crate::sampler::Sampler;
use crate::session::Session;
use crate::tokenizer::StreamDecoder;
use crate::Model;
use std::sync::Arc;

/// How a generation ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced this stop id (not fed, not shown).
    StopToken(u32),
    /// `max_tokens` were generated.
    Length,
    /// The caller said stop (a client left, Ctrl-C, a callback).
    Cancelled,
    /// The output grammar admits no further token (the constrained output is complete).
    Complete,
}

impl StopReason {
    /// OpenAI's `finish_reason`: "stop", "length" or "cancelled".
    pub fn finish_reason(self) -> &'static str {
        match self {
            StopReason::StopToken(_) | StopReason::Complete => "stop",
            StopReason::Length => "length",
            StopReason::Cancelled => "cancelled",
        }
    }
}

#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Go on past the model's stop ids (`extra_stops` still stop).
    pub ignore_eos: bool,
    /// Stop ids of the caller's, besides the model's.
    pub extra_stops: Vec<u32>,
    /// Leave special tokens (`<|im_end|>`, …) out of the text (chat answers).
    pub skip_special: bool,
    /// Only text of this grammar (JSON schema, JSON object, Lark, regex) is generated.
    pub grammar: Option<Grammar>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 128,
            ignore_eos: false,
            extra_stops: Vec::new(),
            skip_special: false,
            grammar: None,
        }
    }
}

/// One step of a generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// A token was generated and fed; `text` is the complete UTF-8 it adds (may be empty while
    /// a character is incomplete, and is empty for a file without a tokenizer).
    Token {
        id: u32,
        text: String,
    },
    Done(StopReason),
}

/// What [`Generator::run`] produced.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The tokens generated and fed (a stop id excluded).
    pub tokens: Vec<u32>,
    pub stop: StopReason,
    /// Wall time of the loop.
    pub seconds: f64,
}

/// The state of one generation: the stop rule, the count, the text decoder.
pub struct Generator {
    model: Arc<Model>,
    stops: Vec<u32>,
    options: GenerateOptions,
    generated: usize,
    decoder: StreamDecoder,
    /// The output grammar's state, when there is one.
    constraint: Option<Constraint>,
}

impl Generator {
    pub fn new(model: &Arc<Model>, options: GenerateOptions) -> Result<Generator> {
        let mut stops = if options.ignore_eos {
            Vec::new()
        } else {
            crate::tokenizer::stop_ids(model.file(), model.config.vocab_size)?
        };
        stops.extend_from_slice(&options.extra_stops);
        let decoder = if options.skip_special {
            StreamDecoder::skipping_special()
        } else {
            StreamDecoder::new()
        };
        let constraint = match &options.grammar {
            Some(g) => Some(model.grammars()?.constraint(g)?),
            None => None,
        };
        Ok(Generator {
            model: Arc::clone(model),
            stops,
            options,
            generated: 0,
            decoder,
            constraint,
        })
    }

    /// Tokens generated so far.
    pub fn generated(&self) -> usize {
        self.generated
    }

    /// Samples the next token from `session`'s logits; a stop id ends the generation (it is
    /// not fed); any other is fed, observed by `sampler` (its repetition window) and decoded.
    pub fn step(&mut self, session: &mut Session, sampler: &mut Sampler) -> Result<Step> {
        match self.next_token(session, sampler)? {
            Err(stop) => Ok(Step::Done(stop)),
            Ok(id) => {
                session.feed(&[id])?;
                self.accept(id, sampler)
            }
        }
    }

    /// The first half of [`Self::step`], for a caller that feeds many sessions together
    /// ([`Session::feed_many`]): the token to feed next, or why the generation ends.
    pub fn next_token(
        &mut self,
        session: &Session,
        sampler: &mut Sampler,
    ) -> Result<std::result::Result<u32, StopReason>> {
        if self.generated >= self.options.max_tokens {
            return Ok(Err(StopReason::Length));
        }
        if session.position() == 0 {
            return Err(Error::InvalidArgument(
                "nothing fed yet: feed a prompt before generating".into(),
            ));
        }
        let id = match &mut self.constraint {
            Some(c) if c.is_complete() => return Ok(Err(StopReason::Complete)),
            Some(c) => sampler.sample(c.mask(session.logits())?),
            None => sampler.sample(session.logits()),
        };
        if self.stops.contains(&id) {
            return Ok(Err(StopReason::StopToken(id)));
        }
        Ok(Ok(id))
    }

    /// The second half of [`Self::step`], once `id` (from [`Self::next_token`]) was fed:
    /// counts it, shows it to `sampler` and decodes its text.
    pub fn accept(&mut self, id: u32, sampler: &mut Sampler) -> Result<Step> {
        if let Some(c) = &mut self.constraint {
            c.commit(id)?;
        }
        sampler.observe(id);
        self.generated += 1;
        let text = match &self.model.tokenizer {
            Some(t) => self.decoder.push(t, id)?.unwrap_or_default(),
            None => String::new(),
        };
        Ok(Step::Token { id, text })
    }

    /// Text still held back at the end (an incomplete character, decoded lossily).
    pub fn finish(&mut self) -> Result<String> {
        match &self.model.tokenizer {
            Some(t) => self.decoder.flush(t),
            None => Ok(String::new()),
        }
    }

    /// Steps until the generation ends; `on_token(id, text)` sees each token (returning
    /// `false` cancels) and, with id `None`, the text held back at the end.
    pub fn run(
        &mut self,
        session: &mut Session,
        sampler: &mut Sampler,
        mut on_token: impl FnMut(Option<u32>, &str) -> Result<bool>,
    ) -> Result<Outcome> {
        let started = std::time::Instant::now();
        let mut tokens = Vec::new();
        let stop = loop {
            match self.step(session, sampler)? {
                Step::Token { id, text } => {
                    tokens.push(id);
                    if !on_token(Some(id), &text)? {
                        break StopReason::Cancelled;
                    }
                }
                Step::Done(reason) => break reason,
            }
        };
        let rest = self.finish()?;
        if !rest.is_empty() {
            on_token(None, &rest)?;
        }
        Ok(Outcome {
            tokens,
            stop,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}
