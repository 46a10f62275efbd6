//! The JNI bridge: static native methods of `io.liger.LigerNative` (the Kotlin `object` behind
//! `LigerModel` / `LigerSession`, or the Java class of the host test) over the C ABI
//! (`liger::capi`), so the JVM gets the same checks: handles are `long`s the C ABI validates
//! (0, freed or foreign → an exception, never a crash), every error is thrown as
//! `io.liger.LigerException("[code] message")`, and no panic crosses into the JVM.

use jni::objects::{
    JByteArray, JClass, JFloatArray, JIntArray, JLongArray, JObject, JObjectArray, JString, JValue,
};
use jni::sys::{jboolean, jbyteArray, jfloat, jfloatArray, jint, jintArray, jlong, jstring};
use jni::JNIEnv;
use liger::capi::*;
use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

const EXCEPTION: &str = "io/liger/LigerException";

/// An error to throw: (code, message).
struct Thrown(i32, String);

type JResult<T> = Result<T, Thrown>;

impl From<jni::errors::Error> for Thrown {
    fn from(e: jni::errors::Error) -> Thrown {
        Thrown(LIGER_ERROR_INVALID_ARGUMENT, format!("JNI: {e}"))
    }
}

/// A C ABI status as a result (the message from `liger_last_error`).
fn check(status: LigerStatus) -> JResult<()> {
    if status == LIGER_OK {
        return Ok(());
    }
    // SAFETY: liger_last_error returns a valid NUL-terminated string owned by this thread.
    let message = unsafe { CStr::from_ptr(liger_last_error()) };
    Err(Thrown(status, message.to_string_lossy().into_owned()))
}

/// Runs a native method's body: an error (or a panic) becomes a pending `LigerException` and
/// the method returns `fallback`.
fn bridge<'local, T>(
    env: &mut JNIEnv<'local>,
    fallback: T,
    f: impl FnOnce(&mut JNIEnv<'local>) -> JResult<T>,
) -> T {
    let outcome = catch_unwind(AssertUnwindSafe(|| f(env)));
    let Thrown(code, message) = match outcome {
        Ok(Ok(value)) => return value,
        Ok(Err(thrown)) => thrown,
        Err(_) => Thrown(
            LIGER_ERROR_PANIC,
            "internal error (panic) in the JNI bridge".into(),
        ),
    };
    // A Java exception already pending (from a listener, say) is kept.
    if !env.exception_check().unwrap_or(true) {
        let _ = env.throw_new(EXCEPTION, format!("[{code}] {message}"));
    }
    fallback
}

fn model(handle: jlong) -> *mut LigerModel {
    handle as usize as *mut LigerModel
}

fn session(handle: jlong) -> *mut LigerSession {
    handle as usize as *mut LigerSession
}

fn string(env: &mut JNIEnv, s: &JString) -> JResult<CString> {
    if s.is_null() {
        return Err(Thrown(LIGER_ERROR_NULL, "string argument is null".into()));
    }
    let s: String = env.get_string(s)?.into();
    CString::new(s).map_err(|_| Thrown(LIGER_ERROR_INVALID_ARGUMENT, "string contains NUL".into()))
}

/// A Java `String[]` as C strings (a null array or element is an error).
fn strings(env: &mut JNIEnv, array: &JObjectArray) -> JResult<Vec<CString>> {
    if array.is_null() {
        return Err(Thrown(LIGER_ERROR_NULL, "string array is null".into()));
    }
    (0..env.get_array_length(array)?)
        .map(|i| {
            let element = JString::from(env.get_object_array_element(array, i)?);
            string(env, &element)
        })
        .collect()
}

fn ids(env: &mut JNIEnv, array: &JIntArray) -> JResult<Vec<u32>> {
    if array.is_null() {
        return Err(Thrown(LIGER_ERROR_NULL, "id array is null".into()));
    }
    let mut v = vec![0i32; env.get_array_length(array)? as usize];
    env.get_int_array_region(array, 0, &mut v)?;
    Ok(v.into_iter().map(|i| i as u32).collect())
}

