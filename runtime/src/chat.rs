//! Chat templates (Jinja, rendered with minijinja and Python-compatible string methods) and a
//! conversation that feeds each turn once: the recurrent state carries the history, so a new
//! turn feeds only the text the template adds after what was already fed.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
    bos: String,
    eos: String,
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
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| Error::Tokenizer(format!("chat template does not parse: {e}")))?;
        Ok(ChatTemplate {
            env,
            bos: bos.into(),
            eos: eos.into(),
        })
    }

    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        tmpl.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos,
            eos_token => self.eos,
        })
        .map_err(|e| Error::Tokenizer(format!("chat template: {e}")))
    }
}

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
}
