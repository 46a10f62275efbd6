//! `Session`: one sequence of a model — feed tokens, read logits, save / restore / fork the
//! fixed-size state — and `feed_many`, several sessions fed in one step.

use crate::error;
use numpy::{PyArray1, PyArray2, PyArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::sync::{Mutex, MutexGuard};

/// Tokens fed per call between two looks at Ctrl-C (window mode: chunks give the same state).
const FEED_CHUNK: usize = 256;

/// One sequence of a model. Its memory is fixed whatever the number of tokens fed.
#[pyclass(module = "liger._liger", frozen)]
pub struct Session {
    inner: Mutex<liger::Session>,
}

impl Session {
    pub(crate) fn wrap(session: liger::Session) -> Session {
        Session {
            inner: Mutex::new(session),
        }
    }

    /// The runtime's session. A session runs one call at a time: a second thread is told so
    /// rather than left waiting (it would hold the GIL the first one needs to return).
    pub(crate) fn lock(&self) -> PyResult<MutexGuard<'_, liger::Session>> {
        match self.inner.try_lock() {
            Ok(guard) => Ok(guard),
            Err(std::sync::TryLockError::Poisoned(p)) => Ok(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => Err(error(
                "this session is busy in another thread (a session runs one call at a time)",
            )),
        }
    }
}

/// Feeds `tokens` to `session` with the GIL released. In window mode (where chunks give exactly
/// the state of one call) they go in chunks, with a look at Ctrl-C between two: an interrupted
/// feed leaves the chunks fed so far (`position` says how many tokens). In hf-compat mode the
/// window sees the tokens of one call, so they go as one.
pub(crate) fn feed_interruptible(
    py: Python<'_>,
    session: &mut liger::Session,
    tokens: &[u32],
) -> PyResult<()> {
    if session.mode() == liger::DecodeMode::HfCompat {
        return py
            .detach(|| session.feed(tokens).map(|_| ()))
            .map_err(error);
    }
    // Every token checked first: a bad id late in a long prompt feeds nothing.
    liger::backend::check_vocabulary(session.model(), tokens).map_err(error)?;
    for chunk in tokens.chunks(FEED_CHUNK) {
        py.detach(|| session.feed(chunk).map(|_| ()))
            .map_err(error)?;
        py.check_signals()?;
    }
    Ok(())
}

#[pymethods]
impl Session {
    /// Feeds token ids (one call); the logits after the last are then `logits()`.
    fn feed(&self, py: Python<'_>, tokens: Vec<u32>) -> PyResult<()> {
        let mut session = self.lock()?;
        feed_interruptible(py, &mut session, &tokens)
    }

    /// Feeds token ids as one call and returns the logits after each, float32 [len(tokens),
    /// n_vocab] (handed to NumPy without a copy).
    fn feed_all_logits<'py>(
        &self,
        py: Python<'py>,
        tokens: Vec<u32>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let mut guard = self.lock()?;
        let session: &mut liger::Session = &mut guard;
        let vocab = session.model().config.vocab_size;
        let all = py
            .detach(|| session.feed_all_logits(&tokens))
            .map_err(error)?;
        PyArray1::from_vec(py, all).reshape([tokens.len(), vocab])
    }

    /// The logits after the last token fed, float32 [n_vocab] (a new array: it stays as it is
    /// when the session is fed again).
    fn logits<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let session = self.lock()?;
        if session.position() == 0 {
            return Err(error("nothing fed yet: feed tokens before reading logits"));
        }
        Ok(PyArray1::from_slice(py, session.logits()))
    }

    /// Tokens fed so far.
    #[getter]
    fn position(&self) -> PyResult<usize> {
        Ok(self.lock()?.position())
    }

    /// Bytes of a saved state (fixed for a model, whatever the number of tokens fed).
    #[getter]
    fn state_size(&self) -> PyResult<usize> {
        Ok(self.lock()?.state_size())
    }

    /// "window" or "hf-compat".
    #[getter]
    fn decode(&self) -> PyResult<&'static str> {
        Ok(self.lock()?.mode().name())
    }

    /// The state as versioned, checksummed bytes bound to this model and decode mode; they
    /// load in any session of the same model, on any backend.
    fn save_state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let mut guard = self.lock()?;
        // `&mut`: a session is Send, not Sync.
        let session: &mut liger::Session = &mut guard;
        let bytes = py.detach(move || session.save_state()).map_err(error)?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Restores a state from `save_state` (checked: another model's, a truncated or corrupted
    /// one is refused and the session is left as it was).
    fn load_state(&self, py: Python<'_>, state: &[u8]) -> PyResult<()> {
        let mut guard = self.lock()?;
        let session: &mut liger::Session = &mut guard;
        py.detach(|| session.load_state(state)).map_err(error)
    }

    /// A new session with a copy of this one's state (continue two ways from one prefix).
    fn fork(&self, py: Python<'_>) -> PyResult<Session> {
        let mut guard = self.lock()?;
        let session: &mut liger::Session = &mut guard;
        let copy = py.detach(move || session.fork()).map_err(error)?;
        Ok(Session::wrap(copy))
    }

    /// Forgets everything fed.
    fn reset(&self) -> PyResult<()> {
        self.lock()?.reset().map_err(error)
    }

    fn __repr__(&self) -> String {
        match self.inner.try_lock() {
            Ok(s) => format!(
                "Session(position={}, decode={:?}, backend={:?})",
                s.position(),
                s.mode().name(),
                s.backend().kind().name()
            ),
            Err(_) => "Session(busy)".into(),
        }
    }
}

/// Feeds several sessions of one model their own tokens in steps over all of them (each weight
/// read once for every session): each ends as its own `feed` would leave it.
#[pyfunction]
pub fn feed_many(
    py: Python<'_>,
    sessions: Vec<Bound<'_, Session>>,
    tokens: Vec<Vec<u32>>,
) -> PyResult<()> {
    if sessions.len() != tokens.len() {
        return Err(error(format!(
            "{} sessions but {} token lists",
            sessions.len(),
            tokens.len()
        )));
    }
    let mut guards = Vec::with_capacity(sessions.len());
    for (i, s) in sessions.iter().enumerate() {
        let guard = s.get().lock().map_err(|_| {
            error(format!(
                "session #{i} is given twice or is busy in another thread"
            ))
        })?;
        guards.push(guard);
    }
    let mut work: Vec<(&mut liger::Session, &[u32])> = guards
        .iter_mut()
        .zip(&tokens)
        .map(|(g, t)| (&mut **g, t.as_slice()))
        .collect();
    py.detach(|| liger::Session::feed_many(&mut work))
        .map_err(error)
}