/// Calls a C ABI function that fills a (buffer, capacity, length) triple, growing the buffer.
fn read_out<T: Copy + Default>(
    mut call: impl FnMut(*mut T, usize, *mut usize) -> LigerStatus,
) -> JResult<Vec<T>> {
    let mut len = 0usize;
    let status = call(std::ptr::null_mut(), 0, &mut len);
    if status != LIGER_ERROR_BUFFER_TOO_SMALL {
        check(status)?;
        return Ok(Vec::new());
    }
    let mut buf = vec![T::default(); len + 1];
    check(call(buf.as_mut_ptr(), buf.len(), &mut len))?;
    buf.truncate(len);
    Ok(buf)
}

#[no_mangle]
pub extern "system" fn Java_io_liger_LigerNative_version(mut env: JNIEnv, _: JClass) -> jstring {
    bridge(&mut env, std::ptr::null_mut(), |env| {
        // SAFETY: liger_version returns a static NUL-terminated string.
        let v = unsafe { CStr::from_ptr(liger_version()) }.to_string_lossy();
        Ok(env.new_string(v)?.into_raw())
    })
}

#[no_mangle]
pub extern "system" fn Java_io_liger_LigerNative_modelLoad(
    mut env: JNIEnv,
    _: JClass,
    path: JString,
    threads: jint,
    decode_mode: jint,
    backend: jint,
    use_mmap: jboolean,
) -> jlong {
    bridge(&mut env, 0, |env| {
        let path = string(env, &path)?;
        let mut options = std::mem::MaybeUninit::<LigerModelOptions>::uninit();
        check(liger_model_options_default(options.as_mut_ptr()))?;
        // SAFETY: initialized by liger_model_options_default (checked above).
        let mut options = unsafe { options.assume_init() };
        options.threads = threads.max(0) as u32;
        options.decode_mode = decode_mode;
        options.backend = backend;
        options.use_mmap = i32::from(use_mmap != 0);
        let mut out = std::ptr::null_mut();
        check(liger_model_load(path.as_ptr(), &options, &mut out))?;
        Ok(out as usize as jlong)
    })
}

#[no_mangle]
pub extern "system" fn Java_io_liger_LigerNative_modelFree(mut env: JNIEnv, _: JClass, m: jlong) {
    bridge(&mut env, (), |_| check(liger_model_free(model(m))))
}

#[no_mangle]
pub extern "system" fn Java_io_liger_LigerNative_vocabSize(
    mut env: JNIEnv,
    _: JClass,
    m: jlong,
) -> jint {
    bridge(&mut env, 0, |_| {
        let mut n = 0usize;
        check(liger_model_vocab_size(model(m), &mut n))?;
        Ok(n as jint)
    })
}

#[no_mangle]
pub extern "system" fn Java_io_liger_LigerNative_tokenize(
    mut env: JNIEnv,
    _: JClass,
    m: jlong,
    text: JString,
    add_special: jboolean,
) -> jintArray {
    bridge(&mut env, std::ptr::null_mut(), |env| {
        let text = string(env, &text)?;
        let ids = read_out(|buf, cap, len| {
            liger_tokenize(model(m), text.as_ptr(), add_special != 0, buf, cap, len)
        })?;
        let out = env.new_int_array(ids.len() as i32)?;
        let ids: Vec<i32> = ids.into_iter().map(|i| i as i32).collect();
        env.set_int_array_region(&out, 0, &ids)?;
        Ok(out.into_raw())
    })
}

#[no_mangle]
pub extern "system" fn Java_io_liger_LigerNative_detokenize(
    mut env: JNIEnv,
    _: JClass,
    m: jlong,
    ids_array: JIntArray,
) -> jstring {
    bridge(&mut env, std::ptr::null_mut(), |env| {
        let ids = ids(env, &ids_array)?;
        let bytes = read_out(|buf: *mut c_char, cap, len| {
            liger_detokenize(model(m), ids.as_ptr(), ids.len(), buf, cap, len)
        })?;
        let bytes: Vec<u8> = bytes.into_iter().map(|b| b as u8).collect();
        Ok(env.new_string(String::from_utf8_lossy(&bytes))?.into_raw())
    })
}

