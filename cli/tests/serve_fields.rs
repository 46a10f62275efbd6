//! OpenAI's sampling fields through the official `openai` client (`python/openai_fields.py`):
//! `logprobs` equal to `liger score`'s log-softmax, `stop` across tokens, `logit_bias`,
//! `seed`, penalties, and unknown fields refused by name.

mod support;

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
    let said = python_script(
        "openai_fields.py",
        &[s.base.as_str(), env!("CARGO_BIN_EXE_liger"), model.as_str()],
    );
    println!("{said}");
}
