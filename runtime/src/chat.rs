//! Chat templates (Jinja, rendered with minijinja and Python-compatible string methods) and a
//! conversation that feeds each turn once: the recurrent state carries the history, so a new
//! turn feeds only the text the template adds after what was already fed.

use crate::error::{Error, Result};
pub use crate::message::ChatMessage;
use crate::tools::{Tool, ToolFormat};
use serde::{Deserialize, Serialize};

pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
    bos: String,
    eos: String,
    /// How the template's model writes tool calls, and whether it renders `tools` itself.
    tool_format: (ToolFormat, bool),
}

/// The template used when a file has none: ChatML.
pub const CHATML: &str =
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

fn today() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86400)
        .unwrap_or(0) as i64;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + (month <= 2) as i64;
    const NAMES: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!("{day:02} {} {year}", NAMES[(month - 1) as usize])
}

/// HF's `tojson` filter (`json.dumps(value, ensure_ascii=False, indent=indent)`): keys in
/// their order, `", "` and `": "` between items (newlines and `indent` spaces with an indent),
/// nothing escaped beyond JSON. (minijinja's own sorts keys, writes compactly and escapes `<`,
/// `>`, `&` and `'`: a tool's schema would not read as the model saw it in training.)
fn tojson(
    value: &minijinja::Value,
    kwargs: minijinja::value::Kwargs,
) -> std::result::Result<minijinja::Value, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let mut out = Vec::new();
    let written = match indent {
        Some(n) => {
            let spaces = " ".repeat(n);
            let f = serde_json::ser::PrettyFormatter::with_indent(spaces.as_bytes());
            serde::Serialize::serialize(
                value,
                &mut serde_json::Serializer::with_formatter(&mut out, f),
            )
        }
        None => serde::Serialize::serialize(
            value,
            &mut serde_json::Serializer::with_formatter(&mut out, PythonJson),
        ),
    };
    written.map_err(|e| {
        minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            "cannot write as JSON",
        )
        .with_source(e)
    })?;
    Ok(minijinja::Value::from_safe_string(
        String::from_utf8(out).unwrap_or_default(),
    ))
}

/// Python's default JSON separators: `", "` and `": "`.
struct PythonJson;

impl serde_json::ser::Formatter for PythonJson {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
}

impl ChatTemplate {
    /// The template a tokenizer's file carries (`tokenizer.chat_template`), ChatML where it
    /// has none, with the file's BOS and EOS tokens.
    pub fn of(tok: &crate::Tokenizer) -> Result<ChatTemplate> {
        let name = |id: Option<u32>| id.and_then(|i| tok.id_to_token(i)).unwrap_or_default();
        let source = tok.chat_template.as_deref().unwrap_or(CHATML);
        ChatTemplate::new(source, &name(tok.bos), &name(tok.eos))
    }

    pub fn new(source: &str, bos: &str, eos: &str) -> Result<ChatTemplate> {
        let mut env = minijinja::Environment::new();
        // A template from a file is code: bounded, so that a hostile one cannot hang a render.
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_function("strftime_now", |_fmt: String| today());
        env.add_filter("tojson", tojson);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| Error::Tokenizer(format!("chat template does not parse: {e}")))?;
        Ok(ChatTemplate {
            env,
            bos: bos.into(),
            eos: eos.into(),
            tool_format: crate::tools::format_of(source),
        })
    }

    /// How this template's model writes tool calls.
    pub fn tool_format(&self) -> ToolFormat {
        self.tool_format.0
    }

    /// As [`Self::render`], offering `tools` (none: as `render`): through the template's own
    /// `tools` section where it has one, else described in the system message
    /// ([`crate::tools::messages_for_plain_template`]).
    pub fn render_with_tools(
        &self,
        messages: &[ChatMessage],
        tools: &[Tool],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let uses_tools = !tools.is_empty()
            || messages
                .iter()
                .any(|m| m.role == "tool" || m.tool_calls.is_some());
        if !uses_tools {
            return self.render(messages, add_generation_prompt);
        }
        if !self.tool_format.1 {
            let plain = crate::tools::messages_for_plain_template(messages, tools);
            return self.render(&plain, add_generation_prompt);
        }
        let tools: Option<Vec<serde_json::Value>> =
            (!tools.is_empty()).then(|| tools.iter().map(Tool::to_template).collect());
        self.render_context(minijinja::context! {
            messages => messages,
            tools => tools,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos,
            eos_token => self.eos,
        })
    }

    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        self.render_context(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos,
            eos_token => self.eos,
        })
    }

    fn render_context(&self, context: minijinja::Value) -> Result<String> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        // minijinja 2.24 panics on some templates (`''[::-1]`: a reversed slice of an empty
        // string indexes past its end; found by the `chat_template` fuzzer): a template from a
        // file is refused with an error, never a crash of the embedding process.
        let rendered =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tmpl.render(context)))
                .map_err(|_| {
                    Error::Tokenizer(
                        "chat template: the template engine failed on this template (it panicked)"
                            .into(),
                    )
                })?;
        rendered.map_err(|e| {
            if e.kind() == minijinja::ErrorKind::OutOfFuel {
                Error::Tokenizer(format!(
                    "chat template: rendering took more than {TEMPLATE_FUEL} steps (a loop \
                     that does not end?); the template is refused"
                ))
            } else {
                Error::Tokenizer(format!("chat template: {e}"))
            }
        })
    }
}

