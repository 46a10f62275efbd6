//! The demo model: SmolLM2-135M-Instruct converted with the recovery adapter this repository
//! ships (`recovery/adapter`, trained on a CPU by `recovery/recover.py`; see its README). The
//! adapter must merge through the converter into a model that reads text about as well as plain
//! SmolLM2 and answers a question on topic; the unrecovered conversion (`real_model.rs`) is
//! the one checked against the authors' exact logits.

use liger::chat::{ChatMessage, ChatTemplate};
use liger::generate::{GenerateOptions, Generator};
use liger::{DecodeMode, Model, ModelOptions, Sampler, SamplerOptions, Session};
use liger_tests::*;
use std::sync::Arc;

/// Perplexity of the recovered Q8_0 model on `tests/fixtures/text/gettysburg.txt` (window
/// semantics): measured 31.7 with this adapter (plain SmolLM2, the recipe's teacher on the same
/// tokens: 12.9; unrecovered: 7,382). The bound leaves room for another CPU's rounding, not for
/// a broken merge (a wrong scale or a transposed B lands in the hundreds or thousands).
const GETTYSBURG_PERPLEXITY_AT_MOST: f64 = 40.0;

fn recovered() -> Option<Arc<Model>> {
    let path = smollm2_recovered_q8_0()?;
    Some(Arc::new(
        Model::load(&path, &ModelOptions::default()).unwrap(),
    ))
}

/// exp(mean NLL of each token given the ones before it), the whole text in one sequence.
fn perplexity(model: &Arc<Model>, ids: &[u32]) -> f64 {
    let vocab = model.config.vocab_size;
    let mut session = Session::new(model.clone(), DecodeMode::Window);
    let logits = session.feed_all_logits(&ids[..ids.len() - 1]).unwrap();
    let nll: f64 = logits
        .chunks_exact(vocab)
        .zip(&ids[1..])
        .map(|(row, &next)| {
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
            let lse = max
                + row
                    .iter()
                    .map(|&v| (v as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            lse - row[next as usize] as f64
        })
        .sum();
    (nll / (ids.len() - 1) as f64).exp()
}

#[test]
fn the_shipped_adapter_is_small_bf16_peft() {
    let dir = repo_root().join("recovery/adapter");
    let config: serde_json::Value =
        serde_json::from_slice(&read_bytes(&dir.join("adapter_config.json"))).unwrap();
    assert_eq!(config["peft_type"], "LORA");
    let targets = config["target_modules"].as_array().unwrap();
    assert_eq!(targets.len(), 3, "{targets:?}");
    let weights = read_bytes(&dir.join("adapter_model.safetensors"));
    assert!(weights.len() < 2_000_000, "{} bytes", weights.len());
    let tensors = safetensors::SafeTensors::deserialize(&weights).unwrap();
    // 30 layers × q/k/v × A and B
    assert_eq!(tensors.len(), 180);
    for (name, view) in tensors.tensors() {
        assert_eq!(view.dtype(), safetensors::Dtype::BF16, "{name}");
    }
}

#[test]
fn the_recovered_demo_model_reads_text_like_smollm2() {
    let Some(model) = recovered() else {
        return;
    };
    assert!(
        !model.config.untrained,
        "a linearization recovered by an adapter is not marked untrained"
    );
    let text = std::fs::read_to_string(fixtures().join("text/gettysburg.txt")).unwrap();
    let ids = model
        .tokenizer
        .as_ref()
        .unwrap()
        .encode(&text, true)
        .unwrap();
    let ppl = perplexity(&model, &ids);
    eprintln!(
        "recovered SmolLM2 on gettysburg.txt: perplexity {ppl:.2} over {} tokens",
        ids.len() - 1
    );
    assert!(
        ppl <= GETTYSBURG_PERPLEXITY_AT_MOST,
        "perplexity {ppl:.2} > {GETTYSBURG_PERPLEXITY_AT_MOST}: is the adapter merged as trained?"
    );
}

#[test]
fn the_recovered_demo_model_answers_on_topic() {
    let Some(model) = recovered() else {
        return;
    };
    let tok = model.tokenizer.as_ref().unwrap();
    let template = ChatTemplate::new(tok.chat_template.as_deref().unwrap(), "", "").unwrap();
    let prompt = template
        .render(
            &[ChatMessage::new("user", "What is the capital of France?")],
            true,
        )
        .unwrap();
    let mut session = Session::new(model.clone(), DecodeMode::Window);
    session.feed(&tok.encode(&prompt, false).unwrap()).unwrap();
    let mut sampler = Sampler::new(SamplerOptions {
        temperature: 0.0,
        ..Default::default()
    });
    let mut generator = Generator::new(
        &model,
        GenerateOptions {
            max_tokens: 40,
            skip_special: true,
            ..Default::default()
        },
    )
    .unwrap();
    let mut text = String::new();
    generator
        .run(&mut session, &mut sampler, |_, piece| {
            text.push_str(piece);
            Ok(true)
        })
        .unwrap();
    eprintln!("answer: {text:?}");
    assert!(
        text.contains("Paris"),
        "greedy answer {text:?} does not name Paris"
    );
}
