//! Chat prompts through the C ABI: a list of messages rendered by the file's own Jinja chat
//! template (as `llama_chat_apply_template` does), and the ids that end an answer, so that an
//! app never writes ChatML (or Llama-3's headers) by hand.

use super::*;
use crate::chat::{ChatMessage, ChatTemplate};

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
/// the opening of the assistant's answer. `*out_len` = the text's length in bytes (needed,
/// with `LIGER_ERROR_BUFFER_TOO_SMALL`, when it does not fit). Feed the text with
/// `liger_session_feed_text(session, text, false)`: the template writes its own BOS.
#[no_mangle]
pub extern "C" fn liger_chat_apply_template(
    model: *const LigerModel,
    messages: *const LigerChatMessage,
    n_messages: usize,
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
        let text = ChatTemplate::of(tokenizer_of(&m)?)?.render(&messages, add_generation_prompt)?;
        text_out(text, out_text, capacity, out_len)
    })
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
