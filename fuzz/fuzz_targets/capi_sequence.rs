//! Fuzzes sequences of C ABI calls, as an app embedding liger makes them — in any order,
//! with handles already freed, null pointers and saved states cut or flipped: every call
//! returns a status (an error code with a message, or `LIGER_OK`), never crashes.
//!
//! Input: one call per byte pair (op, argument), on a tiny model loaded (and freed, and
//! loaded again) as the input says; up to 8 session slots hold handles, live or freed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use liger::capi::*;
use std::ffi::CString;
use std::sync::OnceLock;

/// A tiny synthetic model file, written once.
fn model_path() -> &'static CString {
    static PATH: OnceLock<(tempfile::TempDir, CString)> = OnceLock::new();
    &PATH
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let mut config =
                liger_convert::synth::shape_config("tiny", liger::Variant::Gla).unwrap();
            config.n_layers = 1;
            config.window = 4;
            let path = dir.path().join("tiny.gguf");
            liger_convert::synth::write_synthetic(&config, liger_convert::OutType::F16, &path)
                .unwrap();
            let c = CString::new(path.to_str().unwrap()).unwrap();
            (dir, c)
        })
        .1
}

/// A status is `LIGER_OK` or an error code with a message.
fn checked(status: LigerStatus) -> bool {
    if status != LIGER_OK {
        // SAFETY: the library returns a NUL-terminated string it owns.
        let message = unsafe { std::ffi::CStr::from_ptr(liger_last_error()) };
        assert!(!message.to_bytes().is_empty(), "status {status} without a message");
    }
    status == LIGER_OK
}

fuzz_target!(|data: &[u8]| {
    let mut options = std::mem::MaybeUninit::<LigerModelOptions>::uninit();
    assert!(checked(liger_model_options_default(options.as_mut_ptr())));
    // SAFETY: filled by liger_model_options_default.
    let mut options = unsafe { options.assume_init() };
    options.threads = 1;
    let mut model: *mut LigerModel = std::ptr::null_mut();
    let mut sessions: [*mut LigerSession; 8] = [std::ptr::null_mut(); 8];
    let mut saved: Vec<u8> = Vec::new();
    let mut logits = vec![0f32; 1024];
    for op in data.chunks_exact(2).take(64) {
        let (code, arg) = (op[0], op[1]);
        let slot = (arg % 8) as usize;
        match code % 12 {
            0 => {
                options.use_mmap = i32::from(arg & 1 == 0);
                options.decode_mode = i32::from(arg & 2 != 0);
                let mut m = std::ptr::null_mut();
                if checked(liger_model_load(model_path().as_ptr(), &options, &mut m)) {
                    if !model.is_null() {
                        checked(liger_model_free(model));
                    }
                    model = m;
                }
            }
            // Freed (or never loaded): later calls on it are errors, sessions keep it alive.
            1 => {
                checked(liger_model_free(model));
            }
            2 => {
                let mut s = std::ptr::null_mut();
                if checked(liger_session_new(model, &mut s)) {
                    sessions[slot] = s;
                }
            }
            3 => {
                checked(liger_session_free(sessions[slot]));
            }
            4 => {
                let tokens = [u32::from(arg), u32::from(arg) * 3, u32::from(arg) << 8];
                let n = (arg as usize >> 3) % 4;
                checked(liger_session_feed(sessions[slot], tokens.as_ptr(), n));
            }
            5 => {
                let mut s = std::ptr::null_mut();
                if checked(liger_session_fork(sessions[slot], &mut s)) {
                    sessions[(slot + 1) % 8] = s;
                }
            }
            6 => {
                let mut len = 0usize;
                let mut buf = vec![0u8; if arg & 1 == 0 { 1 << 20 } else { 16 }];
                if checked(liger_state_save(sessions[slot], buf.as_mut_ptr(), buf.len(), &mut len)) {
                    buf.truncate(len);
                    saved = buf;
                }
            }
            7 => {
                let mut bytes = saved.clone();
                match arg >> 3 {
                    0 => {}
                    1 => bytes.truncate(bytes.len() / 2),
                    k => {
                        if let Some(b) = bytes.get_mut(k as usize * 97) {
                            *b ^= 0x5a;
                        }
                    }
                }
                checked(liger_state_load(sessions[slot], bytes.as_ptr(), bytes.len()));
            }
            8 => {
                let mut len = 0usize;
                let cap = if arg & 1 == 0 { logits.len() } else { 3 };
                checked(liger_session_logits(sessions[slot], logits.as_mut_ptr(), cap, &mut len));
            }
            9 => {
                let mut token = 0u32;
                checked(liger_session_sample(sessions[slot], std::ptr::null(), &mut token));
            }
            10 => {
                let mut n = 0usize;
                checked(liger_session_generate(
                    sessions[slot],
                    std::ptr::null(),
                    (arg >> 4) as usize,
                    None,
                    std::ptr::null_mut(),
                    &mut n,
                ));
            }
            _ => {
                // Null pointers where the ABI takes them.
                checked(liger_session_feed(sessions[slot], std::ptr::null(), 1));
                checked(liger_session_new(model, std::ptr::null_mut()));
            }
        }
    }
    for s in sessions {
        checked(liger_session_free(s));
    }
    checked(liger_model_free(model));
});
