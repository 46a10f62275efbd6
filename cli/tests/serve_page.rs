//! The chat page at `/` in a real browser: Debian's chromium, headless, driven through
//! selenium (`python/chat_page.py`) — a key asked for and given, a question typed, streamed
//! text seen arriving, Stop pressed, the sequence freed on the server, a second question.
//! CI installs chromium, chromium-driver and selenium and sets LIGER_REQUIRE_BROWSER=1.

mod support;

use std::process::Command;
use support::*;

fn browser_present() -> bool {
    let present = std::path::Path::new("/usr/bin/chromium").exists()
        && std::path::Path::new("/usr/bin/chromedriver").exists()
        && Command::new("python3")
            .args(["-c", "import selenium"])
            .status()
            .is_ok_and(|s| s.success());
    if !present {
        assert!(
            std::env::var_os("LIGER_REQUIRE_BROWSER").is_none(),
            "the browser test needs /usr/bin/chromium, /usr/bin/chromedriver and selenium"
        );
        eprintln!("SKIPPED: the chat page's browser test (apt install chromium chromium-driver; pip install selenium)");
    }
    present
}

#[test]
fn serve_chat_page_streams_and_stops_in_a_real_browser() {
    // The recovered demo model: it answers with text (the unrecovered one ends at once).
    let Some(model) = liger_tests::smollm2_recovered_q8_0() else {
        return;
    };
    if !browser_present() {
        return;
    }
    let key = "sk-page-test";
    let s = serve_with(model.to_str().unwrap(), &["--api-key", key]);
    let shot = std::env::temp_dir().join(format!("liger-chat-page-{}.png", std::process::id()));
    let said = python_script(
        "chat_page.py",
        &[s.base.as_str(), key, shot.to_str().unwrap()],
    );
    println!("{said}screenshot: {}", shot.display());
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "no screenshot");
}
