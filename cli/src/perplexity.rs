//! `liger perplexity`: perplexity of a model on a text in one continuous pass (the recurrent
//! state carries from chunk to chunk, so unlike a KV-cache model no text is cut into
//! independent windows), and the KL divergence to a reference run's log-probabilities — say
//! the f16 file's — to measure what quantization costs.

use crate::generate::{load, ModelArgs};
use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use half::f16;
use liger::sampler::argmax;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The text (UTF-8), tokenized with the file's tokenizer (BOS added if the model uses one).
    #[arg(long, required_unless_present = "ids", conflicts_with = "ids")]
    pub text: Option<PathBuf>,
    /// Token ids instead of a text: a file of integers separated by commas or white space (say
    /// a chat a model wrote, exactly as it was sampled).
    #[arg(long)]
    pub ids: Option<PathBuf>,
    /// Do not score the first N predictions (a prompt the text starts with); they are fed.
    #[arg(long, default_value_t = 0)]
    pub skip: usize,
    /// Write the token ids (comma-separated) to this file: the same tokens can then be scored
    /// elsewhere (say by another runtime or the recovery recipe's teacher).
    #[arg(long)]
    pub save_ids: Option<PathBuf>,
    /// Also print the perplexity of every stretch of N scored positions (does it hold up along
    /// a long text?).
    #[arg(long)]
    pub stretch: Option<usize>,
    /// Score at most this many tokens.
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Save every scored position's log-probabilities (f16) as a reference for --kl.
    #[arg(long)]
    pub save_logprobs: Option<PathBuf>,
    /// KL divergence KL(reference ‖ this model) against a --save-logprobs file of the same
    /// text (and top-1 agreement).
    #[arg(long)]
    pub kl: Option<PathBuf>,
}

const MAGIC: &[u8; 8] = b"LIGERLP1";
/// Tokens per forward call (the state carries between calls).
const CHUNK: usize = 256;

/// log Σ exp(row).
fn log_sum_exp(row: &[f32]) -> f64 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    max + row
        .iter()
        .map(|&v| (v as f64 - max).exp())
        .sum::<f64>()
        .ln()
}

/// KL(p ‖ q) for log-probabilities `log_p` (reference) and logits `q_logits`; and whether
/// their most likely tokens agree.
fn kl_divergence(log_p: &[f32], q_logits: &[f32]) -> (f64, bool) {
    let lse = log_sum_exp(q_logits);
    let kl = log_p
        .iter()
        .zip(q_logits)
        .map(|(&lp, &q)| {
            let lp = lp as f64;
            lp.exp() * (lp - (q as f64 - lse))
        })
        .sum::<f64>();
    (kl.max(0.0), argmax(log_p) == argmax(q_logits))
}

/// Token ids from a file of integers separated by commas or white space, each below `vocab`.
fn read_ids(path: &std::path::Path, vocab: usize) -> Result<Vec<u32>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .enumerate()
        .map(|(i, t)| {
            let id: u32 = t.parse().with_context(|| {
                format!("{}: item {i} ('{t}') is not a token id", path.display())
            })?;
            ensure!(
                (id as usize) < vocab,
                "{}: token {id} (item {i}) is outside the vocabulary of {vocab}",
                path.display()
            );
            Ok(id)
        })
        .collect()
}

/// FNV-1a of the token ids: a reference file must be of the same tokens.
fn ids_hash(ids: &[u32]) -> u64 {
    ids.iter()
        .flat_map(|i| i.to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        })
}

