//! OpenAI's sampling fields through the official `openai` client (`python/openai_fields.py`):
//! `logprobs` equal to `liger score`'s log-softmax, `stop` across tokens, `logit_bias`,
//! `seed`, penalties, and unknown fields refused by name.

mod support;

use std::process::Command;
use support::*;

/// On the F16 file: the CPU's products then take f32 activations, so the server's token-by-token
/// decode and `liger score`'s one forward agree to 1e-4 (with Q8_0 weights the activations are
/// quantized to 8 bits, and the two paths' last-bit differences flip some roundings: ~3e-4).
#[test]
fn serve_honours_openai_sampling_fields() {
    let Some(model) = liger_tests::smollm2_liger_f16() else {
        return;
    };
    let model = model.to_str().unwrap().to_owned();
    if !has_openai() {
        return;
    }
    let s = serve(&model);
    let script = format!(
        "{}/tests/python/openai_fields.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = Command::new("python3")
        .args([
            script.as_str(),
            s.base.as_str(),
            env!("CARGO_BIN_EXE_liger"),
            model.as_str(),
        ])
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "openai_fields.py: {said}");
    println!("{said}");
}
