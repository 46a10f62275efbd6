//! `Model`: a liger file opened on a backend, with its tokenizer and chat template; makes
//! sessions and generations.

use crate::error;
use crate::generation::Generation;
use crate::session::Session;
use liger::chat::ChatTemplate;
use liger::generate::{GenerateOptions, Generator};
use liger::{Backend, BackendKind, DecodeMode, ModelOptions, Sampler, SamplerOptions, Tokenizer};
use pyo3::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;

/// Most tokens of an answer to an OpenAI-shaped call that names no `max_tokens` (as
/// `liger serve --max-tokens`).
const DEFAULT_ANSWER_TOKENS: usize = 1024;

/// A prompt: text, or token ids.
#[derive(FromPyObject)]
pub enum Prompt {
    Text(String),
    Ids(Vec<u32>),
}

/// One stop string or several.
#[derive(FromPyObject)]
pub enum Stops {
    One(String),
    Many(Vec<String>),
}

/// A liger GGUF file opened on a backend (CPU, CUDA or wgpu), with its tokenizer and chat
/// template. Loading releases the GIL.
#[pyclass(module = "liger._liger", frozen, subclass)]
pub struct Model {
    model: Arc<liger::Model>,
    backend: Arc<dyn Backend>,
    mode: DecodeMode,
    /// The file's chat template (ChatML where it has none), or why there is none.
    template: Result<ChatTemplate, String>,
    path: String,
    reason: String,
}

impl Model {
    fn tokenizer(&self) -> PyResult<&Tokenizer> {
        self.model
            .tokenizer
            .as_ref()
            .ok_or_else(|| error("this file has no tokenizer: give token ids"))
    }

    fn template(&self) -> PyResult<&ChatTemplate> {
        self.template.as_ref().map_err(error)
    }

    fn new_session(&self) -> PyResult<liger::Session> {
        liger::Session::on(&self.backend, self.mode).map_err(error)
    }

    /// A generation on `session` (a new one when None) from `prompt`.
    fn start(
        &self,
        py: Python<'_>,
        session: Option<Py<Session>>,
        prompt: Vec<u32>,
        options: GenerateOptions,
        sampling: SamplerOptions,
    ) -> PyResult<Generation> {
        let session = match session {
            Some(s) => s,
            None => Py::new(py, Session::wrap(self.new_session()?))?,
        };
        if prompt.is_empty() && session.get().lock()?.position() == 0 {
            return Err(error(
                "the prompt is empty (and the session has nothing fed)",
            ));
        }
        liger::backend::check_vocabulary(&self.model, &prompt).map_err(error)?;
        let generator = Generator::new(&self.model, options).map_err(error)?;
        Ok(Generation::new(
            session,
            prompt,
            generator,
            Sampler::new(sampling),
        ))
    }
}

/// A seed from the clock, for a call that names none.
fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[pymethods]
impl Model {
    /// Opens a liger GGUF file. `backend`: "auto" (CUDA where a device passes the self-test,
    /// else the CPU), "cpu", "wgpu" or "cuda"; `threads`: CPU threads (default: every core);
    /// `decode`: "window" (token-by-token logits equal one full forward) or "hf-compat";
    /// `use_mmap=False` reads the file into memory (it may then be replaced while the model
    /// runs; mapped, that would crash the process).
    #[new]
    #[pyo3(signature = (path, backend = "auto", threads = None, decode = "window", use_mmap = true))]
    fn new(
        py: Python<'_>,
        path: std::path::PathBuf,
        backend: &str,
        threads: Option<usize>,
        decode: &str,
        use_mmap: bool,
    ) -> PyResult<Model> {
        let kind: BackendKind = backend.parse().map_err(error)?;
        let mode: DecodeMode = decode.parse().map_err(error)?;
        if threads == Some(0) {
            return Err(error("threads must be at least 1"));
        }
        let options = ModelOptions {
            threads,
            simd: None,
            file_access: if use_mmap {
                liger::gguf::FileAccess::Map
            } else {
                liger::gguf::FileAccess::Read
            },
        };
        let (model, opened) = py
            .detach(|| {
                let model = Arc::new(liger::Model::load(&path, &options)?);
                let opened = liger::backend::open(kind, &model)?;
                Ok::<_, liger::Error>((model, opened))
            })
            .map_err(|e| error(format!("loading {}: {e}", path.display())))?;
        let template = match &model.tokenizer {
            Some(tok) => ChatTemplate::of(tok).map_err(|e| e.to_string()),
            None => Err("this file has no tokenizer, so no chat template".to_string()),
        };
        Ok(Model {
            model,
            backend: opened.backend,
            mode,
            template,
            path: path.display().to_string(),
            reason: opened.reason,
        })
    }

    /// Vocabulary size (the logits' length).
    #[getter]
    fn n_vocab(&self) -> usize {
        self.model.config.vocab_size
    }

