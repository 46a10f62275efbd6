//! `liger chat`: a conversation in the terminal. Each turn is fed once (the recurrent state
//! carries the conversation); `/undo` and `/retry` restore snapshots of that state, so neither
//! feeds anything again. On a terminal the line editor gives arrow keys, a history file and
//! multi-line input (`"""` blocks, pasted text kept as one turn); piped input is read as lines.

use crate::generate::{load, to_stdout, tokenizer, ModelArgs, SamplingArgs, INTERRUPTED};
use anyhow::{Context, Result};
use clap::Args;
use liger::chat::{ChatMessage, ChatTemplate, Conversation};
use liger::generate::{GenerateOptions, Generator};
use liger::{Model, Sampler, Session, Tokenizer};
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use std::collections::VecDeque;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

#[derive(Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A system message for the conversation.
    #[arg(long, conflicts_with = "system_file")]
    pub system: Option<String>,
    /// The system message, read from FILE.
    #[arg(long, value_name = "FILE")]
    pub system_file: Option<PathBuf>,
    /// Most tokens per answer.
    #[arg(short = 'n', long, default_value_t = 512)]
    pub n_predict: usize,
    /// The line editor's history file (default: $XDG_STATE_HOME/liger/chat_history, else
    /// ~/.local/state/liger/chat_history); "" keeps no history.
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

const HELP: &str = "\
commands:
  /help                 this list
  /retry                another answer to the last message (its state is kept: nothing is fed again)
  /undo                 take back the last turn (message and answer)
  /set [NAME VALUE]     show or change: temperature, top_p, top_k, min_p, repeat_penalty, seed,
                        max_tokens, system (a new system message restarts the conversation)
  /save PATH, /load PATH  the conversation and its state, to and from a file
  /reset                start again
  /quit                 leave (or Ctrl-D)
input: \"\"\" opens a block of several lines, closed by \"\"\"; pasted text is one message.
Ctrl-C stops an answer.";

/// Memory for /undo snapshots of the state.
const UNDO_BYTES: usize = 256 << 20;

/// Where the history goes unless `--history` says.
fn default_history() -> Option<PathBuf> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(state.join("liger/chat_history"))
}

/// Whether `text` has a `"""` block left open.
fn open_block(text: &str) -> bool {
    text.matches("\"\"\"").count() % 2 == 1
}

/// A message without the `"""` around a block.
fn message_of(text: &str) -> String {
    let t = text.trim();
    match t.strip_prefix("\"\"\"") {
        Some(inner) => inner
            .strip_suffix("\"\"\"")
            .unwrap_or(inner)
            .trim()
            .to_string(),
        None => text.trim_end_matches(['\n', '\r']).to_string(),
    }
}

/// The editor's rule for Enter: a `"""` block left open takes a new line instead.
#[derive(rustyline::Completer, rustyline::Helper, rustyline::Highlighter, rustyline::Hinter)]
struct BlockInput;

impl Validator for BlockInput {
    fn validate(&self, ctx: &mut ValidationContext<'_>) -> rustyline::Result<ValidationResult> {
        Ok(if open_block(ctx.input()) {
            ValidationResult::Incomplete
        } else {
            ValidationResult::Valid(None)
        })
    }
}

/// What one read gives.
enum Read {
    Line(String),
    /// Ctrl-C at the prompt.
    Interrupted,
    End,
}

/// Lines from the terminal's line editor, or from piped input.
enum Input {
    Editor {
        editor: rustyline::Editor<BlockInput, FileHistory>,
        history: Option<PathBuf>,
    },
    Plain(std::io::Stdin),
}

impl Input {
    fn open(history: Option<PathBuf>) -> Result<Input> {
        if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
            return Ok(Input::Plain(std::io::stdin()));
        }
        let config = rustyline::Config::builder()
            .auto_add_history(false)
            .max_history_size(1000)?
            .history_ignore_dups(true)?
            .build();
        let mut editor = rustyline::Editor::with_config(config).context("the line editor")?;
        editor.set_helper(Some(BlockInput));
        if let Some(path) = &history {
            match editor.load_history(path) {
                Ok(()) => {}
                Err(ReadlineError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => eprintln!("(history {} not read: {e})", path.display()),
            }
        }
        Ok(Input::Editor { editor, history })
    }