pub fn perplexity(args: PerplexityArgs) -> Result<()> {
    let loaded = load(&args.model)?;
    let model = &loaded.model;
    let tok = model
        .tokenizer
        .as_ref()
        .context("this file has no tokenizer")?;
    let vocab = model.config.vocab_size;
    let mut ids = match (&args.text, &args.ids) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            tok.encode(&text, true)?
        }
        (None, Some(path)) => read_ids(path, vocab)?,
        (None, None) => bail!("give --text or --ids"),
    };
    ensure!(args.stretch != Some(0), "--stretch must be at least 1");
    if let Some(n) = args.max_tokens {
        ids.truncate(args.skip.saturating_add(n).saturating_add(1));
    }
    ensure!(
        ids.len() >= args.skip.saturating_add(2),
        "{} tokens: nothing to score after skipping {}",
        ids.len(),
        args.skip
    );
    let scored = ids.len() - 1 - args.skip;
    if let Some(path) = &args.save_ids {
        let list: Vec<String> = ids.iter().map(u32::to_string).collect();
        std::fs::write(path, list.join(",") + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let header = |w: &mut dyn Write| -> std::io::Result<()> {
        w.write_all(MAGIC)?;
        w.write_all(&(vocab as u64).to_le_bytes())?;
        w.write_all(&(scored as u64).to_le_bytes())?;
        // the same tokens, scored from the same position
        let skip = (args.skip as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        w.write_all(&(ids_hash(&ids) ^ skip).to_le_bytes())
    };
    let mut save = match &args.save_logprobs {
        Some(p) => {
            let mut w = BufWriter::new(
                std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
            );
            header(&mut w)?;
            Some(w)
        }
        None => None,
    };
    let mut reference = match &args.kl {
        Some(p) => {
            let mut r = BufReader::new(
                std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?,
            );
            let mut got = vec![0u8; 32];
            r.read_exact(&mut got)
                .context("the --kl file is too short")?;
            let mut want = Vec::new();
            header(&mut want)?;
            if got != want {
                bail!(
                    "{} is not a log-probability file of this text and vocabulary \
                     (made by --save-logprobs on the same text and tokenizer?)",
                    p.display()
                );
            }
            Some(r)
        }
        None => None,
    };

    let mut session = loaded.session()?;
    let started = Instant::now();
    let (mut nll, mut kl_sum, mut agree) = (0f64, 0f64, 0usize);
    let mut stretches = Vec::new();
    let mut ref_row = vec![0f32; vocab];
    let mut ref_bytes = vec![0u8; vocab * 2];
    let fed = ids.len() - 1;
    for (c, chunk) in ids[..fed].chunks(CHUNK).enumerate() {
        let logits = session.feed_all_logits(chunk)?;
        for (i, row) in logits.chunks_exact(vocab).enumerate() {
            let position = c * CHUNK + i;
            if position < args.skip {
                continue;
            }
            let next = ids[position + 1] as usize;
            let lse = log_sum_exp(row);
            let token_nll = lse - row[next] as f64;
            nll += token_nll;
            if let Some(n) = args.stretch {
                let k = (position - args.skip) / n;
                if k == stretches.len() {
                    stretches.push((0f64, 0usize));
                }
                stretches[k].0 += token_nll;
                stretches[k].1 += 1;
            }
            if let Some(w) = &mut save {
                for &v in row {
                    w.write_all(&f16::from_f32((v as f64 - lse) as f32).to_le_bytes())?;
                }
            }
            if let Some(r) = &mut reference {
                r.read_exact(&mut ref_bytes)
                    .context("the --kl file ended early")?;
                for (o, b) in ref_row.iter_mut().zip(ref_bytes.chunks_exact(2)) {
                    *o = f16::from_le_bytes([b[0], b[1]]).to_f32();
                }
                let (kl, same) = kl_divergence(&ref_row, row);
                kl_sum += kl;
                agree += usize::from(same);
            }
        }
        eprint!("\r{} / {fed} tokens", c * CHUNK + chunk.len());
    }
    eprintln!();
    if let Some(mut w) = save {
        w.flush()?;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "perplexity {:.4} over {scored} tokens ({:.1} tokens/s)",
        (nll / scored as f64).exp(),
        scored as f64 / seconds
    );
    for (k, (sum, n)) in stretches.iter().enumerate() {
        let from = args.skip + k * args.stretch.unwrap_or(1);
        println!(
            "  positions {from}..{}: perplexity {:.4}",
            from + n,
            (sum / *n as f64).exp()
        );
    }
    if reference.is_some() {
        println!(
            "KL divergence to the reference: mean {:.6} nats per token; same top token {:.2} %",
            kl_sum / scored as f64,
            100.0 * agree as f64 / scored as f64
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_sum_exp_is_stable_and_exact() {
        let row = [1000.0f32, 1000.0];
        assert!((log_sum_exp(&row) - (1000.0 + 2f64.ln())).abs() < 1e-9);
        let row = [0.5f32, -1.0, 2.0];
        let direct = row.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
        assert!((log_sum_exp(&row) - direct).abs() < 1e-12);
    }

    #[test]
    fn kl_is_zero_for_the_same_distribution_and_positive_otherwise() {
        let logits = [0.3f32, -1.2, 2.5, 0.0];
        let lse = log_sum_exp(&logits);
        let log_p: Vec<f32> = logits.iter().map(|&v| (v as f64 - lse) as f32).collect();
        let (kl, same) = kl_divergence(&log_p, &logits);
        assert!(kl < 1e-7, "{kl}");
        assert!(same);
        // Shifting all logits changes nothing; changing one does.
        let shifted: Vec<f32> = logits.iter().map(|v| v + 5.0).collect();
        assert!(kl_divergence(&log_p, &shifted).0 < 1e-6);
        let other = [0.3f32, -1.2, 0.5, 3.0];
        let (kl, same) = kl_divergence(&log_p, &other);
        // Hand-computed: Σ p (log p − log q).
        let lq = log_sum_exp(&other);
        let want: f64 = log_p
            .iter()
            .zip(&other)
            .map(|(&lp, &q)| (lp as f64).exp() * (lp as f64 - (q as f64 - lq)))
            .sum();
        assert!((kl - want).abs() < 1e-12 && kl > 0.1, "{kl} vs {want}");
        assert!(!same);
    }

    #[test]
    fn ids_files_are_read_and_checked_against_the_vocabulary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ids.txt");
        std::fs::write(&path, "1, 2,3\n 40\t5,\n").unwrap();
        assert_eq!(read_ids(&path, 41).unwrap(), vec![1, 2, 3, 40, 5]);
        let err = read_ids(&path, 40).unwrap_err().to_string();
        assert!(
            err.contains("token 40 (item 3) is outside the vocabulary of 40"),
            "{err}"
        );
        std::fs::write(&path, "1,x").unwrap();
        let err = read_ids(&path, 40).unwrap_err().to_string();
        assert!(err.contains("item 1 ('x') is not a token id"), "{err}");
    }
}
