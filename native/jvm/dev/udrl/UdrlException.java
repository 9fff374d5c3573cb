package dev.udrl;

/** A failed udrl call: {@link #code()} is the C layer's udrl_status (udrl.h), the message says what to change. */
public final class UdrlException extends RuntimeException {
    /** udrl.h's status codes, for callers that branch on them. */
    public static final int ARGUMENT = 1, IO = 2, MANIFEST = 3, TASK = 4, LENGTH = 5, REWARD = 6, QUERY = 7,
            CONTEXT = 8, BUFFER = 9, RUNTIME = 10, MEMORY = 11;

    private static final long serialVersionUID = 1L;

    private final int code;

    public UdrlException(int code, String message) {
        super(message);
        this.code = code;
    }

    /** The udrl_status code of the failure. */
    public int code() {
        return code;
    }
}
