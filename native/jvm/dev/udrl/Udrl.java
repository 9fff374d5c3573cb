package dev.udrl;

import java.nio.charset.StandardCharsets;

/**
 * A udrl model over the C layer (native/udrl.h) for the JVM and Android.
 *
 * <pre>{@code
 * try (Udrl model = Udrl.load("udrl-mini-q8_0.gguf")) {
 *     String prompt = model.generate("poster for a jazz night", "image", 12, -1);
 *     model.stream("bakery logo", "tags", 5, -1, piece -> { System.out.print(piece); return true; });
 * }
 * }</pre>
 *
 * Greedy, with the length guard, the n-gram ban and query focus at the model's defaults: the same text
 * as the Python SDK for the same request. Methods are synchronized: one generation at a time per
 * model; open one model per thread for parallel work. The native library {@code libudrl_jni} is found
 * on {@code java.library.path}, or at the path in the system property {@code udrl.jni}.
 */
public final class Udrl implements AutoCloseable {
    static {
        String path = System.getProperty("udrl.jni");
        if (path != null) {
            System.load(path);
        } else {
            System.loadLibrary("udrl_jni");
        }
    }

    /** Receives each new piece of text as it decodes; return false to stop early. */
    @FunctionalInterface
    public interface PieceListener {
        boolean onPiece(String piece);
    }

    private long handle;

    private Udrl(long handle) {
        this.handle = handle;
    }

    /** Open a udrl GGUF with the C layer's default threads. */
    public static Udrl load(String path) {
        return load(path, 0);
    }

    /** Open a udrl GGUF; {@code threads} 0 is the C layer's default. Throws {@link UdrlException}. */
    public static Udrl load(String path, int threads) {
        if (path == null) {
            throw new UdrlException(UdrlException.ARGUMENT, "path is null: give the path of a udrl .gguf");
        }
        return new Udrl(open(utf8(path), threads));
    }

    /** Write a prompt: {@code length} 0 is the task's default, {@code reward} -1 the highest level. */
    public synchronized String generate(String query, String task, int length, int reward) {
        return text(generate(live(), utf8(query), utf8(task), length, reward, null));
    }

    /** The same text as {@link #generate}, handed to {@code listener} piece by piece; returns the whole. */
    public synchronized String stream(String query, String task, int length, int reward, PieceListener listener) {
        return text(generate(live(), utf8(query), utf8(task), length, reward, listener));
    }

    /** The tasks the model knows, in manifest order. */
    public synchronized String[] tasks() {
        return tasks(live());
    }

    /** The manifest JSON the model carries. */
    public synchronized String manifestJson() {
        return text(manifest(live()));
    }

    /** Release native memory; further calls throw {@link UdrlException}. */
    @Override
    public synchronized void close() {
        if (handle != 0) {
            free(handle);
            handle = 0;
        }
    }

    private long live() {
        if (handle == 0) {
            throw new UdrlException(UdrlException.ARGUMENT, "this model is closed");
        }
        return handle;
    }

    // Strings cross JNI as UTF-8 bytes: JNI's own "modified UTF-8" would mangle characters beyond U+FFFF.
    private static byte[] utf8(String s) {
        if (s == null) {
            throw new UdrlException(UdrlException.ARGUMENT, "a string argument is null");
        }
        return s.getBytes(StandardCharsets.UTF_8);
    }

    private static String text(byte[] bytes) {
        return new String(bytes, StandardCharsets.UTF_8);
    }

    // Called from native code with each piece.
    private static boolean piece(PieceListener listener, byte[] bytes) {
        return listener.onPiece(text(bytes));
    }

    private static native long open(byte[] path, int threads);

    private static native byte[] generate(long handle, byte[] query, byte[] task, int length, int reward,
                                          PieceListener listener);

    private static native String[] tasks(long handle);

    private static native byte[] manifest(long handle);

    private static native void free(long handle);
}