#[no_mangle]
pub extern "system" fn Java_io_liger_LigerNative_sessionNew(
    mut env: JNIEnv,
    _: JClass,
    m: jlong,
) -> jlong {
    bridge(&mut env, 0, |_| {
        let mut out = std::ptr::null_mut();
        check(liger_session_new(model(m), &mut out))?;
        Ok(out as usize as jlong)
    })
}

#[no_mangle]
pub extern "system" fn Java_io_liger_LigerNative_sessionFree(mut env: JNIEnv, _: JClass, s: jlong) {
    bridge(&mut env, (), |_| check(liger_session_free(session(s))))
}

#[no_mangle]
pub extern "system" fn Java_io_liger_LigerNative_sessionFork(
    mut env: JNIEnv,
    _: JClass,
    s: jlong,
) -> jlong {
    bridge(&mut env, 0, |_| {
        let mut out = std::ptr::null_mut();
        check(liger_session_fork(session(s), &mut out))?;
        Ok(out as usize as jlong)
    })
}

#[no_mangle]
pub extern "system" fn Java_io_liger_LigerNative_sessionReset(
    mut env: JNIEnv,
    _: JClass,
    s: jlong,
) {
    bridge(&mut env, (), |_| check(liger_session_reset(session(s))))
}

#[no_mangle]
pub extern "system" fn Java_io_liger_LigerNative_sessionPosition(
    mut env: JNIEnv,
    _: JClass,
    s: jlong,
) -> jlong {
    bridge(&mut env, 0, |_| {
        let mut pos = 0u64;
        check(liger_session_position(session(s), &mut pos))?;
        Ok(pos as jlong)
    })
}

#[no_mangle]
pub extern "system" fn Java_io_liger_LigerNative_sessionFeed(
    mut env: JNIEnv,
    _: JClass,
    s: jlong,
    ids_array: JIntArray,
) {
    bridge(&mut env, (), |env| {
        let ids = ids(env, &ids_array)?;
        check(liger_session_feed(session(s), ids.as_ptr(), ids.len()))
    })
}

/// `liger_sessions_decode`: `tokens[i]` fed to `sessions[i]`, all in one batched step.
#[no_mangle]
pub extern "system" fn Java_io_liger_LigerNative_sessionsDecode(
    mut env: JNIEnv,
    _: JClass,
    sessions: JLongArray,
    tokens: JIntArray,
) {
    bridge(&mut env, (), |env| {
        if sessions.is_null() {
            return Err(Thrown(LIGER_ERROR_NULL, "session array is null".into()));
        }
        let mut handles = vec![0i64; env.get_array_length(&sessions)? as usize];
        env.get_long_array_region(&sessions, 0, &mut handles)?;
        let tokens = ids(env, &tokens)?;
        if tokens.len() != handles.len() {
            return Err(Thrown(
                LIGER_ERROR_INVALID_ARGUMENT,
                format!("{} sessions but {} tokens", handles.len(), tokens.len()),
            ));
        }
        let handles: Vec<*mut LigerSession> = handles.into_iter().map(session).collect();
        check(liger_sessions_decode(
            handles.as_ptr(),
            tokens.as_ptr(),
            tokens.len(),
        ))
    })
}

#[no_mangle]
pub extern "system" fn Java_io_liger_LigerNative_sessionFeedText(
    mut env: JNIEnv,
    _: JClass,
    s: jlong,
    text: JString,
    add_special: jboolean,
) {
    bridge(&mut env, (), |env| {
        let text = string(env, &text)?;
        check(liger_session_feed_text(
            session(s),
            text.as_ptr(),
            add_special != 0,
        ))
    })
}