    fn read(&mut self) -> Result<Read> {
        match self {
            Input::Editor { editor, .. } => match editor.readline("> ") {
                Ok(line) => Ok(Read::Line(line)),
                Err(ReadlineError::Interrupted) => Ok(Read::Interrupted),
                Err(ReadlineError::Eof) => Ok(Read::End),
                Err(e) => Err(e.into()),
            },
            Input::Plain(stdin) => {
                let mut out = std::io::stdout();
                write!(out, "> ")?;
                out.flush()?;
                let mut text = String::new();
                loop {
                    if stdin.lock().read_line(&mut text)? == 0 {
                        return Ok(if text.is_empty() {
                            Read::End
                        } else {
                            Read::Line(text)
                        });
                    }
                    if !open_block(&text) {
                        return Ok(Read::Line(text));
                    }
                }
            }
        }
    }

    /// Keeps `entry` in the history (and its file).
    fn remember(&mut self, entry: &str) {
        if let Input::Editor { editor, history } = self {
            let _ = editor.add_history_entry(entry);
            if let Some(path) = history {
                let saved = path
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .map_err(ReadlineError::Io)
                    .and_then(|_| editor.save_history(path));
                if let Err(e) = saved {
                    eprintln!("(history not saved to {}: {e})", path.display());
                    *history = None;
                }
            }
        }
    }
}

/// A state to go back to: the session, the conversation and the sampler at that point.
struct Snapshot {
    session: Session,
    conversation: Conversation,
    sampler: Sampler,
}

impl Snapshot {
    fn take(session: &Session, conversation: &Conversation, sampler: &Sampler) -> Result<Snapshot> {
        Ok(Snapshot {
            session: session.fork()?,
            conversation: conversation.clone(),
            sampler: sampler.clone(),
        })
    }

    /// A copy to continue from (the snapshot stays for another go).
    fn copy(&self) -> Result<Snapshot> {
        Snapshot::take(&self.session, &self.conversation, &self.sampler)
    }
}

struct Chat {
    model: Arc<Model>,
    template: ChatTemplate,
    session: Session,
    conversation: Conversation,
    sampler: Sampler,
    system: Option<String>,
    max_tokens: usize,
    /// `--ignore-eos`: answers run to max_tokens.
    ignore_eos: bool,
    stop: Vec<String>,
    /// Before each turn, for /undo (at most UNDO_BYTES of states).
    undo: VecDeque<Snapshot>,
    undo_depth: usize,
    /// After the last message was fed, before its answer: for /retry.
    before_answer: Option<Snapshot>,
    retries: u64,
}

impl Chat {
    fn tokenizer(&self) -> Result<&Tokenizer> {
        tokenizer(&self.model)
    }

    fn fresh_conversation(&self) -> Conversation {
        let mut c = Conversation::default();
        if let Some(system) = &self.system {
            c.messages.push(ChatMessage::new("system", system));
        }
        c
    }

    fn reset(&mut self) -> Result<()> {
        self.session.reset()?;
        self.conversation = self.fresh_conversation();
        self.undo.clear();
        self.before_answer = None;
        Ok(())
    }

    /// A user message: fed, then answered.
    fn turn(&mut self, message: &str) -> Result<()> {
        if self.undo.len() == self.undo_depth {
            self.undo.pop_front();
        }
        self.undo.push_back(Snapshot::take(
            &self.session,
            &self.conversation,
            &self.sampler,
        )?);
        let delta = self.conversation.user_turn(&self.template, message)?;
        let ids = self.tokenizer()?.encode(&delta, false)?;
        ids.iter().for_each(|&t| self.sampler.observe(t));
        let started = Instant::now();
        self.session.feed(&ids)?;
        let prefill = started.elapsed().as_secs_f64();
        self.before_answer = Some(Snapshot::take(
            &self.session,
            &self.conversation,
            &self.sampler,
        )?);
        self.answer(ids.len(), prefill)
    }

