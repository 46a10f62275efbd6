package io.liger;

/**
 * The native methods of libliger_jni (android/src/lib.rs), a thin layer over the liger C API.
 * Handles are opaque longs that the library validates: 0, a freed or a foreign handle throws
 * {@link LigerException}, it never crashes. Use {@link LigerModel} / {@link LigerSession}
 * rather than this class.
 */
public final class LigerNative {
    static {
        System.loadLibrary("liger_jni");
    }

    private LigerNative() {}

    /** Decode semantics (docs/MATH.md §1): a rolling window, or the reference HF generate(). */
    public static final int DECODE_WINDOW = 0;
    public static final int DECODE_HF_COMPAT = 1;

    public static native String version();

    /**
     * Backends: the CPU (NEON), wgpu (Vulkan) in a build with the wgpu feature, CUDA in a
     * desktop build with the cuda feature.
     */
    public static final int BACKEND_CPU = 0;
    public static final int BACKEND_WGPU = 1;
    public static final int BACKEND_CUDA = 2;

    /**
     * Memory-maps a liger file; threads 0 = one per core. A GPU backend first checks the GPU's
     * logits against the CPU's and throws if they disagree (broken mobile drivers).
     */
    /** useMmap false: the file is read into memory and may change or go while loaded. */
    public static native long modelLoad(String path, int threads, int decodeMode, int backend,
            boolean useMmap);
    public static native void modelFree(long model);
    public static native int vocabSize(long model);
    public static native int[] tokenize(long model, String text, boolean addSpecial);
    public static native String detokenize(long model, int[] ids);

    public static native long sessionNew(long model);
    public static native void sessionFree(long session);
    public static native long sessionFork(long session);
    public static native void sessionReset(long session);
    public static native long sessionPosition(long session);
    public static native void sessionFeed(long session, int[] ids);
    /** Feeds tokens[i] to sessions[i], all in one batched step (distinct sessions, one model). */
    public static native void sessionsDecode(long[] sessions, int[] tokens);
    public static native void sessionFeedText(long session, String text, boolean addSpecial);
    /** The file's chat template over messages (roles[i], contents[i]) and tools (OpenAI's
     *  JSON array, or null). */
    public static native String chatApplyTemplate(long model, String[] roles, String[] contents,
            String toolsJson, boolean addGenerationPrompt);
    /** The ids that end an answer (EOS, the file's stop ids). */
    public static native int[] stopIds(long model);
    /** kind: "json_schema", "json_object", "lark", "regex", or null to lift the constraint. */
    public static native void sessionSetGrammar(long session, String kind, String grammar);

    public static native void sessionSetStopStrings(long session, String[] stops);

    public static native void sessionSetLogitBias(long session, int[] ids, float[] biases);
    public static native float[] sessionLogits(long session);

    /**
     * Generates up to maxTokens tokens (temperature <= 0: greedy), calling the listener with
     * each; stops at the model's stop token or when the listener returns false. Returns the
     * number of tokens generated.
     */
    public static native int generate(long session, float temperature, int topK, float topP,
            float minP, float repeatPenalty, int repeatLastN, long seed, int maxTokens,
            TokenListener listener);

    public static native byte[] stateSave(long session);
    public static native void stateLoad(long session, byte[] state);
}
