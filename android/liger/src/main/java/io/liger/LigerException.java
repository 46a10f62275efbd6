package io.liger;

/** An error from the liger library: "[code] message", code being a LIGER_ERROR_* of liger.h. */
public class LigerException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    public LigerException(String message) {
        super(message);
    }
}
