//! Fuzzes the OpenAI request parser (`liger::openai`, what `liger serve` and Python use) on arbitrary
//! bodies: each is a request or a 4xx error, and an accepted chat renders through the chat
//! templates the server uses.
//!
//! Input: bit 0 of the first byte picks chat vs completions; the rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use liger::chat::ChatTemplate;
use std::sync::OnceLock;

/// ChatML (SmolLM2, Qwen) and Llama-3's template, as their tokenizer configs give them.
fn templates() -> &'static [ChatTemplate; 2] {
    static T: OnceLock<[ChatTemplate; 2]> = OnceLock::new();
    T.get_or_init(|| {
        [
            ChatTemplate::new(
                "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
                "", "<|im_end|>",
            )
            .unwrap(),
            ChatTemplate::new(
                "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}",
                "<|begin_of_text|>", "<|eot_id|>",
            )
            .unwrap(),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let chat = flags & 1 != 0;
    match liger::openai::parse_body(body, chat) {
        Ok(req) => {
            assert_eq!(req.messages.is_some(), chat);
            assert_eq!(req.prompt.is_some(), !chat);
            if let Some(messages) = &req.messages {
                for t in templates() {
                    t.render(messages, true).expect("accepted messages render");
                }
            }
        }
        Err(e) => assert!((400..500).contains(&e.status), "{e:?}"),
    }
});
