//! Tool (function) calls: the tools a chat offers the model, how its chat template shows them,
//! the grammar that makes a required call well-formed, and the calls read back out of the text
//! the model wrote.
//!
//! Two call formats, from the templates that define them: Hermes / Qwen2.5
//! (`<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`, one block per call) and
//! Llama-3.x (the whole answer is `{"name": ..., "parameters": {...}}`). A template that knows
//! no tools (SmolLM2's, ChatML) gets the tools described in a system message in the Hermes
//! format, calls written back into assistant turns and results as `<tool_response>` user
//! turns, so any chat model can be offered tools.

use crate::constraint::{Grammar, GrammarKind};
use crate::error::{Error, Result};
use crate::message::ChatMessage;
use serde_json::{json, Value};

/// A function the model may call: OpenAI's `{"type": "function", "function": {...}}`.
#[derive(Clone, Debug, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: String,
    /// A JSON schema of the arguments object.
    pub parameters: Value,
}

impl Tool {
    /// A tool from OpenAI's JSON form; an error names what is missing.
    pub fn from_openai(v: &Value) -> Result<Tool> {
        let bad = |m: &str| Error::InvalidArgument(format!("tool: {m}"));
        if v.get("type").and_then(Value::as_str) != Some("function") {
            return Err(bad("only tools of type \"function\" are supported"));
        }
        let f = v.get("function").ok_or_else(|| bad("missing 'function'"))?;
        let name = f
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad("missing function.name"))?;
        let parameters = match f.get("parameters") {
            None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
            Some(p) if p.is_object() => p.clone(),
            Some(_) => return Err(bad("function.parameters must be a JSON schema object")),
        };
        Ok(Tool {
            name: name.to_owned(),
            description: f
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            parameters,
        })
    }

    /// The form chat templates iterate over (`tools` of `apply_chat_template`).
    pub fn to_template(&self) -> Value {
        json!({"type": "function", "function": {
            "name": self.name, "description": self.description, "parameters": self.parameters}})
    }
}

/// OpenAI's `tool_choice`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model decides (calls are read from its text).
    Auto,
    /// Tools are not shown and no call is read.
    None,
    /// The answer is a call of one of the tools (constrained).
    Required,
    /// The answer is a call of this tool (constrained).
    Function(String),
}

/// One call the model made.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    pub name: String,
    /// The arguments object.
    pub arguments: Value,
}

impl ToolCall {
    /// The form chat templates read in an assistant message's `tool_calls`.
    pub fn to_template(&self) -> Value {
        json!({"type": "function", "function": {"name": self.name, "arguments": self.arguments}})
    }
}

/// How a template's model writes calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToolFormat {
    /// `<tool_call>\n{"name": ..., "arguments": ...}\n</tool_call>` blocks.
    Hermes,
    /// The answer is `{"name": ..., "parameters": ...}`.
    LlamaJson,
}

const CALL_OPEN: &str = "<tool_call>";
const CALL_CLOSE: &str = "</tool_call>";

/// The call format of a chat template, and whether the template renders tools itself.
pub fn format_of(template: &str) -> (ToolFormat, bool) {
    let native = template.contains("tools");
    if native && !template.contains(CALL_OPEN) && template.contains("\"parameters\"") {
        (ToolFormat::LlamaJson, true)
    } else {
        (ToolFormat::Hermes, native)
    }
}