#[no_mangle]
pub extern "system" fn Java_io_liger_LigerNative_chatApplyTemplate(
    mut env: JNIEnv,
    _: JClass,
    m: jlong,
    roles: JObjectArray,
    contents: JObjectArray,
    tools_json: JString,
    add_generation_prompt: jboolean,
) -> jstring {
    bridge(&mut env, std::ptr::null_mut(), |env| {
        let (roles, contents) = (strings(env, &roles)?, strings(env, &contents)?);
        let tools = (!tools_json.is_null())
            .then(|| string(env, &tools_json))
            .transpose()?;
        if roles.len() != contents.len() {
            return Err(Thrown(
                LIGER_ERROR_INVALID_ARGUMENT,
                "roles and contents differ in length".into(),
            ));
        }
        let messages: Vec<LigerChatMessage> = roles
            .iter()
            .zip(&contents)
            .map(|(r, c)| LigerChatMessage {
                role: r.as_ptr(),
                content: c.as_ptr(),
            })
            .collect();
        let bytes = read_out(|buf: *mut c_char, cap, len| {
            liger_chat_apply_template(
                model(m),
                messages.as_ptr(),
                messages.len(),
                tools.as_ref().map_or(std::ptr::null(), |t| t.as_ptr()),
                add_generation_prompt != 0,
                buf,
                cap,
                len,
            )
        })?;
        let bytes: Vec<u8> = bytes.into_iter().map(|b| b as u8).collect();
        Ok(env.new_string(String::from_utf8_lossy(&bytes))?.into_raw())
    })
}

#[no_mangle]
pub extern "system" fn Java_io_liger_LigerNative_stopIds(
    mut env: JNIEnv,
    _: JClass,
    m: jlong,
) -> jintArray {
    bridge(&mut env, std::ptr::null_mut(), |env| {
        let ids = read_out(|buf: *mut u32, cap, n| liger_model_stop_ids(model(m), buf, cap, n))?;
        let ids: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
        let array = env.new_int_array(ids.len() as i32)?;
        env.set_int_array_region(&array, 0, &ids)?;
        Ok(array.into_raw())
    })
}

#[no_mangle]
pub extern "system" fn Java_io_liger_LigerNative_sessionSetGrammar(
    mut env: JNIEnv,
    _: JClass,
    s: jlong,
    kind: JString,
    grammar: JString,
) {
    bridge(&mut env, (), |env| {
        // A null kind lifts the constraint; a null grammar is allowed for "json_object".
        let kind = (!kind.is_null()).then(|| string(env, &kind)).transpose()?;
        let grammar = (!grammar.is_null())
            .then(|| string(env, &grammar))
            .transpose()?;
        let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
        check(liger_session_set_grammar(
            session(s),
            ptr(&kind),
            ptr(&grammar),
        ))
    })
}

#[no_mangle]
pub extern "system" fn Java_io_liger_LigerNative_sessionSetStopStrings(
    mut env: JNIEnv,
    _: JClass,
    s: jlong,
    stops: JObjectArray,
) {
    bridge(&mut env, (), |env| {
        let stops = strings(env, &stops)?;
        let pointers: Vec<*const c_char> = stops.iter().map(|c| c.as_ptr()).collect();
        check(liger_session_set_stop_strings(
            session(s),
            pointers.as_ptr(),
            pointers.len(),
        ))
    })
}

#[no_mangle]
pub extern "system" fn Java_io_liger_LigerNative_sessionSetLogitBias(
    mut env: JNIEnv,
    _: JClass,
    s: jlong,
    id_array: JIntArray,
    bias_array: JFloatArray,
) {
    bridge(&mut env, (), |env| {
        let ids = ids(env, &id_array)?;
        if bias_array.is_null() {
            return Err(Thrown(LIGER_ERROR_NULL, "bias array is null".into()));
        }
        let mut biases = vec![0f32; env.get_array_length(&bias_array)? as usize];
        env.get_float_array_region(&bias_array, 0, &mut biases)?;
        if biases.len() != ids.len() {
            return Err(Thrown(
                LIGER_ERROR_INVALID_ARGUMENT,
                format!("{} ids but {} biases", ids.len(), biases.len()),
            ));
        }
        check(liger_session_set_logit_bias(
            session(s),
            ids.as_ptr(),
            biases.as_ptr(),
            ids.len(),
        ))
    })
}

