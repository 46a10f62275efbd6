//! The library's error type. Every failure on input from a file, a user or the C ABI is an
//! `Error` that names what is wrong; nothing in the library panics on such input.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The bytes of a file are not a valid GGUF (or are not what the field says).
    /// The message names the field or tensor and the byte offset.
    #[error("malformed GGUF: {0}")]
    Format(String),
    /// The model configuration (in a GGUF or an HF `config.json`) is missing or wrong.
    #[error("bad model config: {0}")]
    Config(String),
    /// A tensor is missing, misshapen or of a type that cannot be used where it is.
    #[error("tensor error: {0}")]
    Tensor(String),
    /// Input that is well-formed but not supported (a quant type, a model_type, ...).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A bad argument from the caller (a length, an option, a value).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Tokenizer construction or use failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
