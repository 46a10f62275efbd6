#!/usr/bin/env bash
# Cross-compiles the JNI library (libliger_jni.so) for arm64-v8a and x86_64 into
# liger/src/main/jniLibs with cargo-ndk, then, with --app, builds the sample app's debug APK.
# Needs an Android NDK (ANDROID_NDK_HOME) and `cargo install cargo-ndk`; --app needs the
# Android SDK and Gradle.
set -euo pipefail
cd "$(dirname "$0")"
if [[ -z "${ANDROID_NDK_HOME:-}" ]]; then
  echo "ANDROID_NDK_HOME is not set: install an Android NDK (r26 or later)" >&2
  exit 1
fi
command -v cargo-ndk >/dev/null || { echo "cargo-ndk is missing: cargo install cargo-ndk" >&2; exit 1; }
rustup target add aarch64-linux-android x86_64-linux-android
cargo ndk -t arm64-v8a -t x86_64 -o liger/src/main/jniLibs build --release -p liger-android
ls -l liger/src/main/jniLibs/*/libliger_jni.so
if [[ "${1:-}" == "--app" ]]; then
  gradle :app:assembleDebug
  echo "APK: app/build/outputs/apk/debug/app-debug.apk"
fi
