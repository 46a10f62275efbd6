//! `liger._liger`: the runtime's Python bindings (PyO3, abi3). The same model, backends,
//! sessions and generation loop as the CLI, the server and the C ABI — nothing is written twice:
//! a [`Model`] opens a file on a backend, a [`Session`] is one sequence on it, a
//! [`Generation`] is the runtime's generation loop as a Python iterator. The GIL is released
//! while the model computes; Ctrl-C (KeyboardInterrupt) is seen between tokens and between
//! chunks of a prompt. The OpenAI-shaped calls (`create_completion`, `create_chat_completion`)
//! are in the Python package around this module (`liger/__init__.py`), over
//! [`Model::request`], which parses their request as the server does (`liger::openai`).

mod generation;
mod model;
mod session;

use pyo3::prelude::*;

pyo3::create_exception!(
    _liger,
    LigerError,
    pyo3::exceptions::PyException,
    "An error of the liger runtime: a bad or unreadable model file, a token outside the \
     vocabulary, a state from another model, a grammar the engine refuses, ..."
);

/// A runtime error as a Python exception carrying the runtime's message.
pub(crate) fn error(e: impl std::fmt::Display) -> PyErr {
    LigerError::new_err(e.to_string())
}

#[pymodule]
fn _liger(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("LigerError", m.py().get_type::<LigerError>())?;
    m.add_class::<model::Model>()?;
    m.add_class::<session::Session>()?;
    m.add_class::<generation::Generation>()?;
    m.add_function(wrap_pyfunction!(session::feed_many, m)?)?;
    Ok(())
}
