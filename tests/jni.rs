//! The Android JNI bridge (`android/`) on the host JVM: the library's Java classes
//! (`android/liger/src/main/java`) and `android/tests/java/io/liger/JniHostTest.java` compiled
//! with `javac`, run with `java` against the bridge's cdylib: a fixture's greedy tokens, state
//! restore, listener stop / exception, and the error paths. Skipped with a printed reason
//! where no JDK is installed, except in CI.

use liger_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn java_sources(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "java"))
        .collect();
    files.sort();
    files
}

#[test]
fn jni_bridge_passes_the_host_jvm_test() {
    if Command::new("javac").arg("-version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "javac is required in CI (a JDK)"
        );
        eprintln!("SKIPPED: no javac (install a JDK to test the JNI bridge)");
        return;
    }
    // The cdylib built with this test binary (target/<profile>/deps).
    let lib_dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_owned();
    assert!(
        lib_dir.join("libliger_jni.so").exists() || lib_dir.join("libliger_jni.dylib").exists(),
        "no libliger_jni in {}",
        lib_dir.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let classes = dir.path().join("classes");
    let mut sources = java_sources(&repo_root().join("android/liger/src/main/java/io/liger"));
    sources.extend(java_sources(
        &repo_root().join("android/tests/java/io/liger"),
    ));
    let status = Command::new("javac")
        .args(["-Xlint:all", "-Werror", "-d"])
        .arg(&classes)
        .args(&sources)
        .status()
        .unwrap();
    assert!(status.success(), "javac failed");

    let case = fixtures().join("liger/liger_gla");
    let model = convert_case(&case, "f32", dir.path());
    let (prompt, greedy) = greedy_args(&case);
    let out = Command::new("java")
        .arg("-Xcheck:jni")
        .arg(format!("-Djava.library.path={}", lib_dir.display()))
        .arg("-cp")
        .arg(&classes)
        .arg("io.liger.JniHostTest")
        .arg(&model)
        .arg(prompt)
        .arg(greedy)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "JniHostTest failed ({}): {stderr}",
        out.status
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("all checks passed"));
}
