//! The C ABI (`liger::capi`, feature `capi`): the checked-in header is what cbindgen makes of
//! the source, and `tests/c/capi_test.c`, compiled with the system C compiler against the
//! cdylib, passes — under valgrind (no invalid access, no leak) where valgrind is installed,
//! which CI requires.

use liger_tests::*;
use std::path::PathBuf;
use std::process::Command;

fn in_ci() -> bool {
    std::env::var_os("CI").is_some() || std::env::var_os("LIGER_REQUIRE_VALGRIND").is_some()
}

/// What cbindgen generates from `runtime/src/capi` with `runtime/cbindgen.toml`.
fn generated_header() -> String {
    let runtime = repo_root().join("runtime");
    let config = cbindgen::Config::from_file(runtime.join("cbindgen.toml")).unwrap();
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        // mod.rs; cbindgen follows its `mod` declarations.
        .with_src(runtime.join("src/capi/mod.rs"))
        .generate()
        .expect("cbindgen");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn header_is_current() {
    let path = repo_root().join("runtime/include/liger.h");
    let want = generated_header();
    if std::env::var_os("LIGER_BLESS").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    if have != want {
        let line = have
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(have.lines().count().min(want.lines().count()));
        panic!(
            "runtime/include/liger.h is stale (first difference at line {}): regenerate it \
             with LIGER_BLESS=1 cargo test -p liger-tests capi::header",
            line + 1
        );
    }
}

/// The directory of the cdylib built with this test binary and its features
/// (target/<profile>/deps: `cargo test` does not copy it up to target/<profile>).
fn library_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().to_owned()
}

#[test]
fn c_test_program_passes() {
    let lib = library_dir();
    assert!(
        lib.join("libliger.so").exists() || lib.join("libliger.dylib").exists(),
        "no cdylib in {}",
        lib.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("capi_test");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-o"])
        .arg(&exe)
        .arg(repo_root().join("tests/c/capi_test.c"))
        .arg("-I")
        .arg(repo_root().join("runtime/include"))
        .arg("-L")
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args(["-lliger", "-lpthread"])
        .status()
        .unwrap_or_else(|e| panic!("running the C compiler '{cc}': {e}"));
    assert!(status.success(), "compiling tests/c/capi_test.c failed");

    let case = fixtures().join("liger/liger_gla");
    let model = convert_case(&case, "f32", dir.path());
    let (prompt, greedy) = greedy_args(&case);
    let mut args = vec![model.display().to_string(), prompt, greedy];
    if let Some(real) = smollm2_liger_q8_0() {
        args.push(real.display().to_string());
    }
    let valgrind = Command::new("valgrind").arg("--version").output().is_ok();
    assert!(
        valgrind || !in_ci(),
        "valgrind is required in CI (apt-get install valgrind)"
    );
    let mut command = if valgrind {
        let mut c = Command::new("valgrind");
        c.args([
            "--error-exitcode=99",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite",
            "--show-leak-kinds=definite",
            "--quiet",
        ])
        .arg(&exe);
        c
    } else {
        eprintln!("valgrind not found: running the C test without it");
        Command::new(&exe)
    };
    let start = std::time::Instant::now();
    // cargo's LD_LIBRARY_PATH puts target/<profile> (where a `cargo build` of another profile
    // or feature set leaves a libliger.so) before the rpath: load the one built with this test.
    let out = command
        .args(&args)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    eprintln!("capi_test ran in {:.1} s", start.elapsed().as_secs_f64());
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "capi_test failed ({}): {stderr}",
        out.status
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("all checks passed"));
}
