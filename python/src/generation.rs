//! `Generation`: the runtime's generation loop (`liger::Generator`: sampling, stop ids, stop
//! strings, grammar, streamed text) as a Python iterator of text pieces, one model step per
//! token with the GIL released.

use crate::error;
use crate::session::{feed_interruptible, Session};
use liger::generate::{Generator, Step};
use liger::{Sampler, StopReason};
use pyo3::prelude::*;
use std::sync::Mutex;

/// A generation in progress: iterate it for the text, piece by piece.
#[pyclass(module = "liger._liger", frozen)]
pub struct Generation {
    session: Py<Session>,
    run: Mutex<Run>,
}

struct Run {
    /// Prompt tokens not fed yet (fed by the first `__next__`).
    pending: Vec<u32>,
    prompt_tokens: usize,
    generator: Generator,
    sampler: Sampler,
    tokens: Vec<u32>,
    text: String,
    stop: Option<StopReason>,
}

impl Generation {
    pub(crate) fn new(
        session: Py<Session>,
        prompt: Vec<u32>,
        generator: Generator,
        mut sampler: Sampler,
    ) -> Generation {
        prompt.iter().for_each(|&t| sampler.observe(t));
        Generation {
            session,
            run: Mutex::new(Run {
                prompt_tokens: prompt.len(),
                pending: prompt,
                generator,
                sampler,
                tokens: Vec::new(),
                text: String::new(),
                stop: None,
            }),
        }
    }

    fn run(&self) -> PyResult<std::sync::MutexGuard<'_, Run>> {
        match self.run.try_lock() {
            Ok(run) => Ok(run),
            Err(std::sync::TryLockError::Poisoned(p)) => Ok(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => {
                Err(error("this generation is being read in another thread"))
            }
        }
    }
}

#[pymethods]
impl Generation {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// The next piece of text (whole UTF-8 characters); StopIteration once the generation
    /// ends. The first call feeds the prompt. Ctrl-C raises KeyboardInterrupt between tokens;
    /// iterating again goes on from there.
    fn __next__(&self, py: Python<'_>) -> PyResult<Option<String>> {
        let mut guard = self.run()?;
        let run = &mut *guard;
        if run.stop.is_some() {
            return Ok(None);
        }
        let mut guard = self.session.get().lock()?;
        let session: &mut liger::Session = &mut guard;
        if !run.pending.is_empty() {
            let prompt = std::mem::take(&mut run.pending);
            feed_interruptible(py, session, &prompt)?;
        }
        loop {
            let (generator, sampler) = (&mut run.generator, &mut run.sampler);
            let step = py
                .detach(|| generator.step(session, sampler))
                .map_err(error)?;
            match step {
                Step::Token { id, text } => {
                    run.tokens.push(id);
                    if !text.is_empty() {
                        run.text.push_str(&text);
                        return Ok(Some(text));
                    }
                    py.check_signals()?;
                }
                Step::Done(reason) => {
                    run.stop = Some(reason);
                    let rest = run.generator.finish().map_err(error)?;
                    if rest.is_empty() {
                        return Ok(None);
                    }
                    run.text.push_str(&rest);
                    return Ok(Some(rest));
                }
            }
        }
    }

    /// Ends the generation here (finish_reason "cancelled"); the session keeps what was fed.
    fn close(&self) -> PyResult<()> {
        let mut run = self.run()?;
        if run.stop.is_none() {
            run.stop = Some(StopReason::Cancelled);
        }
        Ok(())
    }

    /// Runs to the end and returns the whole text (what iterating would have given).
    fn read(&self, py: Python<'_>) -> PyResult<String> {
        while self.__next__(py)?.is_some() {}
        Ok(self.run()?.text.clone())
    }

    /// OpenAI's finish_reason once ended ("stop", "length", "cancelled"), else None.
    #[getter]
    fn finish_reason(&self) -> PyResult<Option<&'static str>> {
        Ok(self.run()?.stop.map(StopReason::finish_reason))
    }

    /// How it ended, in more detail: "stop_token", "stop_string", "grammar_complete",
    /// "length", "cancelled"; None while it runs.
    #[getter]
    fn stop_reason(&self) -> PyResult<Option<&'static str>> {
        Ok(self.run()?.stop.map(|s| match s {
            StopReason::StopToken(_) => "stop_token",
            StopReason::StopString => "stop_string",
            StopReason::Complete => "grammar_complete",
            StopReason::Length => "length",
            StopReason::Cancelled => "cancelled",
        }))
    }

    /// Token ids generated so far (a stop id is not among them).
    #[getter]
    fn tokens(&self) -> PyResult<Vec<u32>> {
        Ok(self.run()?.tokens.clone())
    }

    /// The text given out so far.
    #[getter]
    fn text(&self) -> PyResult<String> {
        Ok(self.run()?.text.clone())
    }

    #[getter]
    fn prompt_tokens(&self) -> PyResult<usize> {
        Ok(self.run()?.prompt_tokens)
    }

    #[getter]
    fn completion_tokens(&self) -> PyResult<usize> {
        Ok(self.run()?.tokens.len())
    }

    /// The session it runs on (continue the conversation from it).
    #[getter]
    fn session(&self, py: Python<'_>) -> Py<Session> {
        self.session.clone_ref(py)
    }
}
