//! `liger convert ORG/NAME`: a checkpoint from the Hugging Face Hub, through the `hf-hub`
//! crate and its cache (the layout `huggingface_hub` uses: `$HF_HOME/hub/models--ORG--NAME/
//! snapshots/REV/...`, default `~/.cache/huggingface`). `HF_TOKEN` (or the token file of
//! `huggingface-cli login`) authenticates gated repos; `HF_HUB_OFFLINE=1` reads the cache only.

use anyhow::Result;
#[cfg(feature = "hub")]
use anyhow::{bail, Context};
#[cfg(feature = "hub")]
use hf_hub::{api::sync::ApiBuilder, Cache, Repo, RepoType};
use std::path::{Path, PathBuf};

/// Files of a checkpoint the converter reads, besides the weights.
#[cfg(feature = "hub")]
const CONFIG_FILES: [&str; 6] = [
    "config.json",
    "adapter_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
];
#[cfg(feature = "hub")]
const SINGLE_WEIGHTS: [&str; 2] = ["model.safetensors", "adapter_model.safetensors"];
#[cfg(feature = "hub")]
const WEIGHT_INDEX: &str = "model.safetensors.index.json";

/// `ORG/NAME` or `ORG/NAME@REVISION` that is not an existing path.
pub fn is_repo_id(src: &Path) -> bool {
    let s = src.to_string_lossy();
    !src.exists()
        && s.split('/').count() == 2
        && !s.starts_with('.')
        && s.split('/').all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
        })
}

#[cfg(feature = "hub")]
fn repo(id: &str) -> Repo {
    match id.split_once('@') {
        Some((name, revision)) => {
            Repo::with_revision(name.into(), RepoType::Model, revision.into())
        }
        None => Repo::model(id.into()),
    }
}

/// A download's progress on stderr ([`liger_convert::progress`]: a bar with rate and time
/// left on a terminal, plain lines otherwise, nothing with `--quiet`).
#[cfg(feature = "hub")]
struct Download(Option<liger_convert::progress::Progress>, bool);

#[cfg(feature = "hub")]
impl hf_hub::api::Progress for Download {
    fn init(&mut self, size: usize, filename: &str) {
        self.0 = Some(liger_convert::progress::Progress::new(
            self.1,
            &format!("downloading {filename}"),
            size as u64,
        ));
    }

    fn update(&mut self, size: usize) {
        if let Some(p) = &mut self.0 {
            p.inc(size as u64);
        }
    }

    fn finish(&mut self) {
        if let Some(p) = &mut self.0 {
            p.finish();
        }
    }
}

/// The shard files a safetensors index names.
#[cfg(feature = "hub")]
fn shards(index: &Path) -> Result<Vec<String>> {
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(index)?)
        .with_context(|| format!("{} is not JSON", index.display()))?;
    let map = json["weight_map"]
        .as_object()
        .with_context(|| format!("{} has no weight_map", index.display()))?;
    let mut files: Vec<String> = map
        .values()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}

/// Without the `hub` feature: an error that says so.
#[cfg(not(feature = "hub"))]
pub fn fetch(id: &str, _progress: bool) -> Result<PathBuf> {
    anyhow::bail!(
        "{id}: this liger was built without Hugging Face Hub support (feature `hub`): \
         download the checkpoint and give its directory"
    )
}

/// The local snapshot directory of `id` with the files a conversion needs, downloaded (or,
/// offline, found in the cache).
#[cfg(feature = "hub")]
pub fn fetch(id: &str, progress: bool) -> Result<PathBuf> {
    let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v == "true");
    let cache = Cache::from_env();
    let mut found: Vec<PathBuf> = Vec::new();
    if offline {
        let cached = cache.repo(repo(id));
        found.extend(
            CONFIG_FILES
                .iter()
                .chain(&SINGLE_WEIGHTS)
                .chain([&WEIGHT_INDEX])
                .filter_map(|f| cached.get(f)),
        );
        if let Some(index) = found.iter().find(|p| p.ends_with(WEIGHT_INDEX)).cloned() {
            for shard in shards(&index)? {
                found.push(cached.get(&shard).with_context(|| {
                    format!(
                        "{id}: {shard} is not in the cache {}",
                        cache.path().display()
                    )
                })?);
            }
        }
        if found.is_empty() {
            bail!(
                "{id} is not in the Hugging Face cache {} (HF_HUB_OFFLINE is set)",
                cache.path().display()
            );
        }
    } else {
        let token = std::env::var("HF_TOKEN").ok().or_else(|| cache.token());
        let api = ApiBuilder::from_env()
            .with_token(token)
            .with_progress(false)
            .build()
            .context("the Hugging Face Hub client")?;
        let remote = api.repo(repo(id));
        let info = remote
            .info()
            .with_context(|| format!("{id}: no such model on the Hub, or no access (HF_TOKEN)"))?;
        let listed: Vec<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
        let mut files: Vec<String> = CONFIG_FILES
            .iter()
            .chain(&SINGLE_WEIGHTS)
            .chain([&WEIGHT_INDEX])
            .filter(|f| listed.contains(f))
            .map(|f| f.to_string())
            .collect();
        if let Some(i) = files.iter().position(|f| f == WEIGHT_INDEX) {
            let index = remote
                .get(WEIGHT_INDEX)
                .context("downloading the weight index")?;
            files.remove(i);
            files.extend(shards(&index)?);
            found.push(index);
        }
        let cached = cache.repo(repo(id));
        for file in &files {
            let path = match cached.get(file) {
                Some(path) => path,
                None => remote
                    .download_with_progress(file, Download(None, progress))
                    .with_context(|| format!("downloading {id}/{file}"))?,
            };
            found.push(path);
        }
    }
    let Some(first) = found.first() else {
        bail!("{id} has none of the files a conversion reads (config.json, *.safetensors)");
    };
    let dir = first
        .parent()
        .context("a cached file without a directory")?
        .to_owned();
    Ok(dir)
}