    #[getter]
    fn n_layers(&self) -> usize {
        self.model.config.n_layers
    }

    /// Hidden size.
    #[getter]
    fn n_embd(&self) -> usize {
        self.model.config.hidden
    }

    /// "gla", "hgrn2" or "gsa".
    #[getter]
    fn variant(&self) -> &'static str {
        self.model.config.variant.name()
    }

    /// Sliding-window length (tokens).
    #[getter]
    fn window(&self) -> u32 {
        self.model.config.window
    }

    /// Bytes of one sequence's state (recurrent state + window), fixed at any length.
    #[getter]
    fn state_size(&self) -> u64 {
        self.model.state_bytes()
    }

    /// The file's chat template (Jinja source), or None.
    #[getter]
    fn chat_template(&self) -> Option<String> {
        self.model.tokenizer.as_ref()?.chat_template.clone()
    }

    /// Token ids that end a generation (the file's end-of-sequence ids).
    #[getter]
    fn stop_ids(&self) -> PyResult<Vec<u32>> {
        liger::tokenizer::stop_ids(self.model.file(), self.model.config.vocab_size).map_err(error)
    }

    #[getter]
    fn bos_id(&self) -> Option<u32> {
        self.model.tokenizer.as_ref()?.bos
    }

    #[getter]
    fn eos_id(&self) -> Option<u32> {
        self.model.tokenizer.as_ref()?.eos
    }

    /// The file's `general.name`, else its file name.
    #[getter]
    fn name(&self) -> String {
        self.model
            .file()
            .get("general.name")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| {
                std::path::Path::new(&self.path)
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
    }

    #[getter]
    fn path(&self) -> &str {
        &self.path
    }

    /// Where sessions run: "cpu", "wgpu" or "cuda".
    #[getter]
    fn backend(&self) -> &'static str {
        self.backend.kind().name()
    }

    /// Which backend runs and why (e.g. why "auto" chose the CPU).
    #[getter]
    fn backend_reason(&self) -> &str {
        &self.reason
    }

    #[getter]
    fn decode(&self) -> &'static str {
        self.mode.name()
    }

    /// CPU worker threads.
    #[getter]
    fn threads(&self) -> usize {
        self.model.threads()
    }

    /// Text to token ids; `add_special` adds the tokenizer's BOS where it has one.
    #[pyo3(signature = (text, add_special = true))]
    fn tokenize(&self, text: &str, add_special: bool) -> PyResult<Vec<u32>> {
        self.tokenizer()?.encode(text, add_special).map_err(error)
    }

    /// Token ids to text; an id outside the vocabulary is an error.
    #[pyo3(signature = (ids, skip_special = false))]
    fn detokenize(&self, ids: Vec<u32>, skip_special: bool) -> PyResult<String> {
        liger::backend::check_vocabulary(&self.model, &ids).map_err(error)?;
        self.tokenizer()?.decode(&ids, skip_special).map_err(error)
    }

    /// A new session (an empty sequence) on this model's backend.
    fn session(&self) -> PyResult<Session> {
        Ok(Session::wrap(self.new_session()?))
    }

    /// Generates from `prompt` (text — with the BOS when the session is new — or token ids):
    /// an iterator of text pieces. `session`: continue that session's sequence (a new one
    /// when None; the generation's `session` attribute). `json_schema` (JSON text) or
    /// `grammar` (llguidance Lark) constrain the output; `stop` ends it where the text reaches
    /// a string; `temperature=0` is greedy; `seed=None` takes one from the clock.
    #[pyo3(signature = (prompt, *, max_tokens = 128, temperature = 0.8, top_k = 40, top_p = 0.95,
        min_p = 0.05, repeat_penalty = 1.0, repeat_last_n = 64, presence_penalty = 0.0,
        frequency_penalty = 0.0, logit_bias = None, seed = None, stop = None, json_schema = None,
        grammar = None, ignore_eos = false, skip_special = false, session = None))]
    #[allow(clippy::too_many_arguments)]
    fn generate(
        &self,
        py: Python<'_>,
        prompt: Prompt,
        max_tokens: usize,
        temperature: f32,
        top_k: usize,
        top_p: f32,
        min_p: f32,
        repeat_penalty: f32,
        repeat_last_n: usize,
        presence_penalty: f32,
        frequency_penalty: f32,
        logit_bias: Option<HashMap<u32, f32>>,
        seed: Option<u64>,
        stop: Option<Stops>,
        json_schema: Option<String>,
        grammar: Option<String>,
        ignore_eos: bool,
        skip_special: bool,
        session: Option<Py<Session>>,
    ) -> PyResult<Generation> {
        let fresh = match &session {
            Some(s) => s.get().lock()?.position() == 0,
            None => true,
        };
        let ids = match prompt {
            Prompt::Text(text) => self.tokenizer()?.encode(&text, fresh).map_err(error)?,
            Prompt::Ids(ids) => ids,
        };
        let grammar = match (json_schema, grammar) {
            (Some(_), Some(_)) => return Err(error("give json_schema or grammar, not both")),
            (Some(schema), None) => {
                let schema: serde_json::Value = serde_json::from_str(&schema)
                    .map_err(|e| error(format!("json_schema is not JSON: {e}")))?;
                Some(liger::constraint::Grammar::json_schema(&schema))
            }
            (None, Some(text)) => Some(liger::constraint::Grammar {
                kind: liger::constraint::GrammarKind::Lark,
                text,
            }),
            (None, None) => None,
        };
        let stop_strings = match stop {
            None => Vec::new(),
            Some(Stops::One(s)) => vec![s],
            Some(Stops::Many(v)) => v,
        };
        let mut logit_bias: Vec<(u32, f32)> = logit_bias.unwrap_or_default().into_iter().collect();
        logit_bias.sort_by_key(|&(id, _)| id);
        let sampling = SamplerOptions {
            temperature,
            top_k,
            top_p,
            min_p,
            repeat_penalty,
            repeat_last_n,
            presence_penalty,
            frequency_penalty,
            logit_bias,
            seed: seed.unwrap_or_else(clock_seed),
        };
        sampling.check().map_err(error)?;
        let options = GenerateOptions {
            max_tokens,
            ignore_eos,
            skip_special,
            grammar,
            stop_strings,
            ..Default::default()
        };
        self.start(py, session, ids, options, sampling)
    }

    /// The chat `messages` (and `tools`) of an OpenAI request body (JSON text) through the
    /// file's template: the prompt text.
    #[pyo3(signature = (body, add_generation_prompt = true))]
    fn _render_chat(&self, body: &str, add_generation_prompt: bool) -> PyResult<String> {
        let req = liger::openai::parse_body(body.as_bytes(), true).map_err(|e| error(e.message))?;
        let tools = if req.uses_tools() {
            &req.tools[..]
        } else {
            &[]
        };
        self.template()?
            .render_with_tools(
                req.messages.as_deref().unwrap_or_default(),
                tools,
                add_generation_prompt,
            )
            .map_err(error)
    }

    /// A generation for an OpenAI completion request (JSON text; `chat`: a chat completion),
    /// parsed, checked and prompted exactly as `liger serve` does (`liger::openai`), and
    /// whether its answer is read for tool calls.
    #[pyo3(signature = (body, chat, session = None))]
    fn _request(
        &self,
        py: Python<'_>,
        body: &str,
        chat: bool,
        session: Option<Py<Session>>,
    ) -> PyResult<(Generation, bool)> {
        let bad = |e: liger::openai::ApiError| error(e.message);
        let req = liger::openai::parse_body(body.as_bytes(), chat).map_err(bad)?;
        if req.n != 1 {
            return Err(error(
                "n: one answer per call here (fork a session for more)",
            ));
        }
        if req.logprobs.is_some() {
            return Err(error(
                "logprobs are not given by the Python calls yet: read Session.logits()",
            ));
        }
        let template = self.template()?;
        let mut prompt = liger::openai::prompt_ids(&req, template, self.tokenizer()?, usize::MAX)
            .map_err(bad)?;
        // A prompt that continues a session's sequence takes no BOS.
        let continues = match &session {
            Some(s) => s.get().lock()?.position() > 0,
            None => false,
        };
        if continues && !chat && prompt.len() > 1 && Some(prompt[0]) == self.tokenizer()?.bos {
            prompt.remove(0);
        }
        let options = GenerateOptions {
            max_tokens: req.max_tokens.unwrap_or(DEFAULT_ANSWER_TOKENS),
            ignore_eos: req.ignore_eos,
            skip_special: true,
            grammar: liger::openai::output_grammar(&req, template).map_err(bad)?,
            stop_strings: req.stop.clone(),
            ..Default::default()
        };
        let generation = self.start(py, session, prompt, options, req.sampling.clone())?;
        Ok((generation, chat && req.uses_tools()))
    }

    /// An answer's text read for tool calls in this template's format: the content left and
    /// the calls as OpenAI writes them (JSON text; `streamed` adds each call's index).
    fn _tool_calls(&self, text: &str, streamed: bool) -> PyResult<(String, String)> {
        let (content, calls) = self.template()?.tool_format().parse(text);
        let calls = liger::openai::openai_calls(&calls, streamed);
        Ok((content, calls.to_string()))
    }

    /// The part of an answer so far that can be shown while tool calls are read from it (text
    /// that may begin a call is held back).
    fn _shown_prefix(&self, text: &str) -> PyResult<String> {
        let upto = self.template()?.tool_format().shown_prefix(text);
        Ok(text[..upto].to_owned())
    }

    fn __repr__(&self) -> String {
        format!(
            "Model({:?}, variant={:?}, backend={:?}, decode={:?})",
            self.path,
            self.variant(),
            self.backend(),
            self.mode.name()
        )
    }
}