/// Most instructions one render of a chat template may run (minijinja's fuel): real
/// templates take thousands per message, a hostile one with nested loops is stopped in
/// well under a second.
const TEMPLATE_FUEL: u64 = 5_000_000;

/// A multi-turn conversation whose text has been fed to a session exactly once.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Conversation {
    pub messages: Vec<ChatMessage>,
    /// The text the session has consumed so far (prompts and answers).
    fed: String,
}

impl Conversation {
    /// Adds a user message; returns the text to feed: what the template renders after the
    /// text already fed (normally the end of the last answer and the new turn's header).
    pub fn user_turn(&mut self, template: &ChatTemplate, content: &str) -> Result<String> {
        self.messages.push(ChatMessage::new("user", content));
        let full = template.render(&self.messages, true)?;
        let common = common_prefix(&self.fed, &full);
        // A template that trims answers can disagree with the fed text in whitespace; the
        // state cannot be rewound, so feed from where they agree.
        let delta = full[common..].to_string();
        self.fed = full;
        Ok(delta)
    }

    /// Records the assistant's answer as it was fed (generated tokens, decoded).
    pub fn assistant_answer(&mut self, text: &str) {
        self.fed.push_str(text);
        self.messages.push(ChatMessage::new("assistant", text));
    }
}

fn common_prefix(a: &str, b: &str) -> usize {
    let mut n = 0;
    for ((i, x), y) in a.char_indices().zip(b.chars()) {
        if x != y {
            return i;
        }
        n = i + x.len_utf8();
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_feed_only_new_text() {
        let t = ChatTemplate::new(CHATML, "", "").unwrap();
        let mut c = Conversation::default();
        let first = c.user_turn(&t, "hi").unwrap();
        assert_eq!(
            first,
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
        c.assistant_answer("hello!");
        let second = c.user_turn(&t, "how are you?").unwrap();
        assert_eq!(
            second,
            "<|im_end|>\n<|im_start|>user\nhow are you?<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    /// A hostile template (nested loops) is stopped with an error naming the template within
    /// a second; a long real conversation stays far inside the bound.
    #[test]
    fn templates_run_on_bounded_fuel() {
        let hostile = ChatTemplate::new(
            "{% for a in range(100000) %}{% for b in range(100000) %}{% for c in range(100000) %}x{% endfor %}{% endfor %}{% endfor %}",
            "",
            "",
        )
        .unwrap();
        let start = std::time::Instant::now();
        let err = hostile
            .render(&[ChatMessage::new("user", "hi")], true)
            .unwrap_err()
            .to_string();
        let took = start.elapsed();
        assert!(
            err.contains("chat template") && err.contains("steps"),
            "{err}"
        );
        println!("hostile template stopped after {took:?}: {err}");
        assert!(
            took < std::time::Duration::from_secs(1),
            "stopped after {took:?}"
        );
        let chat = ChatTemplate::new(CHATML, "", "").unwrap();
        let long: Vec<ChatMessage> = (0..5000)
            .map(|i| ChatMessage::new(if i % 2 == 0 { "user" } else { "assistant" }, "some words"))
            .collect();
        let text = chat.render(&long, true).unwrap();
        assert!(text.len() > 5000 * 10, "{}", text.len());
    }

    #[test]
    fn python_string_methods_and_errors() {
        let t = ChatTemplate::new(
            "{% if messages[0].role != 'user' %}{{ raise_exception('user first') }}{% endif %}{{ messages[0].content.strip() }}",
            "<s>",
            "</s>",
        )
        .unwrap();
        assert_eq!(
            t.render(&[ChatMessage::new("user", "  x  ")], false)
                .unwrap(),
            "x"
        );
        let err = t
            .render(&[ChatMessage::new("system", "x")], false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("user first"), "{err}");
    }

    /// A template on which the engine itself panics (found by the `chat_template` fuzzer) is
    /// an error naming the template, and the template still renders other messages.
    #[test]
    fn a_panic_of_the_template_engine_is_an_error() {
        let t =
            ChatTemplate::new("{{ messages[0].content.strip()[::-1] }}", "<s>", "</s>").unwrap();
        assert_eq!(
            t.render(&[ChatMessage::new("user", "ab")], false).unwrap(),
            "ba"
        );
        let err = t
            .render(&[ChatMessage::new("user", "  ")], false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("template engine failed"), "{err}");
    }
}