impl ToolFormat {
    fn arguments_key(self) -> &'static str {
        match self {
            ToolFormat::Hermes => "arguments",
            ToolFormat::LlamaJson => "parameters",
        }
    }

    /// The grammar of an answer that is a call of one of `tools` (`choice` Required) or of the
    /// named one, its arguments valid against the tool's schema; `None` for Auto / None.
    pub fn grammar(self, tools: &[Tool], choice: &ToolChoice) -> Result<Option<Grammar>> {
        let chosen: Vec<&Tool> = match choice {
            ToolChoice::Auto | ToolChoice::None => return Ok(None),
            ToolChoice::Required => tools.iter().collect(),
            ToolChoice::Function(name) => tools.iter().filter(|t| &t.name == name).collect(),
        };
        if chosen.is_empty() {
            return Err(Error::InvalidArgument(match choice {
                ToolChoice::Function(name) => format!("tool_choice names {name:?}, not a tool"),
                _ => "tool_choice is required but there are no tools".into(),
            }));
        }
        let key = self.arguments_key();
        let calls: Vec<Value> = chosen
            .iter()
            .map(|t| {
                json!({"type": "object",
                       "properties": {"name": {"const": t.name}, key: t.parameters},
                       "required": ["name", key], "additionalProperties": false})
            })
            .collect();
        let schema = json!({"anyOf": calls,
                            "x-guidance": {"whitespace_flexible": false,
                                           "item_separator": ", ", "key_separator": ": "}});
        let text = match self {
            ToolFormat::Hermes => {
                format!(
                    "start: \"{CALL_OPEN}\\n\" call \"\\n{CALL_CLOSE}\"\ncall: %json {schema}\n"
                )
            }
            ToolFormat::LlamaJson => format!("start: %json {schema}\n"),
        };
        Ok(Some(Grammar {
            kind: GrammarKind::Lark,
            text,
        }))
    }

    /// The text of an answer split into its content and the calls it makes (none when it
    /// holds no well-formed call: then it is all content).
    pub fn parse(self, text: &str) -> (String, Vec<ToolCall>) {
        let key = self.arguments_key();
        let call = |json: &str| -> Option<ToolCall> {
            let v: Value = serde_json::from_str(json.trim()).ok()?;
            let name = v.get("name")?.as_str()?.to_owned();
            let arguments = v
                .get(key)
                .or_else(|| v.get("arguments"))
                .cloned()
                .unwrap_or_else(|| json!({}));
            arguments
                .is_object()
                .then_some(ToolCall { name, arguments })
        };
        match self {
            ToolFormat::LlamaJson => match call(text) {
                Some(c) => (String::new(), vec![c]),
                None => (text.to_owned(), Vec::new()),
            },
            ToolFormat::Hermes => {
                let Some(first) = text.find(CALL_OPEN) else {
                    return (text.to_owned(), Vec::new());
                };
                let mut calls = Vec::new();
                let mut rest = &text[first..];
                while let Some(body) = rest.strip_prefix(CALL_OPEN) {
                    let (json, after) = match body.find(CALL_CLOSE) {
                        Some(end) => (&body[..end], &body[end + CALL_CLOSE.len()..]),
                        None => (body, ""),
                    };
                    match call(json) {
                        Some(c) => calls.push(c),
                        None => return (text.to_owned(), Vec::new()),
                    }
                    rest = after.trim_start();
                }
                (text[..first].trim_end().to_owned(), calls)
            }
        }
    }

    /// How much of `text` (a streamed answer so far) can be shown as content now: all of it
    /// unless a call may be starting, in which case only what comes before it.
    pub fn shown_prefix(self, text: &str) -> usize {
        match self {
            ToolFormat::LlamaJson => {
                if text.trim_start().is_empty() || text.trim_start().starts_with('{') {
                    0
                } else {
                    text.len()
                }
            }
            ToolFormat::Hermes => {
                if let Some(at) = text.find(CALL_OPEN) {
                    return at;
                }
                // A tail that may be the start of the marker is held back.
                (0..text.len())
                    .filter(|&i| text.is_char_boundary(i))
                    .find(|&i| CALL_OPEN.starts_with(&text[i..]))
                    .unwrap_or(text.len())
            }
        }
    }
}

