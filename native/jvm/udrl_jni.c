/*
 * udrl_jni.c - the JNI half of dev.udrl.Udrl (native/jvm/dev/udrl/Udrl.java) over udrl.h.
 *
 * Strings cross as UTF-8 byte arrays (JNI's modified UTF-8 would mangle characters beyond U+FFFF).
 * Every failure throws dev.udrl.UdrlException carrying the udrl_status code and the C layer's message.
 */
#include <jni.h>
#include <stdlib.h>
#include <string.h>

#include "udrl.h"

#define TEXT_CAPACITY 16384

static void throw_udrl(JNIEnv *env, int code, const char *message) {
    jclass cls = (*env)->FindClass(env, "dev/udrl/UdrlException");
    jmethodID init;
    jstring text;
    jobject exc;
    if (!cls) return; /* NoClassDefFoundError is pending */
    init = (*env)->GetMethodID(env, cls, "<init>", "(ILjava/lang/String;)V");
    text = (*env)->NewStringUTF(env, message ? message : "");
    if (!init || !text) return;
    exc = (*env)->NewObject(env, cls, init, (jint)code, text);
    if (exc) (*env)->Throw(env, (jthrowable)exc);
}

/* A NUL-terminated copy of a Java byte[]; NULL (and an exception) on failure. */
static char *c_string(JNIEnv *env, jbyteArray bytes) {
    jsize n = (*env)->GetArrayLength(env, bytes);
    char *s = malloc((size_t)n + 1);
    if (!s) {
        throw_udrl(env, UDRL_E_MEMORY, "out of memory");
        return NULL;
    }
    (*env)->GetByteArrayRegion(env, bytes, 0, n, (jbyte *)s);
    s[n] = '\0';
    if (memchr(s, '\0', (size_t)n)) {
        free(s);
        throw_udrl(env, UDRL_E_QUERY, "a string contains a NUL character; only text is allowed");
        return NULL;
    }
    return s;
}

static jbyteArray java_bytes(JNIEnv *env, const char *s) {
    jsize n = (jsize)strlen(s);
    jbyteArray out = (*env)->NewByteArray(env, n);
    if (out) (*env)->SetByteArrayRegion(env, out, 0, n, (const jbyte *)s);
    return out;
}

JNIEXPORT jlong JNICALL Java_dev_udrl_Udrl_open(JNIEnv *env, jclass cls, jbyteArray path, jint threads) {
    static int initialised = 0;
    udrl_model_params params = udrl_model_default_params();
    udrl_model *model = NULL;
    udrl_status status;
    char err[512];
    char *p = c_string(env, path);
    (void)cls;
    if (!p) return 0;
    if (!initialised) {
        udrl_backend_init();
        initialised = 1;
    }
    params.n_threads = threads;
    status = udrl_model_open(p, &params, &model, err, sizeof err);
    free(p);
    if (status != UDRL_OK) {
        throw_udrl(env, (int)status, err);
        return 0;
    }
    return (jlong)(intptr_t)model;
}

typedef struct {
    JNIEnv *env;
    jobject listener;
    jclass owner;
    jmethodID piece;
} stream_state;

static int on_piece(const char *piece, void *user_data) {
    stream_state *st = user_data;
    jbyteArray bytes = java_bytes(st->env, piece);
    jboolean go;
    if (!bytes) return 1;
    go = (*st->env)->CallStaticBooleanMethod(st->env, st->owner, st->piece, st->listener, bytes);
    (*st->env)->DeleteLocalRef(st->env, bytes);
    return (*st->env)->ExceptionCheck(st->env) || !go; /* a listener that threw stops the stream */
}

JNIEXPORT jbyteArray JNICALL Java_dev_udrl_Udrl_generate(JNIEnv *env, jclass cls, jlong handle, jbyteArray query,
                                                         jbyteArray task, jint length, jint reward,
                                                         jobject listener) {
    udrl_model *model = (udrl_model *)(intptr_t)handle;
    udrl_command cmd;
    udrl_status status;
    stream_state st;
    char *q = c_string(env, query), *t;
    char *text;
    jbyteArray out = NULL;
    if (!q) return NULL;
    if (!(t = c_string(env, task))) {
        free(q);
        return NULL;
    }
    if (!(text = malloc(TEXT_CAPACITY))) {
        free(q);
        free(t);
        throw_udrl(env, UDRL_E_MEMORY, "out of memory");
        return NULL;
    }
    cmd.task = t;
    cmd.length = length;
    cmd.reward = reward;
    st.env = env;
    st.listener = listener;
    st.owner = cls;
    st.piece = listener ? (*env)->GetStaticMethodID(env, cls, "piece", "(Ldev/udrl/Udrl$PieceListener;[B)Z") : NULL;
    if (listener && !st.piece) goto done; /* NoSuchMethodError is pending */
    status = udrl_generate(model, q, &cmd, NULL, text, TEXT_CAPACITY, listener ? on_piece : NULL, &st);
    if ((*env)->ExceptionCheck(env)) goto done; /* the listener's own exception propagates */
    if (status != UDRL_OK)
        throw_udrl(env, (int)status, udrl_model_error(model));
    else
        out = java_bytes(env, text);
done:
    free(q);
    free(t);
    free(text);
    return out;
}

JNIEXPORT jobjectArray JNICALL Java_dev_udrl_Udrl_tasks(JNIEnv *env, jclass cls, jlong handle) {
    udrl_model *model = (udrl_model *)(intptr_t)handle;
    int i, n = udrl_task_count(model);
    jclass string = (*env)->FindClass(env, "java/lang/String");
    jobjectArray out;
    (void)cls;
    if (!string || !(out = (*env)->NewObjectArray(env, n, string, NULL))) return NULL;
    for (i = 0; i < n; i++) {
        jstring name = (*env)->NewStringUTF(env, udrl_task_name(model, i)); /* task names are ASCII */
        if (!name) return NULL;
        (*env)->SetObjectArrayElement(env, out, i, name);
        (*env)->DeleteLocalRef(env, name);
    }
    return out;
}

JNIEXPORT jbyteArray JNICALL Java_dev_udrl_Udrl_manifest(JNIEnv *env, jclass cls, jlong handle) {
    (void)cls;
    return java_bytes(env, udrl_manifest_json((udrl_model *)(intptr_t)handle));
}

JNIEXPORT void JNICALL Java_dev_udrl_Udrl_free(JNIEnv *env, jclass cls, jlong handle) {
    (void)env;
    (void)cls;
    udrl_model_free((udrl_model *)(intptr_t)handle);
}
