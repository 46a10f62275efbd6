//! Fuzzes chat templates from a model file: any template source, rendered with any messages
//! and tools. Parsing or rendering may fail, with a message; it may not panic, hang (the
//! render runs on bounded fuel) or grow without bound.
//!
//! Input: template source, a NUL byte, then a JSON object `{"messages": [...], "tools": [...]}`
//! (messages and tools the way OpenAI's API writes them).
#![no_main]

use libfuzzer_sys::fuzz_target;
use liger::chat::{ChatMessage, ChatTemplate};
use liger::tools::Tool;

fuzz_target!(
    init: {
        // libFuzzer's hook aborts on any panic. A panic inside minijinja (2.24 has one: a
        // reversed slice of an empty string) is caught by `ChatTemplate`'s render and turned
        // into an error — what is under test here — so only those pass through to the unwind.
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_engine = info.location().is_some_and(|l| l.file().contains("minijinja"));
            if !in_engine {
                abort(info);
            }
        }));
    },
    |data: &[u8]| {
    let Some(split) = data.iter().position(|&b| b == 0) else {
        return;
    };
    let Ok(source) = std::str::from_utf8(&data[..split]) else {
        return;
    };
    let Ok(template) = ChatTemplate::new(source, "<s>", "</s>") else {
        return;
    };
    let context: serde_json::Value =
        serde_json::from_slice(&data[split + 1..]).unwrap_or(serde_json::Value::Null);
    let messages: Vec<ChatMessage> = context
        .get("messages")
        .and_then(|m| serde_json::from_value(m.clone()).ok())
        .unwrap_or_else(|| vec![ChatMessage::new("user", "Hi!")]);
    let tools: Vec<Tool> = context
        .get("tools")
        .and_then(|t| t.as_array())
        .map(|list| list.iter().filter_map(|t| Tool::from_openai(t).ok()).collect())
        .unwrap_or_default();
    for add_generation_prompt in [false, true] {
        if let Ok(text) = template.render_with_tools(&messages, &tools, add_generation_prompt) {
            // What renders is what a prompt is made of: bounded by the fuel's output.
            assert!(text.len() < 1 << 30);
        }
    }
    }
);
