//! Checks over the project's own sources.

use liger_tests::repo_root;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if path.is_dir() && !matches!(name.as_str(), "target" | "fixtures" | ".git" | "corpus") {
            rust_files(&path, out);
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// Every `unsafe { … }` block and `unsafe impl` has a `// SAFETY:` comment in the comment lines
/// right above its statement (what clippy's `undocumented_unsafe_blocks` asks, without clippy).
#[test]
fn every_unsafe_block_says_why_it_is_sound() {
    let root = repo_root();
    let mut files = Vec::new();
    for dir in [
        "runtime",
        "convert",
        "cli",
        "android",
        "python",
        "benches",
        "tests",
        "fuzz/fuzz_targets",
    ] {
        rust_files(&root.join(dir), &mut files);
    }
    let (mut blocks, mut missing) = (0, Vec::new());
    // This file names the patterns in strings: it is not scanned.
    for file in files.iter().filter(|f| !f.ends_with("tests/source.rs")) {
        let text = std::fs::read_to_string(file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            let is_unsafe = code.contains("unsafe {") || code.contains("unsafe impl");
            if !is_unsafe {
                continue;
            }
            blocks += 1;
            // Walk up over the statement's earlier lines and the comments above it.
            let mut documented = line.contains("SAFETY:");
            let mut j = i;
            while !documented && j > 0 {
                j -= 1;
                let above = lines[j].trim();
                if above.starts_with("//") {
                    documented = above.contains("SAFETY:");
                } else if above.ends_with(';')
                    || above.ends_with('{')
                    || above.ends_with('}')
                    || above.is_empty()
                {
                    break;
                }
            }
            if !documented {
                missing.push(format!(
                    "{}:{}: {}",
                    file.strip_prefix(&root).unwrap().display(),
                    i + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        blocks > 50,
        "found only {blocks} unsafe blocks: is the scan looking in the right place?"
    );
    assert!(
        missing.is_empty(),
        "unsafe without a `// SAFETY:` comment:\n{}",
        missing.join("\n")
    );
}
