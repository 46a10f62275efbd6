//! One message of a conversation, as chat templates, tool calls and the OpenAI API read it.

use serde::{Deserialize, Serialize};

/// A message: its role (system, user, assistant, tool) and text, with an assistant's tool
/// calls or a tool result's call id.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    /// An assistant's calls, as templates read them: `[{"type": "function", "function":
    /// {"name": ..., "arguments": {...}}}]` (absent, not null, on other messages: templates
    /// test `'tool_calls' in message`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<serde_json::Value>>,
    /// A tool result's call id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
            tool_calls: None,
            tool_call_id: None,
        }
    }
}
