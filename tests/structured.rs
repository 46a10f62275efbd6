//! Structured output: generations under a JSON schema always parse and validate (checked by
//! `liger_tests::schema`, not by the engine that constrained them), a regex's output matches it,
//! and a bad grammar is an error that says so. On SmolLM2 (a real 49k vocabulary and chat
//! template), sampled at temperature 0.8 so that answers differ.

use liger::chat::{ChatMessage, ChatTemplate};
use liger::constraint::{Grammar, GrammarKind};
use liger::generate::{GenerateOptions, Generator, StopReason};
use liger::{DecodeMode, Model, ModelOptions, Sampler, SamplerOptions, Session};
use liger_tests::*;
use serde_json::{json, Value};
use std::sync::Arc;

/// Five schemas of the shapes clients send: flat objects, enums, nested objects, arrays,
/// optional fields, `$defs` references. Strings and arrays are bounded so that a weak model's
/// answer ends within the token budget.
fn schemas() -> Vec<Value> {
    vec![
        json!({"type": "object",
               "properties": {"name": {"type": "string", "maxLength": 24},
                              "age": {"type": "integer", "minimum": 0, "maximum": 150}},
               "required": ["name", "age"], "additionalProperties": false}),
        json!({"type": "object",
               "properties": {"sentiment": {"enum": ["positive", "negative", "neutral"]},
                              "confidence": {"type": "number", "minimum": 0, "maximum": 1}},
               "required": ["sentiment"], "additionalProperties": false}),
        json!({"type": "object",
               "properties": {"city": {"type": "string", "maxLength": 20},
                              "location": {"type": "object",
                                           "properties": {"lat": {"type": "integer", "minimum": -90, "maximum": 90},
                                                          "lon": {"type": "integer", "minimum": -180, "maximum": 180}},
                                           "required": ["lat", "lon"], "additionalProperties": false}},
               "required": ["city", "location"], "additionalProperties": false}),
        json!({"type": "object",
               "properties": {"tags": {"type": "array", "maxItems": 4,
                                       "items": {"type": "string", "maxLength": 12}}},
               "required": ["tags"], "additionalProperties": false}),
        json!({"$defs": {"step": {"type": "object",
                                  "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 9},
                                                 "done": {"type": "boolean"}},
                                  "required": ["n", "done"], "additionalProperties": false}},
               "type": "object",
               "properties": {"steps": {"type": "array", "minItems": 1, "maxItems": 3,
                                        "items": {"$ref": "#/$defs/step"}}},
               "required": ["steps"], "additionalProperties": false}),
    ]
}

fn smollm2() -> Option<(Arc<Model>, ChatTemplate)> {
    let path = smollm2_liger_q8_0()?;
    let model = Arc::new(Model::load(&path, &ModelOptions::default()).unwrap());
    let tok = model.tokenizer.as_ref().unwrap();
    let template = ChatTemplate::new(tok.chat_template.as_deref().unwrap(), "", "").unwrap();
    Some((model, template))
}

/// The answer to `question` under `grammar`, sampled with `seed`, and why it ended.
fn answer(
    model: &Arc<Model>,
    template: &ChatTemplate,
    question: &str,
    grammar: Grammar,
    seed: u64,
) -> (String, StopReason) {
    let tok = model.tokenizer.as_ref().unwrap();
    let prompt = template
        .render(&[ChatMessage::new("user", question)], true)
        .unwrap();
    let mut session = Session::new(model.clone(), DecodeMode::Window);
    session.feed(&tok.encode(&prompt, false).unwrap()).unwrap();
    let mut sampler = Sampler::new(SamplerOptions {
        temperature: 0.8,
        seed,
        ..Default::default()
    });
    let mut generator = Generator::new(
        model,
        GenerateOptions {
            max_tokens: 400,
            skip_special: true,
            grammar: Some(grammar),
            ..Default::default()
        },
    )
    .unwrap();
    let mut text = String::new();
    let outcome = generator
        .run(&mut session, &mut sampler, |_, piece| {
            text.push_str(piece);
            Ok(true)
        })
        .unwrap();
    (text, outcome.stop)
}

/// (`cli/tests/serve.rs` sends 50 such requests through the server; here each schema twice
/// through the one generation loop.)
#[test]
fn answers_under_five_schemas_parse_and_validate() {
    let Some((model, template)) = smollm2() else {
        return;
    };
    let questions = [
        "Describe a person as JSON.",
        "What is the sentiment of 'I love this'?",
        "Where is Paris?",
        "Tag this post about Rust and GPUs.",
        "List the steps to make tea.",
    ];
    for (i, schema) in schemas().iter().enumerate() {
        for seed in 0..2 {
            let (text, stop) = answer(
                &model,
                &template,
                questions[i],
                Grammar::json_schema(schema),
                seed,
            );
            assert_ne!(
                stop,
                StopReason::Length,
                "schema {i} seed {seed}: cut at max_tokens: {text}"
            );
            let value: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("schema {i} seed {seed}: not JSON ({e}): {text}"));
            if let Some(e) = schema::schema_violation(schema, &value) {
                panic!("schema {i} seed {seed}: {text} does not validate: {e}");
            }
        }
    }
}

#[test]
fn any_json_object_and_a_regex_constrain_the_output() {
    let Some((model, template)) = smollm2() else {
        return;
    };
    // Any object: unbounded, so a weak model may write one string until max_tokens. An answer
    // that ends parses as an object; one cut at max_tokens is a prefix of one (serde_json
    // stops at the end of the input, not at a wrong character).
    for seed in 0..4 {
        let (text, stop) = answer(
            &model,
            &template,
            "Give me JSON.",
            Grammar::json_object(),
            seed,
        );
        assert!(text.starts_with('{'), "seed {seed}: {text}");
        match serde_json::from_str::<Value>(&text) {
            Ok(value) => assert!(value.is_object() && stop != StopReason::Length, "{text}"),
            Err(e) => assert!(
                stop == StopReason::Length && e.is_eof(),
                "seed {seed}: {stop:?}, not JSON ({e}): {text}"
            ),
        }
    }

    let regex = Grammar {
        kind: GrammarKind::Regex,
        text: "[0-9]{3}-[a-z]{2}".into(),
    };
    let (text, stop) = answer(&model, &template, "A code, please.", regex, 2);
    assert_eq!(stop, StopReason::Complete, "{text}");
    let b = text.as_bytes();
    assert!(
        b.len() == 6
            && b[..3].iter().all(u8::is_ascii_digit)
            && b[3] == b'-'
            && b[4..].iter().all(u8::is_ascii_lowercase),
        "{text:?} does not match the regex"
    );
}

#[test]
fn a_bad_grammar_is_an_error_that_names_it() {
    let Some((model, _)) = smollm2() else {
        return;
    };
    let engine = model.grammars().unwrap();
    for (grammar, says) in [
        (
            Grammar {
                kind: GrammarKind::JsonSchema,
                text: "{not json".into(),
            },
            "json_schema grammar",
        ),
        (
            Grammar {
                kind: GrammarKind::JsonSchema,
                text: r#"{"type": "frobnicate"}"#.into(),
            },
            "json_schema grammar",
        ),
        (
            Grammar {
                kind: GrammarKind::Lark,
                text: "start: ( unbalanced".into(),
            },
            "lark grammar",
        ),
    ] {
        let e = engine.constraint(&grammar).unwrap_err().to_string();
        assert!(e.contains(says), "{grammar:?}: {e}");
    }
}
