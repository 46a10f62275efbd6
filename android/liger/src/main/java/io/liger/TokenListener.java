package io.liger;

/** Receives generated tokens; text is what the token completes (may be empty mid-character). */
@FunctionalInterface
public interface TokenListener {
    /** Returns true to go on, false to stop generating. */
    boolean onToken(int token, String text);
}
