//! The generation loop, written once for every front end (`liger run` and `chat`, the server,
//! the C ABI, JNI) and every backend: sample the next token from the session's logits, stop at
//! one of the model's stop ids (or the caller's), feed it, turn it into text, and stop where
//! the text reaches one of the caller's stop strings.

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
    /// The text reached one of the caller's stop strings (cut where it begins).
    StopString,
}

impl StopReason {
    /// OpenAI's `finish_reason`: "stop", "length" or "cancelled".
    pub fn finish_reason(self) -> &'static str {
        match self {
            StopReason::StopToken(_) | StopReason::Complete | StopReason::StopString => "stop",
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
    /// The text ends where it reaches one of these (OpenAI's `stop`), which is not shown;
    /// text that may begin one is held back until it is clear it does not.
    pub stop_strings: Vec<String>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 128,
            ignore_eos: false,
            extra_stops: Vec::new(),
            skip_special: false,
            grammar: None,
            stop_strings: Vec::new(),
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
    stop_strings: StopStrings,
}

impl Generator {
    pub fn new(model: &Arc<Model>, options: GenerateOptions) -> Result<Generator> {
        let constraint = match &options.grammar {
            Some(g) => Some(model.grammars()?.constraint(g)?),
            None => None,
        };
        Self::with_constraint(model, options, constraint)
    }

    /// As [`Generator::new`] with the output grammar already compiled (`options.grammar` is
    /// not read): a server compiles it off its step thread, where a slow or failing grammar
    /// cannot stall the other sequences.
    pub fn with_constraint(
        model: &Arc<Model>,
        options: GenerateOptions,
        constraint: Option<Constraint>,
    ) -> Result<Generator> {
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
        let stop_strings = StopStrings::new(&options.stop_strings);
        Ok(Generator {
            model: Arc::clone(model),
            stops,
            options,
            generated: 0,
            decoder,
            constraint,
            stop_strings,
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
        if self.stop_strings.reached {
            return Ok(Err(StopReason::StopString));
        }
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
        Ok(Step::Token {
            id,
            text: self.stop_strings.push(text),
        })
    }

    /// Text still held back at the end (an incomplete character, decoded lossily; the start
    /// of a stop string that did not come).
    pub fn finish(&mut self) -> Result<String> {
        let rest = match &self.model.tokenizer {
            Some(t) => self.decoder.flush(t)?,
            None => String::new(),
        };
        let rest = self.stop_strings.push(rest);
        Ok(rest + &self.stop_strings.flush())
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

/// The caller's stop strings over the text as it is generated: [`Self::push`] returns what may
/// be shown — all of it but a tail that could still begin a stop string, or everything before
/// the first stop string once one is complete (then nothing more).
#[derive(Clone, Debug, Default)]
pub struct StopStrings {
    stops: Vec<String>,
    /// Text not shown yet: a tail that a stop string begins with.
    held: String,
    /// A stop string was reached.
    pub reached: bool,
}

impl StopStrings {
    pub fn new(stops: &[String]) -> StopStrings {
        StopStrings {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            ..Default::default()
        }
    }

    /// The text that can be shown once `text` follows what came before (`text` itself, not
    /// a copy, when there are no stop strings).
    pub fn push(&mut self, text: String) -> String {
        if self.reached {
            return String::new();
        }
        if self.stops.is_empty() {
            return text;
        }
        self.held.push_str(&text);
        let found = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = found {
            self.reached = true;
            self.held.truncate(at);
            return std::mem::take(&mut self.held);
        }
        // The earliest character from which the rest could still grow into a stop string.
        let keep_from = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| self.stops.iter().any(|s| s.starts_with(&self.held[i..])))
            .unwrap_or(self.held.len());
        let rest = self.held.split_off(keep_from);
        std::mem::replace(&mut self.held, rest)
    }

    /// The held-back tail, once no more text comes.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::StopStrings;

    /// Pushes `pieces` one by one: the text shown after each, and whether a stop was reached.
    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool) {
        let mut s = StopStrings::new(&stops.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let shown = pieces.iter().map(|p| s.push(p.to_string())).collect();
        (shown, s.reached)
    }

    #[test]
    fn stop_strings_cut_where_they_begin_across_pieces() {
        // Within one piece.
        assert_eq!(run(&["."], &["Paris. It"]), (vec!["Paris".into()], true));
        // Across two pieces: "Par" is shown, "is" held (it may begin "is."), then cut.
        let (shown, reached) = run(&["is."], &["Par", "is", ". More", "x"]);
        assert_eq!(shown, ["Par", "", "", ""]);
        assert!(reached);
        // A tail that turns out not to be a stop is shown once that is clear.
        assert_eq!(run(&["END"], &["the E", "NVY"]).0, ["the ", "ENVY"]);
        // The earliest stop wins; multi-byte characters are never split.
        assert_eq!(run(&["b", "ab"], &["xxab"]).0, ["xx"]);
        assert_eq!(run(&["éé"], &["café", "é!"]).0, ["caf", ""]);
        // No stops: everything passes.
        assert_eq!(run(&[], &["a", "b"]), (vec!["a".into(), "b".into()], false));
    }

    #[test]
    fn held_text_comes_out_at_the_end() {
        let mut s = StopStrings::new(&["<end>".to_string()]);
        assert_eq!(s.push("done <en".into()), "done ");
        assert_eq!(s.flush(), "<en");
        assert!(!s.reached);
    }
}