    /// Another answer to the last message, from the state kept before its answer.
    fn retry(&mut self) -> Result<()> {
        let Some(kept) = &self.before_answer else {
            eprintln!("(nothing to retry)");
            return Ok(());
        };
        let Snapshot {
            session,
            conversation,
            mut sampler,
        } = kept.copy()?;
        // The settings as they are now (/set since), the repetition window as it was then.
        sampler.options = self.sampler.options.clone();
        self.retries += 1;
        sampler.reseed(sampler.options.seed.wrapping_add(self.retries));
        if sampler.options.temperature <= 0.0 {
            eprintln!("(greedy sampling gives the same answer: /set temperature 0.8 for others)");
        }
        (self.session, self.conversation, self.sampler) = (session, conversation, sampler);
        self.answer(0, 0.0)
    }

    /// Generates the answer to what was fed, streaming it; `fed` prompt tokens took `prefill`.
    fn answer(&mut self, fed: usize, prefill: f64) -> Result<()> {
        let mut stdout = std::io::stdout();
        let mut answer = String::new();
        let mut generator = Generator::new(
            &self.model,
            GenerateOptions {
                max_tokens: self.max_tokens,
                ignore_eos: self.ignore_eos,
                skip_special: true,
                stop_strings: self.stop.clone(),
                ..Default::default()
            },
        )?;
        let outcome = generator.run(&mut self.session, &mut self.sampler, |_, piece| {
            answer.push_str(piece);
            write!(stdout, "{piece}")
                .and_then(|_| stdout.flush())
                .map_err(to_stdout)?;
            Ok(!INTERRUPTED.load(Ordering::Relaxed))
        })?;
        writeln!(stdout)?;
        if INTERRUPTED.swap(false, Ordering::Relaxed) {
            eprintln!("(stopped)");
        }
        self.conversation.assistant_answer(&answer);
        eprintln!(
            "({fed} new prompt tokens in {prefill:.2}s, {} answer tokens at {:.1} tok/s, context {} tokens)",
            outcome.tokens.len(),
            outcome.tokens.len() as f64 / outcome.seconds.max(1e-9),
            self.session.position()
        );
        Ok(())
    }

    /// `/set NAME VALUE`, or the settings with no argument.
    fn set(&mut self, arg: &str) -> Result<()> {
        let o = &self.sampler.options;
        let Some((name, value)) = arg.split_once(' ').map(|(n, v)| (n, v.trim())) else {
            if !arg.is_empty() {
                anyhow::bail!("/set {arg}: give a value (/set NAME VALUE)");
            }
            eprintln!(
                "(temperature {}, top_p {}, top_k {}, min_p {}, repeat_penalty {}, seed {}, max_tokens {}, system {:?})",
                o.temperature, o.top_p, o.top_k, o.min_p, o.repeat_penalty, o.seed, self.max_tokens,
                self.system.as_deref().unwrap_or("")
            );
            return Ok(());
        };
        fn number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T> {
            value.parse().map_err(|_| {
                anyhow::anyhow!("/set {name}: {value:?} is not a number of the right kind")
            })
        }
        // Changed on a copy: a value out of range leaves the settings as they were.
        let mut o = o.clone();
        match name.replace('-', "_").as_str() {
            "temperature" | "temp" => o.temperature = number(name, value)?,
            "top_p" => o.top_p = number(name, value)?,
            "top_k" => o.top_k = number(name, value)?,
            "min_p" => o.min_p = number(name, value)?,
            "repeat_penalty" => o.repeat_penalty = number(name, value)?,
            "seed" => o.seed = number(name, value)?,
            "max_tokens" | "n" => {
                self.max_tokens = number(name, value)?;
                eprintln!("({name} = {value})");
                return Ok(());
            }
            "system" => {
                self.system = (!value.is_empty()).then(|| value.to_string());
                self.reset()?;
                eprintln!("(new system message: the conversation starts again)");
                return Ok(());
            }
            _ => anyhow::bail!(
                "/set {name}: not a setting (temperature, top_p, top_k, min_p, repeat_penalty, seed, max_tokens, system)"
            ),
        }
        if let Err(e) = o.check() {
            anyhow::bail!("/set {name} {value}: {e} (the setting is unchanged)");
        }
        let seed = o.seed;
        let reseed = seed != self.sampler.options.seed;
        self.sampler.options = o;
        if reseed {
            self.sampler.reseed(seed);
        }
        eprintln!("({name} = {value})");
        Ok(())
    }