/// Messages as a template without tool support can render them: the tools described in the
/// system message (Hermes format), assistant calls written into their content, tool results
/// as user turns of `<tool_response>` blocks.
pub fn messages_for_plain_template(messages: &[ChatMessage], tools: &[Tool]) -> Vec<ChatMessage> {
    let mut out = Vec::with_capacity(messages.len() + 1);
    let mut described = String::from(
        "You may call functions to answer. The functions, as JSON signatures:\n<tools>\n",
    );
    for t in tools {
        described.push_str(&t.to_template().to_string());
        described.push('\n');
    }
    described.push_str(
        "</tools>\nTo call one, answer with exactly:\n<tool_call>\n{\"name\": <function name>, \
         \"arguments\": <arguments object>}\n</tool_call>",
    );
    match messages.first() {
        Some(m) if m.role == "system" && !tools.is_empty() => {
            out.push(ChatMessage::new(
                "system",
                &format!("{}\n\n{described}", m.content),
            ));
        }
        Some(m) if m.role == "system" => out.push(m.clone()),
        _ if !tools.is_empty() => out.push(ChatMessage::new("system", &described)),
        _ => {}
    }
    let start = usize::from(messages.first().is_some_and(|m| m.role == "system"));
    for m in &messages[start..] {
        match (m.role.as_str(), &m.tool_calls) {
            ("assistant", Some(calls)) => {
                let mut content = m.content.clone();
                for c in calls {
                    let f = &c["function"];
                    let call = json!({"name": f["name"], "arguments": f["arguments"]});
                    if !content.is_empty() {
                        content.push('\n');
                    }
                    content.push_str(&format!("{CALL_OPEN}\n{call}\n{CALL_CLOSE}"));
                }
                out.push(ChatMessage::new("assistant", &content));
            }
            ("tool", _) => {
                let block = format!("<tool_response>\n{}\n</tool_response>", m.content);
                match out.last_mut() {
                    Some(prev)
                        if prev.role == "user" && prev.content.ends_with("</tool_response>") =>
                    {
                        prev.content.push('\n');
                        prev.content.push_str(&block);
                    }
                    _ => out.push(ChatMessage::new("user", &block)),
                }
            }
            _ => out.push(ChatMessage::new(&m.role, &m.content)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_read_back_in_both_formats() {
        let text = "Let me look.\n<tool_call>\n{\"name\": \"weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"time\", \"arguments\": {}}\n</tool_call>";
        let (content, calls) = ToolFormat::Hermes.parse(text);
        assert_eq!(content, "Let me look.");
        assert_eq!(
            calls,
            vec![
                ToolCall {
                    name: "weather".into(),
                    arguments: json!({"city": "Paris"})
                },
                ToolCall {
                    name: "time".into(),
                    arguments: json!({})
                },
            ]
        );
        let (content, calls) = ToolFormat::LlamaJson
            .parse("{\"name\": \"weather\", \"parameters\": {\"city\": \"Oslo\"}}");
        assert_eq!(
            (content.as_str(), calls[0].arguments["city"].as_str()),
            ("", Some("Oslo"))
        );
        // Not a call: all content.
        assert_eq!(ToolFormat::Hermes.parse("<tool_call>\n{broken").1, vec![]);
        assert_eq!(ToolFormat::LlamaJson.parse("Hello {").0, "Hello {");
    }

    #[test]
    fn a_streamed_answer_holds_back_what_may_start_a_call() {
        let f = ToolFormat::Hermes;
        assert_eq!(f.shown_prefix("Hello"), 5);
        assert_eq!(f.shown_prefix("Hello <tool"), 6);
        assert_eq!(f.shown_prefix("Hello <tool_call>\n{"), 6);
        assert_eq!(f.shown_prefix("a < b"), 5);
        assert_eq!(ToolFormat::LlamaJson.shown_prefix(" {\"name\""), 0);
        assert_eq!(ToolFormat::LlamaJson.shown_prefix("Sure"), 4);
    }

    #[test]
    fn formats_follow_the_template() {
        assert_eq!(format_of("{{ '<tool_call>' }} tools").0, ToolFormat::Hermes);
        assert_eq!(
            format_of("tools ... \"parameters\": ").0,
            ToolFormat::LlamaJson
        );
        assert_eq!(format_of(crate::chat::CHATML), (ToolFormat::Hermes, false));
    }
}