#[no_mangle]
pub extern "system" fn Java_io_liger_LigerNative_sessionLogits(
    mut env: JNIEnv,
    _: JClass,
    s: jlong,
) -> jfloatArray {
    bridge(&mut env, std::ptr::null_mut(), |env| {
        let logits = read_out(|buf, cap, len| liger_session_logits(session(s), buf, cap, len))?;
        let out: JFloatArray = env.new_float_array(logits.len() as i32)?;
        env.set_float_array_region(&out, 0, &logits)?;
        Ok(out.into_raw())
    })
}

/// What the generation callback needs: the JNI env of the calling thread and the listener.
struct Listener<'a, 'e> {
    env: &'a mut JNIEnv<'e>,
    listener: &'a JObject<'e>,
}

/// The C callback: calls `listener.onToken(token, text)`; stops when it returns false or throws.
unsafe extern "C" fn on_token(
    user: *mut c_void,
    token: u32,
    text: *const c_char,
    len: usize,
) -> i32 {
    // SAFETY: `user` is the `Listener` that `generate` passes, alive for the call; `text`
    // holds `len` bytes (the C ABI's contract).
    let l = unsafe { &mut *(user as *mut Listener) };
    // After a listener threw, no other JNI call is allowed until the exception is handled.
    if l.env.exception_check().unwrap_or(true) {
        return 1;
    }
    // SAFETY: `text` holds `len` bytes for the duration of the call (the C ABI's contract).
    let bytes = unsafe { std::slice::from_raw_parts(text.cast::<u8>(), len) };
    let Ok(jtext) = l.env.new_string(String::from_utf8_lossy(bytes)) else {
        return 1;
    };
    let result = l.env.call_method(
        l.listener,
        "onToken",
        "(ILjava/lang/String;)Z",
        &[JValue::Int(token as i32), JValue::Object(&jtext)],
    );
    let _ = l.env.delete_local_ref(jtext);
    match result.and_then(|v| v.z()) {
        Ok(go_on) => i32::from(!go_on),
        Err(_) => 1, // a Java exception stays pending and is rethrown when the call returns
    }
}

#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "system" fn Java_io_liger_LigerNative_generate<'local>(
    mut env: JNIEnv<'local>,
    _: JClass<'local>,
    s: jlong,
    temperature: jfloat,
    top_k: jint,
    top_p: jfloat,
    min_p: jfloat,
    repeat_penalty: jfloat,
    repeat_last_n: jint,
    seed: jlong,
    max_tokens: jint,
    listener: JObject<'local>,
) -> jint {
    bridge(&mut env, 0, |env| {
        if listener.is_null() {
            return Err(Thrown(LIGER_ERROR_NULL, "listener is null".into()));
        }
        let options = LigerSamplerOptions {
            temperature,
            top_k: top_k.max(0) as u32,
            top_p,
            min_p,
            repeat_penalty,
            repeat_last_n: repeat_last_n.max(0) as u32,
            seed: seed as u64,
        };
        let mut l = Listener {
            env,
            listener: &listener,
        };
        let mut n = 0usize;
        let status = liger_session_generate(
            session(s),
            &options,
            max_tokens.max(0) as usize,
            Some(on_token),
            (&mut l as *mut Listener).cast(),
            &mut n,
        );
        check(status)?;
        Ok(n as jint)
    })
}

#[no_mangle]
pub extern "system" fn Java_io_liger_LigerNative_stateSave(
    mut env: JNIEnv,
    _: JClass,
    s: jlong,
) -> jbyteArray {
    bridge(&mut env, std::ptr::null_mut(), |env| {
        let bytes = read_out(|buf, cap, len| liger_state_save(session(s), buf, cap, len))?;
        Ok(env.byte_array_from_slice(&bytes)?.into_raw())
    })
}

#[no_mangle]
pub extern "system" fn Java_io_liger_LigerNative_stateLoad(
    mut env: JNIEnv,
    _: JClass,
    s: jlong,
    state: JByteArray,
) {
    bridge(&mut env, (), |env| {
        if state.is_null() {
            return Err(Thrown(LIGER_ERROR_NULL, "state is null".into()));
        }
        let bytes = env.convert_byte_array(&state)?;
        check(liger_state_load(session(s), bytes.as_ptr(), bytes.len()))
    })
}
