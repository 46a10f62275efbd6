//! `liger chat` on a real terminal: tmux runs it in a pane, keys are sent with `send-keys`
//! (and a bracketed paste with `paste-buffer -p`), the screen is read with `capture-pane`; the
//! chat's speed lines go to a file (stderr). Skipped without tmux unless
//! `LIGER_REQUIRE_TERMINAL` is set (CI installs it).

use liger_tests::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "tmux {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A tmux session running one command; killed on drop.
struct Pane(String);

impl Pane {
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.0];
        args.extend_from_slice(keys);
        tmux(&args);
    }

    /// Types `text` literally, then Enter.
    fn line(&self, text: &str) {
        tmux(&["send-keys", "-t", &self.0, "-l", text]);
        self.keys(&["Enter"]);
    }

    fn screen(&self) -> String {
        tmux(&["capture-pane", "-p", "-t", &self.0])
    }

    fn alive(&self) -> bool {
        Command::new("tmux")
            .args(["has-session", "-t", &self.0])
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}

/// Waits until `ready(text of file)` holds (30 s at most).
fn wait_for(path: &Path, what: &str, ready: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if ready(&text) {
            return text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "waited 60 s for {what}; stderr so far:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The chat's speed lines: "(N new prompt tokens in ..., context C tokens)".
fn turns(log: &str) -> Vec<(usize, String)> {
    log.lines()
        .filter(|l| l.contains(" new prompt tokens in "))
        .map(|l| {
            let fed = l[1..].split(' ').next().unwrap().parse().unwrap();
            let context = l.split("context ").nth(1).unwrap_or("").to_string();
            (fed, context)
        })
        .collect()
}

#[test]
fn chat_in_a_terminal_recalls_pastes_retries_and_keeps_history() {
    if Command::new("tmux").arg("-V").output().is_err() {
        assert!(
            std::env::var_os("LIGER_REQUIRE_TERMINAL").is_none(),
            "tmux is missing and LIGER_REQUIRE_TERMINAL is set"
        );
        eprintln!("SKIPPED: tmux is not installed");
        return;
    }
    let Some(model) = smollm2_liger_q8_0() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (log, history) = (dir.path().join("stderr.log"), dir.path().join("history"));
    let command = format!(
        "{} chat -m {} --temp 0 --ignore-eos -n 12 --history {} 2> {}",
        env!("CARGO_BIN_EXE_liger"),
        model.display(),
        history.display(),
        log.display()
    );
    let pane = Pane(format!("liger-chat-{}", std::process::id()));
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &pane.0,
        "-x",
        "160",
        "-y",
        "48",
        &command,
    ]);
    wait_for(&log, "the chat to start", |t| {
        t.contains("chat: type a message")
    });

    // A message, answered.
    pane.line("What is the capital of France?");
    wait_for(&log, "the first answer", |t| turns(t).len() == 1);
    // Up-arrow brings it back at the prompt; Enter sends it again.
    let answered = pane
        .screen()
        .matches("> What is the capital of France?")
        .count();
    pane.keys(&["Up"]);
    let start = Instant::now();
    let prompt_line = |screen: &str| {
        let last = screen.lines().rev().find(|l| !l.trim().is_empty());
        last.is_some_and(|l| l.contains("> What is the capital of France?"))
    };
    while !prompt_line(&pane.screen())
        || pane
            .screen()
            .matches("> What is the capital of France?")
            .count()
            == answered
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "up-arrow recalled nothing:\n{}",
            pane.screen()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    pane.keys(&["Enter"]);
    wait_for(&log, "the second answer", |t| turns(t).len() == 2);

    // Three pasted lines (a bracketed paste, as a terminal sends it) are one message.
    tmux(&[
        "set-buffer",
        "-b",
        "liger-paste",
        "The first line.\nThe second line.\nThe third line.",
    ]);
    tmux(&["paste-buffer", "-p", "-b", "liger-paste", "-t", &pane.0]);
    std::thread::sleep(Duration::from_millis(300));
    pane.keys(&["Enter"]);
    let log_text = wait_for(&log, "the answer to the paste", |t| turns(t).len() >= 3);
    std::thread::sleep(Duration::from_secs(2));
    let log_text = std::fs::read_to_string(&log).unwrap_or(log_text);
    assert_eq!(
        turns(&log_text).len(),
        3,
        "the paste was answered line by line:\n{log_text}"
    );

    // /retry answers again from the state kept before the answer: nothing is fed.
    pane.line("/retry");
    let log_text = wait_for(&log, "the retried answer", |t| turns(t).len() == 4);
    let all = turns(&log_text);
    assert_eq!(
        all[3].0, 0,
        "/retry fed the conversation again:\n{log_text}"
    );
    assert_eq!(
        all[3].1, all[2].1,
        "greedy /retry ended at another context:\n{log_text}"
    );

    // A """ block over several lines is one message.
    pane.line("\"\"\"Two lines");
    pane.line("in one block\"\"\"");
    wait_for(&log, "the answer to the block", |t| turns(t).len() == 5);

    // Ctrl-C stops a long answer, not the program (ctrlc and the editor agree on SIGINT).
    pane.line("/set max_tokens 100000");
    pane.line("Tell me a very long story.");
    std::thread::sleep(Duration::from_millis(1500));
    pane.keys(&["C-c"]);
    let log_text = wait_for(&log, "the stopped answer", |t| turns(t).len() == 6);
    assert!(log_text.contains("(stopped)"), "{log_text}");
    assert!(pane.alive(), "Ctrl-C ended the chat");
    // Ctrl-C at the prompt only reminds how to leave.
    pane.keys(&["C-c"]);
    wait_for(&log, "the reminder", |t| t.contains("Ctrl-D leaves"));

    pane.line("/quit");
    let start = Instant::now();
    while pane.alive() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "/quit did not end the chat"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let kept = std::fs::read_to_string(&history).unwrap();
    for message in [
        "What is the capital of France?",
        "The first line.",
        "The third line.",
        "/retry",
    ] {
        assert!(
            kept.contains(message),
            "the history file lacks {message:?}:\n{kept}"
        );
    }
}
