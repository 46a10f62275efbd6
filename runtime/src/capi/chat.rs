//! Chat prompts through the C ABI: a list of messages rendered by the file's own Jinja chat
//! template (as `llama_chat_apply_template` does), and the ids that end an answer, so that an
//! app never writes ChatML (or Llama-3's headers) by hand.

use super::*;
use crate::chat::{ChatMessage, ChatTemplate};
use crate::tools::Tool;

/// One message of a conversation: `role` ("system", "user", "assistant") and `content`, both
/// NUL-terminated UTF-8.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LigerChatMessage {
    pub role: *const c_char,
    pub content: *const c_char,
}

/// Renders `n_messages` messages through the model's chat template (ChatML where the file has
/// none) into `out_text` (NUL-terminated, `capacity` bytes); `add_generation_prompt` appends
/// the opening of the assistant's answer. `tools_json` (may be NULL): the tools offered, as
/// OpenAI's JSON array (`[{"type": "function", "function": {"name", "description",
/// "parameters"}}]`), shown through the template's `tools` section (or a system message where
/// it has none); a message of role "tool" is a tool's result. `*out_len` = the text's length in bytes (needed,
/// with `LIGER_ERROR_BUFFER_TOO_SMALL`, when it does not fit). Feed the text with
/// `liger_session_feed_text(session, text, false)`: the template writes its own BOS.
#[no_mangle]
pub extern "C" fn liger_chat_apply_template(
    model: *const LigerModel,
    messages: *const LigerChatMessage,
    n_messages: usize,
    tools_json: *const c_char,
    add_generation_prompt: bool,
    out_text: *mut c_char,
    capacity: usize,
    out_len: *mut usize,
) -> LigerStatus {
    ffi(|| {
        let m = model_of(model)?;
        let list = slice_arg(messages, n_messages, "messages")?;
        let messages = list
            .iter()
            .enumerate()
            .map(|(i, msg)| {
                Ok(ChatMessage::new(
                    str_arg(msg.role, &format!("messages[{i}].role"))?,
                    str_arg(msg.content, &format!("messages[{i}].content"))?,
                ))
            })
            .collect::<CResult<Vec<_>>>()?;
        let tools = match tools_json.is_null() {
            true => Vec::new(),
            false => tools_of(str_arg(tools_json, "tools_json")?)?,
        };
        let text = ChatTemplate::of(tokenizer_of(&m)?)?.render_with_tools(
            &messages,
            &tools,
            add_generation_prompt,
        )?;
        text_out(text, out_text, capacity, out_len)
    })
}

/// OpenAI's tools array.
fn tools_of(json: &str) -> CResult<Vec<Tool>> {
    let bad = |m: String| CError::new(LIGER_ERROR_INVALID_ARGUMENT, format!("tools_json: {m}"));
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| bad(format!("not JSON: {e}")))?;
    let list = value
        .as_array()
        .ok_or_else(|| bad("not a JSON array".into()))?;
    list.iter()
        .map(|t| Tool::from_openai(t).map_err(|e| bad(e.to_string())))
        .collect()
}

/// The ids that end a generation of this model (its EOS and `liger.stop_token_ids`, such as
/// `<|im_end|>` or `<|eot_id|>`) into `out_ids` (capacity `capacity`); `*out_n` = how many.
#[no_mangle]
pub extern "C" fn liger_model_stop_ids(
    model: *const LigerModel,
    out_ids: *mut u32,
    capacity: usize,
    out_n: *mut usize,
) -> LigerStatus {
    ffi(|| {
        let m = model_of(model)?;
        let ids = crate::tokenizer::stop_ids(m.model.file(), m.model.config.vocab_size)?;
        copy_out(&ids, out_ids, capacity, out_n, "stop ids")
    })
}