    /// A `/command`; false for /quit.
    fn command(&mut self, command: &str, arg: &str) -> Result<bool> {
        match command {
            "/quit" | "/exit" => return Ok(false),
            "/help" => eprintln!("{HELP}"),
            "/reset" => {
                self.reset()?;
                eprintln!("(conversation reset)");
            }
            "/retry" => self.retry()?,
            "/set" => self.set(arg)?,
            "/undo" => match self.undo.pop_back() {
                Some(s) => {
                    let options = self.sampler.options.clone();
                    (self.session, self.conversation, self.sampler) =
                        (s.session, s.conversation, s.sampler);
                    self.sampler.options = options;
                    self.before_answer = None;
                    eprintln!(
                        "(last turn undone: {} messages, context {} tokens)",
                        self.conversation.messages.len(),
                        self.session.position()
                    );
                }
                None => eprintln!("(nothing to undo)"),
            },
            "/save" if !arg.is_empty() => {
                crate::chat_file::save(Path::new(arg), &self.conversation, &self.session)?;
                eprintln!(
                    "(saved {} messages, {} tokens of state to {arg})",
                    self.conversation.messages.len(),
                    self.session.position()
                );
            }
            "/load" if !arg.is_empty() => {
                self.conversation = crate::chat_file::load(Path::new(arg), &mut self.session)?;
                self.undo.clear();
                self.before_answer = None;
                eprintln!(
                    "(loaded {} messages, {} tokens of state)",
                    self.conversation.messages.len(),
                    self.session.position()
                );
            }
            _ => eprintln!("(unknown command {command}; /help lists them)"),
        }
        Ok(true)
    }
}

pub fn chat(args: ChatArgs) -> Result<()> {
    let loaded = load(&args.model)?;
    let template = crate::generate::chat_template(tokenizer(&loaded.model)?)?;
    let system = match &args.system_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?
                .trim_end()
                .to_string(),
        ),
        None => args.system.clone(),
    };
    let session = loaded.session()?;
    let undo_depth = (UNDO_BYTES / session.state_size().max(1)).clamp(1, 32);
    let mut chat = Chat {
        model: Arc::clone(&loaded.model),
        template,
        session,
        conversation: Conversation::default(),
        sampler: Sampler::new(args.sampling.options()),
        system,
        max_tokens: args.n_predict,
        ignore_eos: args.sampling.ignore_eos,
        stop: args.sampling.stop.clone(),
        undo: VecDeque::new(),
        undo_depth,
        before_answer: None,
        retries: 0,
    };
    chat.conversation = chat.fresh_conversation();
    // Ctrl-C stops an answer; at the prompt it only reminds how to leave. Installed before
    // the editor, which swaps in its own handler only while it reads a line.
    ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::Relaxed))
        .context("installing the Ctrl-C handler")?;
    let history = match args.history {
        Some(p) if p.as_os_str().is_empty() => None,
        Some(p) => Some(p),
        None => default_history(),
    };
    let mut input = Input::open(history)?;
    eprintln!("chat: type a message (\"\"\" for several lines); /help lists the commands; Ctrl-C stops an answer");
    loop {
        let text = match input.read()? {
            Read::End => break,
            Read::Interrupted => {
                eprintln!("(Ctrl-C stops an answer; /quit or Ctrl-D leaves)");
                continue;
            }
            Read::Line(text) => text,
        };
        if INTERRUPTED.swap(false, Ordering::Relaxed) {
            eprintln!("(Ctrl-C stops an answer; /quit or Ctrl-D leaves)");
        }
        let line = text.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        input.remember(line);
        if line.starts_with('/') && line.len() > 1 && !line.contains('\n') {
            let (command, arg) = line
                .split_once(' ')
                .map_or((line, ""), |(c, a)| (c, a.trim()));
            match chat.command(command, arg) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    continue;
                }
            }
        }
        chat.turn(&message_of(line))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_open_and_close_with_three_quotes() {
        assert!(open_block("\"\"\"first line"));
        assert!(!open_block("\"\"\"first\nsecond\"\"\""));
        assert!(!open_block("plain"));
        assert_eq!(message_of("\"\"\"\nfirst\nsecond\n\"\"\""), "first\nsecond");
        assert_eq!(message_of("\"\"\"unclosed"), "unclosed");
        assert_eq!(message_of("one line\n"), "one line");
        assert_eq!(message_of("pasted\nthree\nlines"), "pasted\nthree\nlines");
    }
}
