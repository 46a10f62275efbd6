package io.liger;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * The JNI bridge on the host JVM: a fixture's greedy tokens, state save / restore, and error
 * paths (bad handle, freed handle, bad file, bad token) as LigerException. Run by
 * tests/jni.rs: JniHostTest MODEL PROMPT_IDS GREEDY_IDS.
 */
public final class JniHostTest {
    private static int failures = 0;

    private static void check(boolean ok, String what) {
        if (!ok) {
            System.err.println("check failed: " + what);
            failures++;
        }
    }

    private static void expectThrows(Runnable r, String code, String what) {
        try {
            r.run();
            check(false, what + ": no exception");
        } catch (LigerException e) {
            check(e.getMessage().startsWith("[" + code + "]"), what + ": " + e.getMessage());
        }
    }

    private static int[] parse(String csv) {
        return Arrays.stream(csv.split(",")).mapToInt(Integer::parseInt).toArray();
    }

    private static int[] generate(long session, int max) {
        List<Integer> got = new ArrayList<>();
        int n = LigerNative.generate(session, 0f, 0, 1f, 0f, 1f, 0, 0, max, (token, text) -> {
            got.add(token);
            return true;
        });
        check(n == got.size(), "generate's count equals the tokens delivered");
        return got.stream().mapToInt(Integer::intValue).toArray();
    }

    public static void main(String[] args) {
        String path = args[0];
        int[] prompt = parse(args[1]);
        int[] greedy = parse(args[2]);
        check(!LigerNative.version().isEmpty(), "version");

        long model = LigerNative.modelLoad(path, 1, LigerNative.DECODE_HF_COMPAT,
                LigerNative.BACKEND_CPU, false);
        check(LigerNative.vocabSize(model) > 0, "vocab size");
        long session = LigerNative.sessionNew(model);
        LigerNative.sessionFeed(session, prompt);
        check(LigerNative.sessionPosition(session) == prompt.length, "position after the prompt");
        byte[] state = LigerNative.stateSave(session);
        int[] got = generate(session, greedy.length);
        check(Arrays.equals(got, greedy),
                "greedy tokens " + Arrays.toString(got) + " vs reference " + Arrays.toString(greedy));

        // Restore the state saved after the prompt: the same continuation again.
        LigerNative.stateLoad(session, state);
        check(Arrays.equals(generate(session, greedy.length), greedy), "greedy after restore");

        // The listener stops generation.
        LigerNative.stateLoad(session, state);
        int n = LigerNative.generate(session, 0f, 0, 1f, 0f, 1f, 0, 0, 10, (t, s) -> false);
        check(n == 1, "a listener returning false stops after one token (got " + n + ")");

        // A listener that throws: the exception reaches the caller.
        try {
            LigerNative.generate(session, 0f, 0, 1f, 0f, 1f, 0, 0, 10, (t, s) -> {
                throw new IllegalStateException("from the listener");
            });
            check(false, "listener exception was swallowed");
        } catch (IllegalStateException e) {
            check(e.getMessage().equals("from the listener"), "listener exception");
        }

        // Error paths: each a LigerException with the C API's code, never a crash.
        float[] logits = LigerNative.sessionLogits(session);
        check(logits.length == LigerNative.vocabSize(model), "logits length");
        expectThrows(() -> LigerNative.sessionFeed(session, new int[] {1 << 30}), "3",
                "token outside the vocabulary");
        expectThrows(() -> LigerNative.sessionFeed(0, prompt), "1", "null session");
        expectThrows(() -> LigerNative.sessionNew(12345), "2", "foreign model handle");
        expectThrows(() -> LigerNative.stateLoad(session, new byte[] {1, 2, 3}), "10", "bad state");
        expectThrows(() -> LigerNative.modelLoad("/nonexistent.gguf", 0, 0, 0, true), "5",
                "missing file");
        expectThrows(() -> LigerNative.modelLoad(path, 0, 0, 7, true), "3", "unknown backend");
        expectThrows(() -> LigerNative.tokenize(model, "hi", true), "8", "no tokenizer");
        expectThrows(() -> LigerNative.sessionSetGrammar(session, "yaml", "a: 1"), "3",
                "unknown grammar kind");
        expectThrows(() -> LigerNative.sessionSetGrammar(session, "regex", "[0-9]+"), "3",
                "a grammar on a model without a tokenizer");
        LigerNative.sessionSetGrammar(session, null, null);
        expectThrows(() -> LigerNative.chatApplyTemplate(model, new String[] {"user"},
                new String[] {"hi"}, null, true), "8", "a chat template without a tokenizer");
        expectThrows(() -> LigerNative.chatApplyTemplate(model, new String[] {"user"},
                new String[] {}, null, true), "3", "roles and contents of different lengths");
        check(LigerNative.stopIds(model).length >= 0, "stop ids");
        expectThrows(() -> LigerNative.sessionFeed(session, null), "1", "null ids");

        // Two sessions decoded together give what each gives alone.
        long a = LigerNative.sessionNew(model), b = LigerNative.sessionNew(model);
        LigerNative.sessionFeed(a, prompt);
        LigerNative.sessionFeed(b, new int[] {prompt[0]});
        long aloneA = LigerNative.sessionFork(a), aloneB = LigerNative.sessionFork(b);
        LigerNative.sessionsDecode(new long[] {a, b}, new int[] {greedy[0], greedy[1]});
        LigerNative.sessionFeed(aloneA, new int[] {greedy[0]});
        LigerNative.sessionFeed(aloneB, new int[] {greedy[1]});
        check(Arrays.equals(LigerNative.sessionLogits(a), LigerNative.sessionLogits(aloneA))
                && Arrays.equals(LigerNative.sessionLogits(b), LigerNative.sessionLogits(aloneB)),
            "sessions decoded together equal sessions alone");
        expectThrows(() -> LigerNative.sessionsDecode(new long[] {a, a}, new int[] {1, 2}), "3",
            "the same session twice");
        expectThrows(() -> LigerNative.sessionsDecode(new long[] {a, b}, new int[] {1}), "3",
            "fewer tokens than sessions");
        for (long h : new long[] {a, b, aloneA, aloneB}) LigerNative.sessionFree(h);
        LigerNative.sessionFree(session);
        expectThrows(() -> LigerNative.sessionPosition(session), "2", "freed session");
        expectThrows(() -> LigerNative.sessionFree(session), "2", "double free");
        LigerNative.modelFree(model);

        if (failures > 0) {
            System.err.println(failures + " check(s) failed");
            System.exit(1);
        }
        System.out.println("JniHostTest: all checks passed");
    }
}
