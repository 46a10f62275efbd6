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

/// What both host-JVM tests need: the bridge's directory, the library's Java classes (and the
/// Java test) compiled, the fixture model and its greedy reference. `None` (skipped) without a
/// JDK outside CI.
struct Jvm {
    dir: tempfile::TempDir,
    lib_dir: PathBuf,
    classes: PathBuf,
    model: PathBuf,
    prompt: String,
    greedy: String,
}

fn jvm() -> Option<Jvm> {
    if Command::new("javac").arg("-version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "javac is required in CI (a JDK)"
        );
        eprintln!("SKIPPED: no javac (install a JDK to test the JNI bridge)");
        return None;
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
    Some(Jvm {
        dir,
        lib_dir,
        classes,
        model,
        prompt,
        greedy,
    })
}

/// Runs `main_class` on the bridge with `classpath` and `args`; fails with its stderr.
fn run_jvm(jvm: &Jvm, classpath: &str, main_class: &str, args: &[String]) -> String {
    let out = Command::new("java")
        .arg("-Xcheck:jni")
        .arg(format!("-Djava.library.path={}", jvm.lib_dir.display()))
        .arg("-cp")
        .arg(classpath)
        .arg(main_class)
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "{main_class} failed ({}): {stderr}",
        out.status
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn jni_bridge_passes_the_host_jvm_test() {
    let Some(jvm) = jvm() else {
        return;
    };
    let args = [
        jvm.model.display().to_string(),
        jvm.prompt.clone(),
        jvm.greedy.clone(),
    ];
    let out = run_jvm(
        &jvm,
        jvm.classes.to_str().unwrap(),
        "io.liger.JniHostTest",
        &args,
    );
    assert!(out.contains("all checks passed"));
}

/// The Kotlin API compiled (the Kotlin compiler and kotlinx.coroutines from
/// `scripts/fetch-kotlin.sh`, or `$LIGER_KOTLIN`) and run on the host JVM: `KotlinHostTest.kt`.
#[test]
fn kotlin_api_passes_the_host_jvm_test() {
    let Some(jvm) = jvm() else {
        return;
    };
    let kotlin = std::env::var_os("LIGER_KOTLIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cache/liger-kotlin"));
    let (stdlib, all) = (
        kotlin.join("kotlin-stdlib.jar"),
        kotlin.join("kotlin-all.jar"),
    );
    if !all.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the Kotlin compiler is required in CI (scripts/fetch-kotlin.sh)"
        );
        eprintln!("SKIPPED: no Kotlin compiler (scripts/fetch-kotlin.sh)");
        return;
    }
    let mut sources = kotlin_sources(&repo_root().join("android/liger/src/main/kotlin/io/liger"));
    sources.extend(kotlin_sources(
        &repo_root().join("android/tests/kotlin/io/liger"),
    ));
    let kclasses = jvm.dir.path().join("kotlin-classes");
    let libs = format!(
        "{}:{}:{}",
        jvm.classes.display(),
        stdlib.display(),
        all.display()
    );
    let status = Command::new("java")
        .arg("-cp")
        .arg(&all)
        .arg("org.jetbrains.kotlin.cli.jvm.K2JVMCompiler")
        .args([
            "-no-stdlib",
            "-no-reflect",
            "-Werror",
            "-jvm-target",
            "17",
            "-cp",
            &libs,
            "-d",
        ])
        .arg(&kclasses)
        .args(&sources)
        .status()
        .unwrap();
    assert!(status.success(), "the Kotlin compiler failed");
    let mut args = vec![
        jvm.model.display().to_string(),
        jvm.prompt.clone(),
        jvm.greedy.clone(),
    ];
    if let Some(real) = smollm2_liger_q8_0() {
        args.push(real.display().to_string());
    }
    let classpath = format!("{}:{libs}", kclasses.display());
    let out = run_jvm(&jvm, &classpath, "io.liger.KotlinHostTestKt", &args);
    assert!(out.contains("kotlin: all checks passed"));
}

fn kotlin_sources(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "kt"))
        .collect();
    files.sort();
    files
}

fn home() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
}
