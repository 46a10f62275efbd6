package io.liger

import java.io.Closeable

/** What the sliding-window branch sees (docs/MATH.md §2). */
enum class DecodeMode(internal val code: Int) {
    /** A rolling window of the last 64 keys: token-by-token decoding equals a full forward. */
    WINDOW(LigerNative.DECODE_WINDOW),

    /** The reference HF generate(): the window holds only the tokens of the current call. */
    HF_COMPAT(LigerNative.DECODE_HF_COMPAT),
}

/** One message of a conversation: role "system", "user" or "assistant". */
data class ChatMessage(val role: String, val content: String)

/** Where sessions run. */
enum class Backend(internal val code: Int) {
    /** The CPU: NEON, with the dot-product instructions where the CPU has them. */
    CPU(LigerNative.BACKEND_CPU),

    /**
     * The GPU through Vulkan (a libliger_jni built with the `wgpu` feature), accepted only if
     * its logits match the CPU's on a probe at load. Its saved states load on the CPU too.
     */
    WGPU(LigerNative.BACKEND_WGPU),

    /**
     * An NVIDIA GPU through CUDA (a desktop libliger_jni built with the `cuda` feature; the
     * driver is loaded at run time), with the same self-test at load. Its states load anywhere.
     */
    CUDA(LigerNative.BACKEND_CUDA),
}

/**
 * A liger model file, memory-mapped by default: pages are read when the model touches them,
 * nothing is loaded up front — but the file must not be truncated or replaced while the model
 * is loaded (the process would fault). With [useMmap] false it is read into memory (its size)
 * and may then change or go, as when the app updates its model file. Runs on the CPU unless
 * asked otherwise. Thread-safe: any number of sessions on any
 * threads; closing the model while sessions live is allowed (they keep it).
 */
class LigerModel(
    path: String,
    threads: Int = 0,
    val mode: DecodeMode = DecodeMode.WINDOW,
    backend: Backend = Backend.CPU,
    useMmap: Boolean = true,
) : Closeable {
    private var handle: Long = LigerNative.modelLoad(path, threads, mode.code, backend.code, useMmap)

    private fun live(): Long = handle.also { check(it != 0L) { "LigerModel is closed" } }

    /** Logits per token. */
    val vocabSize: Int get() = LigerNative.vocabSize(live())

    fun tokenize(text: String, addSpecial: Boolean = true): IntArray =
        LigerNative.tokenize(live(), text, addSpecial)

    fun detokenize(ids: IntArray): String = LigerNative.detokenize(live(), ids)

    /**
     * A conversation rendered by the file's own chat template (ChatML where it has none);
     * with [addGenerationPrompt] it ends where the assistant's answer begins. Feed it with
     * `session.feed(text, addSpecial = false)`: the template writes its own BOS. [toolsJson]:
     * the tools offered, as OpenAI's JSON array (a message of role "tool" is a tool's result).
     */
    fun applyChatTemplate(
        messages: List<ChatMessage>,
        addGenerationPrompt: Boolean = true,
        toolsJson: String? = null,
    ): String =
        LigerNative.chatApplyTemplate(
            live(),
            messages.map { it.role }.toTypedArray(),
            messages.map { it.content }.toTypedArray(),
            toolsJson,
            addGenerationPrompt,
        )

    /** The ids that end an answer (the file's EOS and stop ids, e.g. `<|im_end|>`). */
    val stopIds: IntArray get() = LigerNative.stopIds(live())

    /** A new session (empty state); close it when done. */
    fun newSession(): LigerSession = LigerSession(LigerNative.sessionNew(live()))

    @Synchronized
    override fun close() {
        if (handle != 0L) {
            LigerNative.modelFree(handle)
            handle = 0L
        }
    }

    companion object {
        /** The native library's version. */
        val version: String get() = LigerNative.version()
    }
}
