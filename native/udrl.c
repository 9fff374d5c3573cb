/*
 * udrl.c - see udrl.h. Layers, from the bottom: typed lookups over cJSON (for the manifest), text
 * helpers with Python's whitespace rules (so word counts and query cleaning match the SDK), the
 * manifest, then prompt building and generation over llama.h.
 */
#include "udrl.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cJSON.h"
#include "gguf.h"
#include "llama.h"

/* ---------------------------------------------------------------- JSON, through cJSON -------- */

/* Typed lookups over cJSON that answer NULL / 0 for a missing or mistyped value, so that one check
   covers both. */
static const cJSON *j_get(const cJSON *obj, const char *key) {
    return cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
}

static const char *j_str(const cJSON *v) { return cJSON_IsString(v) ? v->valuestring : NULL; }

static int j_int(const cJSON *v, int *out) {
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || fabs(v->valuedouble) > 2147483647.0)
        return 0;
    *out = (int)v->valuedouble;
    return 1;
}

/* ---------------------------------------------------------------- text, as Python sees it ---- */

/* Length in bytes of a whitespace character at s (Python's str.split() set), or 0. */
static size_t space_at(const unsigned char *s, size_t avail) {
    if (avail == 0) return 0;
    if (s[0] == ' ' || (s[0] >= '\t' && s[0] <= '\r') || (s[0] >= 0x1C && s[0] <= 0x1F)) return 1;
    if (avail >= 2 && s[0] == 0xC2 && (s[1] == 0x85 || s[1] == 0xA0)) return 2;
    if (avail >= 3) {
        if (s[0] == 0xE1 && s[1] == 0x9A && s[2] == 0x80) return 3;                 /* U+1680 */
        if (s[0] == 0xE2 && s[1] == 0x80 && ((s[2] >= 0x80 && s[2] <= 0x8A) || s[2] == 0xA8 || s[2] == 0xA9 ||
                                             s[2] == 0xAF)) return 3;              /* U+2000-200A, 2028, 2029, 202F */
        if (s[0] == 0xE2 && s[1] == 0x81 && s[2] == 0x9F) return 3;                 /* U+205F */
        if (s[0] == 0xE3 && s[1] == 0x80 && s[2] == 0x80) return 3;                 /* U+3000 */
    }
    return 0;
}

/* The next word of text[0..len) from *pos, as Python's str.split() finds them: its start and
   length; 0 when there is none left. */
static int next_word(const char *text, size_t len, size_t *pos, size_t *start, size_t *wlen) {
    const unsigned char *s = (const unsigned char *)text;
    size_t i = *pos, w;
    while (i < len && (w = space_at(s + i, len - i)) > 0) i += w;
    *pos = i;
    if (i >= len) return 0;
    *start = i;
    while (i < len && !space_at(s + i, len - i)) i++;
    *wlen = i - *start;
    *pos = i;
    return 1;
}

static int count_words(const char *text, size_t len) {
    size_t pos = 0, start, wlen;
    int words = 0;
    while (next_word(text, len, &pos, &start, &wlen)) words++;
    return words;
}

/* rules.WORD_START: the bytes a token's text begins with when it starts a new word. */
static int is_word_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

/* Words joined by single spaces, like " ".join(text.split()). Caller frees. */
static char *normalize_spaces(const char *text) {
    size_t len = strlen(text), i = 0, o = 0;
    const unsigned char *s = (const unsigned char *)text;
    char *out = malloc(len + 1);
    int pending_space = 0;
    if (!out) return NULL;
    while (i < len) {
        size_t w = space_at(s + i, len - i);
        if (w) { pending_space = o > 0; i += w; continue; }
        if (pending_space) { out[o++] = ' '; pending_space = 0; }
        out[o++] = text[i++];
    }
    out[o] = '\0';
    return out;
}

/* Python's string.punctuation: the ASCII punctuation query focus strips from words. */
static int ascii_punct(unsigned char c) {
    return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126);
}

static char ascii_lower(char c) { return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c; }

static int is_ascii(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80) return 0;
    return 1;
}

/* The word's focus key range (manifest.focus_key): punctuation stripped from both ends. */
static void focus_trim(const char *w, size_t len, size_t *a, size_t *b) {
    *a = 0;
    *b = len;
    while (*a < *b && ascii_punct((unsigned char)w[*a])) (*a)++;
    while (*b > *a && ascii_punct((unsigned char)w[*b - 1])) (*b)--;
}

/* Whether the word w[0..len) has the focus key `key` (ASCII letters compared lowered). */
static int focus_key_is(const char *w, size_t len, const char *key) {
    size_t a, b, i, n = strlen(key);
    focus_trim(w, len, &a, &b);
    if (b - a != n) return 0;
    for (i = 0; i < n; i++)
        if (ascii_lower(w[a + i]) != key[i]) return 0;
    return 1;
}

/* Bytes at the end of text that start an unfinished UTF-8 character (0 if it ends cleanly). */
static size_t incomplete_utf8_tail(const char *text, size_t len) {
    size_t back;
    for (back = 1; back <= 3 && back <= len; back++) {
        unsigned char c = (unsigned char)text[len - back];
        if ((c & 0xC0) == 0x80) continue; /* continuation byte: keep looking for the lead */
        {
            size_t need = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
            return need > back ? back : 0;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- the model --------------- */

/* ---------------------------------------------------------------- word lists (spelling.py) -- */

/* A list of ASCII lowercase words in strcmp order, each once, with word and prefix lookups
   (spelling._Words). */
typedef struct {
    char **words;
    int n;
    char *text; /* owns the words' bytes */
} word_list;

static void free_word_list(word_list *w) {
    free(w->words);
    free(w->text);
    memset(w, 0, sizeof *w);
}

/* strcmp of word against s[0..len), s letters without a NUL: equal on len bytes, a longer word is greater. */
static int cmp_bounded(const char *word, const char *s, size_t len) {
    int c = strncmp(word, s, len);
    return c ? c : word[len] != '\0';
}

/* Whether s[0..len) (ASCII lowercase letters) is one of the words (whole) or the beginning of one. */
static int spells(const word_list *w, const char *s, size_t len, int whole) {
    int lo = 0, hi = w->n;
    while (lo < hi) { /* the first word >= s */
        int mid = lo + (hi - lo) / 2;
        if (cmp_bounded(w->words[mid], s, len) < 0) lo = mid + 1;
        else hi = mid;
    }
    if (lo == w->n) return 0;
    return whole ? cmp_bounded(w->words[lo], s, len) == 0 : strncmp(w->words[lo], s, len) == 0;
}

static int by_string(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* A word list from `n` words (copied), sorted and without repeats; 0 when out of memory. */
static int make_word_list(word_list *w, const char *const *words, const size_t *lens, int n) {
    size_t total = 0, at = 0;
    int i, k = 0;
    memset(w, 0, sizeof *w);
    for (i = 0; i < n; i++) total += lens[i] + 1;
    if (n == 0) return 1;
    if (!(w->text = malloc(total)) || !(w->words = malloc(sizeof *w->words * (size_t)n))) {
        free_word_list(w);
        return 0;
    }
    for (i = 0; i < n; i++) {
        w->words[i] = w->text + at;
        memcpy(w->text + at, words[i], lens[i]);
        w->text[at + lens[i]] = '\0';
        at += lens[i] + 1;
    }
    qsort(w->words, (size_t)n, sizeof *w->words, by_string);
    for (i = 0; i < n; i++)
        if (k == 0 || strcmp(w->words[k - 1], w->words[i])) w->words[k++] = w->words[i];
    w->n = k;
    return 1;
}

static int is_ascii_letter(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

/* Whether the bytes before position `at` of s end with an apostrophe (' or U+2019). */
static int apostrophe_before(const char *s, size_t at) {
    return (at >= 1 && s[at - 1] == '\'') || (at >= 3 && !memcmp(s + at - 3, "\xE2\x80\x99", 3));
}

/* A focus bonus is a number >= 0 below 1e30 (manifest.py's FOCUS_BIAS_LIMIT). */
static int valid_bonus(const cJSON *v) { return cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < 1e30; }

/* A task's focus bias (the manifest's focus.bias entry) is a bonus or a non-empty list of
   [length, bonus] points, lengths whole numbers in [lo, hi] strictly ascending. */
static int valid_focus_bias(const cJSON *b, int lo, int hi) {
    const cJSON *p;
    int last = lo - 1, length;
    if (cJSON_IsNumber(b)) return valid_bonus(b);
    if (!cJSON_IsArray(b) || !b->child) return 0;
    cJSON_ArrayForEach(p, b) {
        if (!cJSON_IsArray(p) || cJSON_GetArraySize(p) != 2 || !j_int(cJSON_GetArrayItem(p, 0), &length) ||
            length <= last || length > hi || !valid_bonus(cJSON_GetArrayItem(p, 1)))
            return 0;
        last = length;
    }
    return 1;
}

/* The bonus a (valid) focus bias gives an output of `length` words, as udrl/manifest.py's focus_at:
   the number, or the line through the two points around `length`, a point's own bonus at its
   length, the first's before it and the last's after it. NULL: 0 (off). */
static double focus_at(const cJSON *bias, int length) {
    const cJSON *p, *prev = NULL;
    if (!bias) return 0.0;
    if (cJSON_IsNumber(bias)) return bias->valuedouble;
    cJSON_ArrayForEach(p, bias) {
        int l1 = cJSON_GetArrayItem(p, 0)->valueint;
        double b1 = cJSON_GetArrayItem(p, 1)->valuedouble;
        if (length == l1 || (length < l1 && !prev)) return b1;
        if (length < l1) {
            int l0 = cJSON_GetArrayItem(prev, 0)->valueint;
            double b0 = cJSON_GetArrayItem(prev, 1)->valuedouble;
            return b0 + (b1 - b0) * (double)(length - l0) / (double)(l1 - l0);
        }
        prev = p;
    }
    return cJSON_GetArrayItem(prev, 1)->valuedouble;
}

typedef struct {
    char *name;
    char *token;
    int default_length; /* 0: none in the manifest */
    const cJSON *focus_bias; /* query focus default for the task (focus_at); NULL: off */
    int title_case;     /* its outputs are returned in Title Case (the manifest's case.title) */
} udrl_task;

struct udrl_model {
    struct llama_model *lm;
    struct llama_context *ctx;
    const struct llama_vocab *vocab;
    char *manifest_json;
    cJSON *manifest;
    udrl_task *tasks;
    int n_tasks;
    int length_min, length_max, reward_levels;
    const char **length_tokens; /* index: length - length_min */
    const char **reward_tokens;
    const char *sep_token, *eos_token, *template_str;
    const char *output_prefix; /* written before the output by the model; never handed to callers */
    size_t output_prefix_len;
    int focus_min_bytes;
    int focus_split_words;        /* focus also lifts (and finishes) words the tokenizer splits */
    int focus_push_function_words; /* focus also pushes the end words down by its bonus */
    const cJSON *focus_stopwords; /* array of strings, or NULL */
    const cJSON *end_stopwords;   /* array of strings the guard never ends an output on, or NULL */
    const cJSON *minor_words;     /* array of strings Title Case leaves lower inside a phrase, or NULL */
    int cond_length, cond_reward;
    llama_token *special_ids;
    const char **special_tokens;
    int n_special;
    llama_token eos_id;
    int n_ctx, n_vocab;
    unsigned char *word_start; /* per token: its piece starts a new word (rules.WORD_START) */
    unsigned char *end_word;   /* per token: a whole word of end_stopwords (rules.Vocabulary.end_word) */
    unsigned char *unfinished_end; /* per token: end_word or bare punctuation, "&" (rules.Vocabulary.unfinished_end) */
    char **word_key;           /* per word-start token: its ASCII focus key, else NULL (rules.Vocabulary.word_keys) */
    /* The whole-word rule (spelling.Spelling); spell_words.n == 0: off, and the tables below NULL. */
    word_list spell_words;     /* the manifest's spelling.words */
    word_list spell_endings;   /* its spelling.after_apostrophe */
    char **piece;              /* per token: its bytes, ASCII letters lowered, NUL-ended ("" for special tokens) */
    int *piece_len;
    int *lead_len;             /* per token: the length of the letter run it starts with */
    unsigned char *own_spelt;  /* per token: the runs after its lead are spelt by the manifest's lists */
    char error[512];
};

static udrl_status fail(udrl_model *m, udrl_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->error, sizeof m->error, fmt, ap);
    va_end(ap);
    return status;
}

/* Whether s[0..len) is spelt (spelling.Spelling._spelt): by the manifest's words, after an
   apostrophe also by its after_apostrophe words, and by the request's `extra` words (NULL: none). */
static int spelt(const udrl_model *m, const char *s, size_t len, int whole, int after_apostrophe, const word_list *extra) {
    return spells(&m->spell_words, s, len, whole) || (after_apostrophe && spells(&m->spell_endings, s, len, whole)) ||
           (extra && spells(extra, s, len, whole));
}

/* Whether the letter runs of token t after its lead are spelt: one that ends inside the token whole,
   one at its end the beginning of something spelt (spelling.Spelling.own_runs). */
static int own_runs_spelt(const udrl_model *m, int t, const word_list *extra) {
    const char *p = m->piece[t];
    int n = m->piece_len[t], i = m->lead_len[t], start;
    while (i < n) {
        if (!is_ascii_letter((unsigned char)p[i])) { i++; continue; }
        for (start = i; i < n && is_ascii_letter((unsigned char)p[i]); i++) {}
        if (!spelt(m, p + start, (size_t)(i - start), i < n, apostrophe_before(p, (size_t)start), extra)) return 0;
    }
    return 1;
}

static int is_special(const udrl_model *m, llama_token id);

/* Room for the whole-word rule's per-token tables (spelling.Spelling), when the manifest lists
   words; `keep_piece` fills them from the pieces udrl_model_open reads anyway. */
static udrl_status spelling_tables(udrl_model *m) {
    if (!m->spell_words.n) return UDRL_OK;
    if (!(m->piece = calloc((size_t)m->n_vocab, sizeof *m->piece)) ||
        !(m->piece_len = calloc((size_t)m->n_vocab, sizeof *m->piece_len)) ||
        !(m->lead_len = calloc((size_t)m->n_vocab, sizeof *m->lead_len)) || !(m->own_spelt = calloc((size_t)m->n_vocab, 1)))
        return fail(m, UDRL_E_MEMORY, "out of memory");
    return UDRL_OK;
}

/* Token t's piece (n bytes of buf; none when n < 0) lowered, and its lead; 0 when out of memory. */
static int keep_piece(udrl_model *m, int t, const char *buf, int32_t n) {
    int k;
    if (n < 0) n = 0;
    if (!(m->piece[t] = malloc((size_t)n + 1))) return 0;
    for (k = 0; k < n; k++) m->piece[t][k] = ascii_lower(buf[k]);
    m->piece[t][n] = '\0';
    m->piece_len[t] = n;
    for (k = 0; k < n && is_ascii_letter((unsigned char)buf[k]); k++) {}
    m->lead_len[t] = k;
    return 1;
}

const char *udrl_status_str(udrl_status status) {
    switch (status) {
        case UDRL_OK: return "ok";
        case UDRL_E_ARGUMENT: return "invalid argument";
        case UDRL_E_IO: return "cannot read the model file";
        case UDRL_E_MANIFEST: return "missing or invalid udrl manifest";
        case UDRL_E_TASK: return "unknown task";
        case UDRL_E_LENGTH: return "length outside the trained range";
        case UDRL_E_REWARD: return "reward level out of range";
        case UDRL_E_QUERY: return "invalid query";
        case UDRL_E_CONTEXT: return "prompt too long for the context";
        case UDRL_E_BUFFER: return "output buffer too small";
        case UDRL_E_RUNTIME: return "llama.cpp failed";
        case UDRL_E_MEMORY: return "out of memory";
    }
    return "unknown status";
}

void udrl_backend_init(void) { llama_backend_init(); }
void udrl_backend_free(void) { llama_backend_free(); }

udrl_model_params udrl_model_default_params(void) {
    udrl_model_params p;
    p.n_threads = 0;
    p.n_gpu_layers = 0;
    return p;
}

udrl_sampling udrl_default_sampling(void) {
    udrl_sampling s;
    s.temperature = 0.0f;
    s.top_k = 0;
    s.top_p = 1.0f;
    s.seed = 0;
    s.max_tokens = 0;
    s.length_guard = 1;
    s.no_repeat_ngram = 2;
    s.focus = -1.0f;
    s.whole_words = 1;
    return s;
}

static void quiet_log(enum ggml_log_level level, const char *text, void *user_data) {
    (void)user_data;
    if (level == GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

/* Whether key is one of the strings of a manifest word list (NULL: none). */
static int in_words(const cJSON *words, const char *key) {
    const cJSON *w;
    cJSON_ArrayForEach(w, words)
        if (!strcmp(j_str(w), key)) return 1;
    return 0;
}

/* Every item of a manifest array is a string. */
static int all_strings(const cJSON *array) {
    const cJSON *w;
    cJSON_ArrayForEach(w, array)
        if (!j_str(w)) return 0;
    return 1;
}

/* The manifest's spelling lists (Manifest.spelling_words: ASCII lowercase words one space apart, in
   ascending order, each once; after_apostrophe: ASCII lowercase words). */
static udrl_status parse_spelling(udrl_model *m, const char *words, const cJSON *after) {
    const char *endings[64];
    size_t lens[64], i, n = 1, len = strlen(words);
    const cJSON *item;
    int k = 0;
    const char *bad = "the manifest's spelling words must be ASCII lowercase words one space apart, in ascending "
                      "order, each once";
    if (len == 0) {
        if (cJSON_GetArraySize(after) > 0)
            return fail(m, UDRL_E_MANIFEST, "the manifest's spelling after_apostrophe needs spelling words");
        return UDRL_OK;
    }
    for (i = 0; i < len; i++) {
        if (words[i] == ' ') {
            if (i == 0 || i + 1 == len || words[i + 1] == ' ') return fail(m, UDRL_E_MANIFEST, "%s", bad);
            n++;
        } else if (words[i] < 'a' || words[i] > 'z') {
            return fail(m, UDRL_E_MANIFEST, "%s", bad);
        }
    }
    if (n > 0x7fffffff || !(m->spell_words.text = malloc(len + 1)) || !(m->spell_words.words = malloc(sizeof(char *) * n)))
        return fail(m, UDRL_E_MEMORY, "out of memory reading the manifest's spelling words");
    memcpy(m->spell_words.text, words, len + 1);
    m->spell_words.words[0] = m->spell_words.text;
    m->spell_words.n = 1;
    for (i = 0; i < len; i++) {
        if (m->spell_words.text[i] != ' ') continue;
        m->spell_words.text[i] = '\0';
        m->spell_words.words[m->spell_words.n++] = m->spell_words.text + i + 1;
        if (strcmp(m->spell_words.words[m->spell_words.n - 2], m->spell_words.words[m->spell_words.n - 1]) >= 0)
            return fail(m, UDRL_E_MANIFEST, "%s", bad);
    }
    cJSON_ArrayForEach(item, after) {
        const char *w = j_str(item);
        size_t j;
        if (k == 64 || !*w) return fail(m, UDRL_E_MANIFEST, "the manifest's spelling after_apostrophe must be at "
                                                            "most 64 ASCII lowercase words");
        for (j = 0; w[j]; j++)
            if (w[j] < 'a' || w[j] > 'z') return fail(m, UDRL_E_MANIFEST, "the manifest's spelling after_apostrophe "
                                                                          "must be ASCII lowercase words");
        endings[k] = w;
        lens[k++] = j;
    }
    if (!make_word_list(&m->spell_endings, endings, lens, k))
        return fail(m, UDRL_E_MEMORY, "out of memory reading the manifest's spelling words");
    return UDRL_OK;
}

/* Read the manifest JSON into the model's tables; every problem is UDRL_E_MANIFEST. */
static udrl_status parse_manifest(udrl_model *m) {
    /* j_get answers NULL below a missing or mistyped parent, so one check after these covers all. */
    const cJSON *root = (m->manifest = cJSON_Parse(m->manifest_json));
    const cJSON *tasks = j_get(root, "tasks"), *length = j_get(root, "length"), *model = j_get(root, "model");
    const cJSON *edges = j_get(j_get(root, "reward"), "edges"), *ct = j_get(root, "control_tokens");
    const cJSON *ct_task = j_get(ct, "task"), *ct_len = j_get(ct, "length"), *ct_rew = j_get(ct, "reward");
    const cJSON *ids = j_get(root, "token_ids"), *defaults = j_get(root, "default_length");
    const cJSON *cond = j_get(root, "conditioning"), *focus = j_get(root, "focus"), *guard = j_get(root, "length_guard");
    const cJSON *casing = j_get(root, "case"), *title = NULL, *spelling = j_get(root, "spelling");
    const cJSON *focus_bias = NULL, *item;
    int i, version;
    udrl_status status;
    if (!cJSON_IsObject(root)) return fail(m, UDRL_E_MANIFEST, "the udrl manifest is not valid JSON");
    if (!j_str(j_get(root, "format")) || strcmp(j_str(j_get(root, "format")), UDRL_MANIFEST_FORMAT))
        return fail(m, UDRL_E_MANIFEST, "metadata %s is not a udrl manifest", UDRL_METADATA_KEY);
    if (!j_int(j_get(root, "version"), &version) || version != UDRL_MANIFEST_VERSION)
        return fail(m, UDRL_E_MANIFEST, "manifest version is not %d: this library is too old or too new", UDRL_MANIFEST_VERSION);
    m->sep_token = j_str(j_get(root, "sep_token"));
    m->eos_token = j_str(j_get(root, "eos_token"));
    m->template_str = j_str(j_get(root, "template"));
    m->output_prefix = j_str(j_get(root, "output_prefix")); /* absent in older manifests */
    if (!m->output_prefix) m->output_prefix = "";
    m->output_prefix_len = strlen(m->output_prefix);
    /* focus absent (older manifests): query focus off */
    m->focus_min_bytes = 3;
    m->focus_split_words = 0;
    m->focus_push_function_words = 0;
    m->focus_stopwords = NULL;
    if (focus) {
        const cJSON *stop = j_get(focus, "stopwords"), *split = j_get(focus, "split_words");
        const cJSON *push = j_get(focus, "push_function_words");
        focus_bias = j_get(focus, "bias"); /* per task; empty: off for all */
        if (!cJSON_IsObject(focus) || !cJSON_IsObject(focus_bias) ||
            !j_int(j_get(focus, "min_bytes"), &m->focus_min_bytes) || m->focus_min_bytes < 1 || !cJSON_IsArray(stop))
            return fail(m, UDRL_E_MANIFEST, "the manifest's focus field is malformed");
        if (!all_strings(stop)) return fail(m, UDRL_E_MANIFEST, "the manifest's focus stopwords must be strings");
        /* absent (manifests before it): one-token words only, the rule their bonus was chosen under */
        if (split && !cJSON_IsBool(split))
            return fail(m, UDRL_E_MANIFEST, "the manifest's focus split_words must be true or false");
        m->focus_split_words = cJSON_IsTrue(split);
        if (push && !cJSON_IsBool(push))
            return fail(m, UDRL_E_MANIFEST, "the manifest's focus push_function_words must be true or false");
        m->focus_push_function_words = cJSON_IsTrue(push);
        m->focus_stopwords = stop;
    }
    /* length_guard absent (older manifests): no end words */
    m->end_stopwords = NULL;
    if (guard) {
        const cJSON *stop = j_get(guard, "end_stopwords");
        if (!cJSON_IsObject(guard) || !cJSON_IsArray(stop))
            return fail(m, UDRL_E_MANIFEST, "the manifest's length_guard field is malformed");
        if (!all_strings(stop)) return fail(m, UDRL_E_MANIFEST, "the manifest's length_guard end_stopwords must be strings");
        m->end_stopwords = stop;
    }
    /* case absent (older manifests): every task as written */
    m->minor_words = NULL;
    if (casing) {
        title = j_get(casing, "title");
        m->minor_words = j_get(casing, "minor_words");
        if (!cJSON_IsObject(casing) || !cJSON_IsArray(title) || !cJSON_IsArray(m->minor_words) ||
            !all_strings(title) || !all_strings(m->minor_words))
            return fail(m, UDRL_E_MANIFEST, "the manifest's case field is malformed (title and minor_words: arrays of strings)");
    }
    /* spelling absent (older manifests): the whole-word rule off */
    if (spelling) {
        const cJSON *words = j_get(spelling, "words"), *after = j_get(spelling, "after_apostrophe");
        if (!cJSON_IsObject(spelling) || !j_str(words) || !cJSON_IsArray(after) || !all_strings(after))
            return fail(m, UDRL_E_MANIFEST, "the manifest's spelling field is malformed (words: a string, "
                                            "after_apostrophe: an array of strings)");
        if ((status = parse_spelling(m, j_str(words), after)) != UDRL_OK) return status;
    }
    if (!cJSON_IsArray(tasks) || cJSON_GetArraySize(tasks) == 0 || !cJSON_IsArray(edges) || !ct_task || !ct_len ||
        !ct_rew || !cJSON_IsObject(ids) || !cJSON_IsArray(cond) || !m->sep_token || !m->eos_token ||
        !m->template_str || !j_int(j_get(length, "min"), &m->length_min) || !j_int(j_get(length, "max"), &m->length_max) ||
        !j_int(j_get(model, "n_ctx"), &m->n_ctx))
        return fail(m, UDRL_E_MANIFEST, "the udrl manifest lacks required fields");
    if (m->length_min < 1 || m->length_max < m->length_min)
        return fail(m, UDRL_E_MANIFEST, "the manifest's length range [%d, %d] must satisfy 1 <= min <= max",
                    m->length_min, m->length_max);
    m->reward_levels = cJSON_GetArraySize(edges) + 1;
    m->n_tasks = cJSON_GetArraySize(tasks);
    m->n_special = cJSON_GetArraySize(ids);
    m->tasks = calloc((size_t)m->n_tasks, sizeof *m->tasks);
    m->length_tokens = calloc((size_t)(m->length_max - m->length_min + 1), sizeof *m->length_tokens);
    m->reward_tokens = calloc((size_t)m->reward_levels, sizeof *m->reward_tokens);
    m->special_ids = calloc((size_t)m->n_special + 1, sizeof *m->special_ids);
    m->special_tokens = calloc((size_t)m->n_special + 1, sizeof *m->special_tokens);
    if (!m->tasks || !m->length_tokens || !m->reward_tokens || !m->special_ids || !m->special_tokens)
        return fail(m, UDRL_E_MEMORY, "out of memory reading the manifest");
    i = 0;
    cJSON_ArrayForEach(item, tasks) {
        const char *name = j_str(item);
        if (!name || !j_str(j_get(ct_task, name)))
            return fail(m, UDRL_E_MANIFEST, "the manifest has no control token for task %d", i);
        m->tasks[i].name = (char *)name;
        m->tasks[i].token = (char *)j_str(j_get(ct_task, name));
        if (!j_int(j_get(defaults, name), &m->tasks[i].default_length)) m->tasks[i].default_length = 0;
        m->tasks[i].focus_bias = NULL;
        if (focus_bias && focus_bias->child) {
            const cJSON *b = j_get(focus_bias, name);
            if (!valid_focus_bias(b, m->length_min, m->length_max))
                return fail(m, UDRL_E_MANIFEST, "the manifest's focus bias for task %s is missing or invalid (a number "
                                                ">= 0, or [length, bonus] points with lengths from %d to %d ascending)",
                            name, m->length_min, m->length_max);
            m->tasks[i].focus_bias = b;
        }
        m->tasks[i].title_case = title && in_words(title, name);
        i++;
    }
    for (i = m->length_min; i <= m->length_max; i++) {
        char key[16];
        snprintf(key, sizeof key, "%d", i);
        if (!(m->length_tokens[i - m->length_min] = j_str(j_get(ct_len, key))))
            return fail(m, UDRL_E_MANIFEST, "the manifest has no control token for length %d", i);
    }
    for (i = 0; i < m->reward_levels; i++) {
        char key[16];
        snprintf(key, sizeof key, "%d", i);
        if (!(m->reward_tokens[i] = j_str(j_get(ct_rew, key))))
            return fail(m, UDRL_E_MANIFEST, "the manifest has no control token for reward %d", i);
    }
    cJSON_ArrayForEach(item, cond) {
        const char *c = j_str(item);
        if (c && !strcmp(c, "length")) m->cond_length = 1;
        if (c && !strcmp(c, "reward")) m->cond_reward = 1;
    }
    i = 0;
    cJSON_ArrayForEach(item, ids) {
        int id;
        if (!j_int(item, &id)) return fail(m, UDRL_E_MANIFEST, "the manifest's token_ids must be integers");
        m->special_ids[i] = id;
        m->special_tokens[i++] = item->string;
    }
    {
        const cJSON *eos = j_get(ids, m->eos_token);
        int eos_id;
        if (!j_int(eos, &eos_id)) return fail(m, UDRL_E_MANIFEST, "the manifest has no id for %s", m->eos_token);
        m->eos_id = eos_id;
    }
    return UDRL_OK;
}

/* An integer GGUF key within [lo, hi], or -1. */
static int64_t header_int(const struct gguf_context *g, const char *key, int64_t lo, int64_t hi) {
    int64_t id = gguf_find_key(g, key), v;
    if (id < 0) return -1;
    switch (gguf_get_kv_type(g, id)) {
    case GGUF_TYPE_UINT32: v = gguf_get_val_u32(g, id); break;
    case GGUF_TYPE_INT32: v = gguf_get_val_i32(g, id); break;
    case GGUF_TYPE_UINT64: v = (int64_t)(gguf_get_val_u64(g, id) & 0x7fffffffffffffffULL); break;
    default: return -1;
    }
    return v >= lo && v <= hi ? v : -1;
}

/* Reads the manifest from the GGUF header and refuses what llama.cpp would abort on or run wrongly,
   before it sees the file: the same checks as the SDK's gguf_file.check_gpt2_header (hyperparameters
   in range and equal to the manifest's context, a finite layer-norm epsilon, every control token
   typed CONTROL at its manifest id). */
static udrl_status read_checked_header(udrl_model *m, const char *path) {
    struct gguf_init_params gp = {true, NULL};
    struct gguf_context *g = gguf_init_from_file(path, gp);
    udrl_status status = UDRL_OK;
    int64_t key, n_embd, n_head, n_ctx, types;
    static const char *const ints[] = {"gpt2.block_count", "gpt2.attention.head_count", "gpt2.embedding_length",
                                       "gpt2.context_length", "gpt2.feed_forward_length"};
    static const int64_t his[] = {512, 256, 1 << 16, 1 << 20, 1 << 18};
    size_t i;
    if (!g) return fail(m, UDRL_E_IO, "%s is not a valid GGUF model (truncated or corrupted): export it again", path);
    key = gguf_find_key(g, UDRL_METADATA_KEY);
    if (key < 0 || gguf_get_kv_type(g, key) != GGUF_TYPE_STRING) {
        status = fail(m, UDRL_E_MANIFEST, "%s carries no udrl manifest (no %s metadata): export it with `udrl export`",
                      path, UDRL_METADATA_KEY);
        goto done;
    }
    if (!(m->manifest_json = malloc(strlen(gguf_get_val_str(g, key)) + 1))) {
        status = fail(m, UDRL_E_MEMORY, "out of memory");
        goto done;
    }
    strcpy(m->manifest_json, gguf_get_val_str(g, key));
    if ((status = parse_manifest(m)) != UDRL_OK) goto done;
    for (i = 0; i < sizeof ints / sizeof *ints; i++) {
        if (header_int(g, ints[i], i == 3 ? 2 : 1, his[i]) < 0) {
            status = fail(m, UDRL_E_MANIFEST, "%s: GGUF key %s is missing or out of range (1 to %lld)", path, ints[i],
                          (long long)his[i]);
            goto done;
        }
    }
    for (i = 0; i < 3; i++) {  /* n_layer, n_head, n_embd: as the manifest says, where it says */
        static const char *const fields[] = {"n_layer", "n_head", "n_embd"};  /* ints[0..2] */
        int want;
        if (j_int(j_get(j_get(m->manifest, "model"), fields[i]), &want) && header_int(g, ints[i], 1, his[i]) != want) {
            status = fail(m, UDRL_E_MANIFEST, "%s: GGUF key %s disagrees with the manifest's %s = %d: the file is "
                          "corrupted", path, ints[i], fields[i], want);
            goto done;
        }
    }
    n_head = header_int(g, ints[1], 1, his[1]);
    n_embd = header_int(g, ints[2], 1, his[2]);
    n_ctx = header_int(g, ints[3], 2, his[3]);
    if (n_embd % n_head || n_ctx != m->n_ctx) {
        status = fail(m, UDRL_E_MANIFEST, "%s: GGUF hyperparameters disagree with its manifest (context %lld vs %d, "
                      "width %lld over %lld heads): the file is corrupted", path, (long long)n_ctx, m->n_ctx,
                      (long long)n_embd, (long long)n_head);
        goto done;
    }
    key = gguf_find_key(g, "gpt2.attention.layer_norm_epsilon");
    if (key < 0 || gguf_get_kv_type(g, key) != GGUF_TYPE_FLOAT32 || !isfinite(gguf_get_val_f32(g, key)) ||
        !(gguf_get_val_f32(g, key) > 0.0f && gguf_get_val_f32(g, key) <= 0.1f)) {
        status = fail(m, UDRL_E_MANIFEST, "%s: gpt2.attention.layer_norm_epsilon must be a number in (0, 0.1]", path);
        goto done;
    }
    types = gguf_find_key(g, "tokenizer.ggml.token_type");
    if (types < 0 || gguf_get_kv_type(g, types) != GGUF_TYPE_ARRAY || gguf_get_arr_type(g, types) != GGUF_TYPE_INT32) {
        status = fail(m, UDRL_E_MANIFEST, "%s has no token types (tokenizer.ggml.token_type)", path);
        goto done;
    }
    for (i = 0; i < (size_t)m->n_special; i++) {
        const int32_t *t = gguf_get_arr_data(g, types);
        if (m->special_ids[i] < 0 || (size_t)m->special_ids[i] >= gguf_get_arr_n(g, types) ||
            t[m->special_ids[i]] != LLAMA_TOKEN_TYPE_CONTROL) {
            status = fail(m, UDRL_E_MANIFEST, "%s: control token %s (id %d) is not typed CONTROL: llama.cpp would "
                          "split it into text; export the file again", path, m->special_tokens[i], m->special_ids[i]);
            goto done;
        }
    }
done:
    gguf_free(g);
    return status;
}

udrl_status udrl_model_open(const char *path, const udrl_model_params *params, udrl_model **out, char *err,
                            size_t err_size) {
    udrl_model *m;
    udrl_model_params p = params ? *params : udrl_model_default_params();
    struct llama_model_params mp;
    struct llama_context_params cp;
    udrl_status status;
    int i;
    FILE *probe;
    if (err && err_size) err[0] = '\0';
    if (!path || !out) {
        if (err) snprintf(err, err_size, "udrl_model_open needs a path and a place for the model");
        return UDRL_E_ARGUMENT;
    }
    *out = NULL;
    m = calloc(1, sizeof *m);
    if (!m) return UDRL_E_MEMORY;
    llama_log_set(quiet_log, NULL);
    probe = fopen(path, "rb");
    if (!probe) {
        status = fail(m, UDRL_E_IO, "cannot open %s", path);
        goto error;
    }
    fclose(probe);
    if (p.n_threads < 0 || p.n_threads > 512) {
        status = fail(m, UDRL_E_ARGUMENT, "n_threads must be 0 (automatic) or 1 to 512, got %d", p.n_threads);
        goto error;
    }
    if ((status = read_checked_header(m, path)) != UDRL_OK) goto error;
    mp = llama_model_default_params();
    mp.n_gpu_layers = p.n_gpu_layers;
    /* llama.cpp's AMX matrix kernel segfaults on the first decode (llama.cpp issue 20824): where the
       CPU has AMX, keep the weights in plain CPU buffers. The SDK applies the same rule
       (backend_llama.cpu_repacks_for_amx). */
    if (strstr(llama_print_system_info(), "AMX_INT8 = 1")) mp.use_extra_bufts = false;
    m->lm = llama_model_load_from_file(path, mp);
    if (!m->lm) {
        status = fail(m, UDRL_E_IO, "llama.cpp cannot load %s: not a valid GGUF model", path);
        goto error;
    }
    m->vocab = llama_model_get_vocab(m->lm);
    m->n_vocab = llama_vocab_n_tokens(m->vocab);
    if (!(m->word_start = calloc((size_t)m->n_vocab, 1)) || !(m->end_word = calloc((size_t)m->n_vocab, 1)) ||
        !(m->unfinished_end = calloc((size_t)m->n_vocab, 1)) || !(m->word_key = calloc((size_t)m->n_vocab, sizeof *m->word_key))) {
        status = fail(m, UDRL_E_MEMORY, "out of memory");
        goto error;
    }
    if ((status = spelling_tables(m)) != UDRL_OK) goto error;
    for (i = 0; i < m->n_vocab; i++) {
        char buf[256], key[257];
        int32_t n_piece = is_special(m, i) ? 0 : llama_token_to_piece(m->vocab, i, buf, (int32_t)sizeof buf, 0, false);
        int k, more = 0;
        size_t w = 0, e, a, b;
        if (m->piece && !keep_piece(m, i, buf, n_piece)) { status = fail(m, UDRL_E_MEMORY, "out of memory"); goto error; }
        for (k = 1; k < n_piece; k++) more |= !is_word_space(buf[k]);
        m->word_start[i] = (unsigned char)(n_piece > 1 && is_word_space(buf[0]) && more);
        if (!m->word_start[i]) continue;
        while (w < (size_t)n_piece && is_word_space(buf[w])) w++;
        for (e = (size_t)n_piece; e > w && is_word_space(buf[e - 1]); e--) {}
        focus_trim(buf + w, e - w, &a, &b);
        for (k = 0; k < (int)(b - a); k++) key[k] = ascii_lower(buf[w + a + (size_t)k]);
        key[b - a] = '\0';
        if (m->end_stopwords) m->end_word[i] = (unsigned char)in_words(m->end_stopwords, key);
        m->unfinished_end[i] = (unsigned char)(m->end_word[i] || b == a); /* b == a: nothing but ASCII punctuation */
        if (b > a && is_ascii(key)) {
            if (!(m->word_key[i] = malloc(b - a + 1))) { status = fail(m, UDRL_E_MEMORY, "out of memory"); goto error; }
            memcpy(m->word_key[i], key, b - a + 1);
        }
    }
    for (i = 0; m->piece && i < m->n_vocab; i++) m->own_spelt[i] = (unsigned char)own_runs_spelt(m, i, NULL);
    cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)m->n_ctx;
    cp.n_batch = (uint32_t)m->n_ctx;
    cp.n_threads = cp.n_threads_batch = p.n_threads > 0 ? p.n_threads : 4;
    /* On, as in the SDK's context (sdk/backend_llama.py): the same attention kernels give the same
       logits, so a near-tie between two tokens is broken the same way and both layers write the
       same text. */
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_ENABLED;
    m->ctx = llama_init_from_model(m->lm, cp);
    if (!m->ctx) { status = fail(m, UDRL_E_RUNTIME, "llama.cpp could not create a context"); goto error; }
    *out = m;
    return UDRL_OK;
error:
    if (err) snprintf(err, err_size, "%s", m->error);
    udrl_model_free(m);
    return status;
}

void udrl_model_free(udrl_model *m) {
    int i;
    if (!m) return;
    if (m->ctx) llama_free(m->ctx);
    if (m->lm) llama_model_free(m->lm);
    cJSON_Delete(m->manifest);
    free(m->manifest_json);
    free(m->tasks);
    free((void *)m->length_tokens);
    free((void *)m->reward_tokens);
    free(m->special_ids);
    free((void *)m->special_tokens);
    free(m->word_start);
    free(m->end_word);
    free(m->unfinished_end);
    for (i = 0; m->word_key && i < m->n_vocab; i++) free(m->word_key[i]);
    free(m->word_key);
    for (i = 0; m->piece && i < m->n_vocab; i++) free(m->piece[i]);
    free(m->piece);
    free(m->piece_len);
    free(m->lead_len);
    free(m->own_spelt);
    free_word_list(&m->spell_words);
    free_word_list(&m->spell_endings);
    free(m);
}

const char *udrl_model_error(const udrl_model *m) { return m ? m->error : ""; }
const char *udrl_manifest_json(const udrl_model *m) { return m->manifest_json; }
int udrl_task_count(const udrl_model *m) { return m->n_tasks; }
const char *udrl_task_name(const udrl_model *m, int i) { return i >= 0 && i < m->n_tasks ? m->tasks[i].name : NULL; }
int udrl_length_min(const udrl_model *m) { return m->length_min; }
int udrl_length_max(const udrl_model *m) { return m->length_max; }
int udrl_reward_levels(const udrl_model *m) { return m->reward_levels; }

static const udrl_task *find_task(const udrl_model *m, const char *name) {
    int i;
    for (i = 0; name && i < m->n_tasks; i++)
        if (!strcmp(m->tasks[i].name, name)) return &m->tasks[i];
    return NULL;
}

int udrl_default_length(const udrl_model *m, const char *task) {
    const udrl_task *t = find_task(m, task);
    if (!t) return 0;
    return t->default_length ? t->default_length : (m->length_min + m->length_max) / 2;
}

/* ---------------------------------------------------------------- commands and prompts ----- */

udrl_status udrl_check_command(udrl_model *m, const udrl_command *cmd, udrl_command *resolved) {
    udrl_command r;
    if (!m || !cmd) return UDRL_E_ARGUMENT;
    r = *cmd;
    if (!find_task(m, r.task)) {
        char list[256] = "";
        int i;
        for (i = 0; i < m->n_tasks; i++) {
            strncat(list, i ? ", " : "", sizeof list - strlen(list) - 1);
            strncat(list, m->tasks[i].name, sizeof list - strlen(list) - 1);
        }
        return fail(m, UDRL_E_TASK, "unknown task '%s'; this model knows: %s", r.task ? r.task : "(null)", list);
    }
    if (r.length == 0) r.length = udrl_default_length(m, r.task);
    if (r.length < m->length_min || r.length > m->length_max)
        return fail(m, UDRL_E_LENGTH, "length %d is outside the range this model was trained on: %d to %d words",
                    r.length, m->length_min, m->length_max);
    if (r.reward == -1) r.reward = m->reward_levels - 1;
    if (r.reward < 0 || r.reward >= m->reward_levels)
        return fail(m, UDRL_E_REWARD, "reward must be an integer level from 0 (lowest) to %d, got %d",
                    m->reward_levels - 1, r.reward);
    if (resolved) *resolved = r;
    return UDRL_OK;
}

/* The prompt text (template filled in), or NULL with the model's error set. Caller frees. */
static char *render_prompt(udrl_model *m, const char *query, const udrl_command *cmd, udrl_status *status) {
    char *q, *out;
    size_t cap, o = 0;
    const char *t;
    int i;
    *status = UDRL_OK;
    if (!query) { *status = fail(m, UDRL_E_ARGUMENT, "query is NULL"); return NULL; }
    q = normalize_spaces(query);
    if (!q) { *status = fail(m, UDRL_E_MEMORY, "out of memory"); return NULL; }
    if (!*q) {
        free(q);
        *status = fail(m, UDRL_E_QUERY, "query is empty: give the design request the prompt is for");
        return NULL;
    }
    for (i = 0; i < m->n_special; i++) {
        if (strstr(q, m->special_tokens[i])) {
            *status = fail(m, UDRL_E_QUERY, "query contains the reserved control token '%s'; remove it", m->special_tokens[i]);
            free(q);
            return NULL;
        }
    }
    cap = strlen(m->template_str) + strlen(q) + 256;
    out = malloc(cap);
    if (!out) { free(q); *status = fail(m, UDRL_E_MEMORY, "out of memory"); return NULL; }
    for (t = m->template_str; *t;) {
        const char *piece = NULL;
        size_t len;
        if (t[0] == '{' && t[1] == '{') { piece = "{"; t += 2; }
        else if (t[0] == '}' && t[1] == '}') { piece = "}"; t += 2; }
        else if (!strncmp(t, "{task}", 6)) { piece = find_task(m, cmd->task)->token; t += 6; }
        else if (!strncmp(t, "{length}", 8)) { piece = m->cond_length ? m->length_tokens[cmd->length - m->length_min] : ""; t += 8; }
        else if (!strncmp(t, "{reward}", 8)) { piece = m->cond_reward ? m->reward_tokens[cmd->reward] : ""; t += 8; }
        else if (!strncmp(t, "{query}", 7)) { piece = q; t += 7; }
        else if (!strncmp(t, "{sep}", 5)) { piece = m->sep_token; t += 5; }
        len = piece ? strlen(piece) : 1;
        if (o + len + 1 > cap) {
            char *grown = realloc(out, cap = 2 * cap + len);
            if (!grown) { free(out); free(q); *status = fail(m, UDRL_E_MEMORY, "out of memory"); return NULL; }
            out = grown;
        }
        if (piece) memcpy(out + o, piece, len);
        else out[o] = *t++;
        o += len;
    }
    out[o] = '\0';
    free(q);
    return out;
}

/* Tokenize a prompt into a fresh array (*n tokens). Caller frees. */
static llama_token *tokenize(udrl_model *m, const char *text, int32_t *n, udrl_status *status) {
    int32_t len = (int32_t)strlen(text), count;
    llama_token *ids;
    count = -llama_tokenize(m->vocab, text, len, NULL, 0, false, true);
    ids = malloc(sizeof *ids * (size_t)(count > 0 ? count : 1));
    if (!ids) { *status = fail(m, UDRL_E_MEMORY, "out of memory"); return NULL; }
    *n = llama_tokenize(m->vocab, text, len, ids, count, false, true);
    if (*n < 0) { free(ids); *status = fail(m, UDRL_E_RUNTIME, "llama.cpp could not tokenize the prompt"); return NULL; }
    *status = UDRL_OK;
    return ids;
}

static llama_token *prompt_ids(udrl_model *m, const char *query, const udrl_command *cmd, udrl_command *resolved,
                               int32_t *n, udrl_status *status) {
    char *text;
    llama_token *ids;
    if ((*status = udrl_check_command(m, cmd, resolved)) != UDRL_OK) return NULL;
    if (!(text = render_prompt(m, query, resolved, status))) return NULL;
    ids = tokenize(m, text, n, status);
    free(text);
    return ids;
}

udrl_status udrl_prompt_tokens(udrl_model *m, const char *query, const udrl_command *cmd, int32_t *tokens,
                               int32_t capacity, int32_t *n_tokens) {
    udrl_command r;
    udrl_status status;
    int32_t n = 0;
    llama_token *ids;
    if (!m || !cmd || !n_tokens) return UDRL_E_ARGUMENT;
    if (!(ids = prompt_ids(m, query, cmd, &r, &n, &status))) return status;
    *n_tokens = n;
    if (n > capacity) { free(ids); return fail(m, UDRL_E_BUFFER, "prompt has %d tokens, buffer holds %d", n, capacity); }
    memcpy(tokens, ids, sizeof *ids * (size_t)n);
    free(ids);
    return UDRL_OK;
}

/* ---------------------------------------------------------------- generation -------------- */

static uint64_t next_random(uint64_t *state) { /* splitmix64 */
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

typedef struct {
    float logit;
    llama_token id;
} candidate;

static int by_logit_desc(const void *a, const void *b) {
    float x = ((const candidate *)a)->logit, y = ((const candidate *)b)->logit;
    return (x < y) - (x > y);
}

/* ---------------------------------------------------------------- query focus (as the SDK) -- */

typedef struct {
    char *key;              /* the content word, as focus keys compare */
    llama_token *ids[2];    /* the tokens of " word" and " Word", each spelling once */
    int n_ids[2];
    int n_spellings;
} focus_word;

static void free_focus(focus_word *words, int n) {
    int i, k;
    for (i = 0; words && i < n; i++) {
        free(words[i].key);
        for (k = 0; k < words[i].n_spellings; k++) free(words[i].ids[k]);
    }
    free(words);
}

/* The query's content words and the tokens of their spellings (rules.focus_tokens): one-token
   spellings, and split ones too where the manifest's focus split_words is true; NULL with *n = 0
   when none. */
static focus_word *focus_words(udrl_model *m, const char *query, int *n, udrl_status *status) {
    size_t len = strlen(query), pos = 0, start, wlen, a, b;
    focus_word *words = NULL;
    int i, k, most = count_words(query, len);
    *n = 0;
    *status = UDRL_OK;
    if (most == 0) return NULL;
    if (!(words = calloc((size_t)most, sizeof *words))) {
        *status = fail(m, UDRL_E_MEMORY, "out of memory");
        return NULL;
    }
    while (next_word(query, len, &pos, &start, &wlen)) {
        char *key, *spelling;
        int dup = 0, word_split;
        focus_trim(query + start, wlen, &a, &b);
        if (b - a < (size_t)m->focus_min_bytes) continue;
        if (!(key = malloc(b - a + 1)) || !(spelling = malloc(b - a + 2))) {
            free(key);
            free_focus(words, *n);
            *status = fail(m, UDRL_E_MEMORY, "out of memory");
            return NULL;
        }
        for (k = 0; k < (int)(b - a); k++) key[k] = ascii_lower(query[start + a + (size_t)k]);
        key[b - a] = '\0';
        for (i = 0; i < *n; i++) dup |= !strcmp(words[i].key, key);
        if (dup || in_words(m->focus_stopwords, key)) {
            free(key);
            free(spelling);
            continue;
        }
        words[*n].key = key;
        /* Never a split end stopword ("within"): the guard's end ban sees whole-word tokens only. */
        word_split = m->focus_split_words && !in_words(m->end_stopwords, key);
        spelling[0] = ' ';
        memcpy(spelling + 1, key, b - a + 1);
        for (k = 0; k < 2; k++) {
            int32_t nt = 0;
            llama_token *ids;
            if (k == 1 && spelling[1] >= 'a' && spelling[1] <= 'z') spelling[1] = (char)(spelling[1] - 'a' + 'A');
            if (!(ids = tokenize(m, spelling, &nt, status))) {
                free(spelling);
                free_focus(words, *n + 1);
                return NULL;
            }
            /* A split spelling only where the manifest says so (rules.focus_tokens). */
            if ((nt == 1 || (nt > 1 && word_split)) && !(words[*n].n_spellings == 1 && words[*n].n_ids[0] == nt &&
                             !memcmp(words[*n].ids[0], ids, sizeof *ids * (size_t)nt))) {
                words[*n].ids[words[*n].n_spellings] = ids;
                words[*n].n_ids[words[*n].n_spellings++] = nt;
            } else {
                free(ids);
            }
        }
        free(spelling);
        (*n)++;
    }
    return words;
}

/* ---------------------------------------------------------------- whole words (as the SDK) -- */

/* One request's side of the whole-word rule (spelling.RequestSpelling). */
typedef struct {
    word_list extra;          /* the query's letter runs (lowered) that the manifest's words lack */
    unsigned char *own_spelt; /* per token: its own runs spelt, with those */
    unsigned char *allowed;   /* scratch space for the rule */
} request_spelling;

static void free_request_spelling(request_spelling *r) {
    free_word_list(&r->extra);
    free(r->own_spelt);
    free(r->allowed);
    memset(r, 0, sizeof *r);
}

/* The tables of `request_spelling` for `query`; all empty when the manifest lists no words. */
static udrl_status make_request_spelling(udrl_model *m, const char *query, request_spelling *r) {
    size_t len = strlen(query), i = 0, start, n = 0;
    const char **runs = NULL;
    size_t *lens = NULL;
    char *lower = NULL;
    int t, ok;
    memset(r, 0, sizeof *r);
    if (!m->spell_words.n) return UDRL_OK;
    if (!(lower = malloc(len + 1)) || !(runs = malloc(sizeof *runs * (len / 2 + 1))) ||
        !(lens = malloc(sizeof *lens * (len / 2 + 1)))) {
        free(lower);
        free((void *)runs);
        return fail(m, UDRL_E_MEMORY, "out of memory");
    }
    for (i = 0; i < len; i++) lower[i] = ascii_lower(query[i]);
    for (i = 0; i < len;) {
        if (!is_ascii_letter((unsigned char)lower[i])) { i++; continue; }
        for (start = i; i < len && is_ascii_letter((unsigned char)lower[i]); i++) {}
        if (!spells(&m->spell_words, lower + start, i - start, 1)) {
            runs[n] = lower + start;
            lens[n++] = i - start;
        }
    }
    ok = make_word_list(&r->extra, runs, lens, (int)n) && (r->own_spelt = malloc((size_t)m->n_vocab)) &&
         (r->allowed = malloc((size_t)m->n_vocab));
    free(lower);
    free((void *)runs);
    free(lens);
    if (!ok) {
        free_request_spelling(r);
        return fail(m, UDRL_E_MEMORY, "out of memory");
    }
    for (t = 0; t < m->n_vocab; t++)
        r->own_spelt[t] = m->own_spelt[t] || (r->extra.n && own_runs_spelt(m, t, &r->extra));
    return UDRL_OK;
}

/* ---------------------------------------------------------------- the decoding rules ------- */

/* Scratch ints per focus word: whether it is wanted, and up to two tokens picked (one per spelling). */
#define FOCUS_SCRATCH 3

/* What the rules see at one step (rules.DecodeState): the command's length and the options, the
   query's focus words, the generated ids and their text without the output prefix. */
typedef struct {
    const udrl_model *m;
    int length, length_guard, no_repeat_ngram;
    float focus_bias;
    const focus_word *focus;
    int n_focus;
    int *wanted; /* FOCUS_SCRATCH * n_focus slots of scratch space (focus_started) */
    const llama_token *ids;
    int32_t n_ids;
    const char *text;
    size_t len;
    const word_list *extra;         /* the request's letter runs the manifest's words lack (whole-word rule) */
    const unsigned char *own_spelt; /* per token, with those: spelling.RequestSpelling.own_spelt */
    unsigned char *allowed;         /* n_vocab bytes of scratch space; NULL: the whole-word rule off */
} rule_state;

/* Words written while the length guard still holds the end back, else -1 (DecodeState.guarded_words). */
static int guarded_words(const rule_state *s) {
    int words;
    if (!s->length_guard) return -1;
    words = count_words(s->text, s->len);
    return words < s->length ? words : -1;
}

/* The tokens query focus acts on (rules._focus_started), each once, into the scratch space after
   the first n_focus slots; returns how many. With next = 0, the first token of each spelling of each
   content word the text does not contain yet; with next = 1, for each such spelling whose first
   tokens the generated ids end in (the longest such start), the token that comes next in it. */
static int focus_started(const rule_state *s, int next) {
    size_t pos = 0, start, wlen;
    int i, j, k, l, n = 0, *picked = s->wanted + s->n_focus;
    for (i = 0; i < s->n_focus; i++) s->wanted[i] = 1;
    while (next_word(s->text, s->len, &pos, &start, &wlen))
        for (i = 0; i < s->n_focus; i++)
            if (s->wanted[i] && focus_key_is(s->text + start, wlen, s->focus[i].key)) s->wanted[i] = 0;
    for (i = 0; i < s->n_focus; i++) {
        if (!s->wanted[i]) continue;
        for (k = 0; k < s->focus[i].n_spellings; k++) {
            const llama_token *spelling = s->focus[i].ids[k];
            int token = -1, most = s->focus[i].n_ids[k] - 1;
            if (!next) token = spelling[0];
            else
                for (l = most < s->n_ids ? most : (int)s->n_ids; l > 0 && token < 0; l--)
                    if (!memcmp(s->ids + s->n_ids - l, spelling, sizeof *spelling * (size_t)l)) token = spelling[l];
            if (token < 0) continue;
            for (j = 0; j < n && picked[j] != token; j++) {}
            if (j == n) picked[n++] = token;
        }
    }
    return n;
}

/* 1. The bonus for the first token of each content word the text does not contain yet, once per token. */
static void query_focus(const rule_state *s, float *logits) {
    int j, n;
    if (s->focus_bias <= 0 || !s->n_focus) return;
    n = focus_started(s, 0);
    for (j = 0; j < n; j++) logits[s->wanted[s->n_focus + j]] += s->focus_bias;
}

/* 2. Where the manifest says so and focus is on, the end words down by the focus bonus. */
static void push_function_words(const rule_state *s, float *logits) {
    int i;
    if (!s->m->focus_push_function_words || s->focus_bias <= 0) return;
    for (i = 0; i < s->m->n_vocab; i++)
        if (s->m->end_word[i]) logits[i] -= s->focus_bias;
}

/* 3. No token that would complete an n-gram already among the generated ids. */
static void ban_repeated_ngram(const rule_state *s, float *logits) {
    int32_t i, k, n = s->no_repeat_ngram;
    if (n < 1 || s->n_ids < n - 1) return;
    for (i = 0; i + n <= s->n_ids; i++) {
        for (k = 0; k < n - 1 && s->ids[i + k] == s->ids[s->n_ids - n + 1 + k]; k++) {}
        if (k == n - 1) logits[s->ids[i + n - 1]] = -INFINITY;
    }
}

/* Forbid every word-start token whose whole word has the focus key of word[0..wlen). */
static void ban_word_key(const udrl_model *m, float *logits, const char *word, size_t wlen) {
    size_t a, b;
    int i, k;
    char key[257];
    focus_trim(word, wlen, &a, &b);
    if (b == a || b - a >= sizeof key) return;
    for (k = 0; k < (int)(b - a); k++) key[k] = ascii_lower(word[a + (size_t)k]);
    key[b - a] = '\0';
    for (i = 0; i < m->n_vocab; i++)
        if (m->word_key[i] && !strcmp(m->word_key[i], key)) logits[i] = -INFINITY;
}

/* 4. With the n-gram ban on, the next word may not be the text's last word again ("poster poster"). */
static void ban_word_again(const rule_state *s, float *logits) {
    size_t pos = 0, start, wlen, last = 0, last_len = 0;
    int found = 0;
    if (!s->no_repeat_ngram) return;
    while (next_word(s->text, s->len, &pos, &start, &wlen)) { last = start; last_len = wlen; found = 1; }
    if (found) ban_word_key(s->m, logits, s->text + last, last_len);
}

/* 5. With the n-gram ban on, after a list separator the next item may not be a one-word item
   already written ("label, homemade, label"). */
static void ban_item_again(const rule_state *s, float *logits) {
    const char *text = s->text;
    size_t end = s->len, item = 0, i, pos, start, wlen;
    if (!s->no_repeat_ngram) return;
    while (end && strchr(" \t\n\r\v\f", text[end - 1])) end--;
    if (!end || (text[end - 1] != ',' && text[end - 1] != ';' && text[end - 1] != ':')) return;
    end--;
    for (i = 0; i <= end; i++) {
        size_t one = 0, one_len = 0;
        int words = 0;
        if (i < end && text[i] != ',' && text[i] != ';' && text[i] != ':') continue;
        pos = item;
        while (next_word(text, i, &pos, &start, &wlen)) { one = start; one_len = wlen; words++; }
        item = i + 1;
        if (words == 1) ban_word_key(s->m, logits, text + one, one_len);
    }
}

/* 6. With the n-gram ban on, no content word a third time ("book cover for a book card for an book"):
   a word whose key is longer than one byte, no focus or end stopword, written twice already. */
static void ban_word_thrice(const rule_state *s, float *logits) {
    size_t pos = 0, start, wlen, a, b;
    if (!s->no_repeat_ngram) return;
    while (next_word(s->text, s->len, &pos, &start, &wlen)) {
        size_t again = 0, from, flen;
        int k, seen = 0;
        char key[257];
        focus_trim(s->text + start, wlen, &a, &b);
        if (b - a < 2 || b - a >= sizeof key) continue;
        for (k = 0; k < (int)(b - a); k++) key[k] = ascii_lower(s->text[start + a + (size_t)k]);
        key[b - a] = '\0';
        if (in_words(s->m->focus_stopwords, key) || in_words(s->m->end_stopwords, key)) continue;
        while (next_word(s->text, start + wlen, &again, &from, &flen)) seen += focus_key_is(s->text + from, flen, key);
        if (seen == 2) ban_word_key(s->m, logits, s->text + start, wlen); /* once, at its second use */
    }
}

/* 7. When the next word is the guard's last, it may not be an end stopword ("at the") or bare
   punctuation ("Reading Club &"), unless nothing else is left. */
static void ban_unfinished_end(const rule_state *s, float *logits) {
    const udrl_model *m = s->m;
    int i, any = 0;
    if (guarded_words(s) != s->length - 1) return;
    for (i = 0; i < m->n_vocab && !any; i++) any = !m->unfinished_end[i] && i != m->eos_id && logits[i] > -INFINITY;
    if (!any) return;
    for (i = 0; i < m->n_vocab; i++)
        if (m->unfinished_end[i]) logits[i] = -INFINITY;
}

/* 8. Where the generated ids end in the first tokens of a content word focus lifts, only the tokens
   that carry such a word on, unless every one of them is forbidden: a word focus starts is a word it
   finishes ("lan" for "lanterns" otherwise). */
static void finish_focus_word(const rule_state *s, float *logits) {
    const int *picked = s->wanted + s->n_focus;
    int i, j, n, any = 0;
    if (s->focus_bias <= 0 || !s->n_focus) return;
    n = focus_started(s, 1);
    for (j = 0; j < n && !any; j++) any = logits[picked[j]] > -INFINITY;
    if (!any) return;
    for (i = 0; i < s->m->n_vocab; i++) {
        for (j = 0; j < n && picked[j] != i; j++) {}
        if (j == n) logits[i] = -INFINITY;
    }
}

/* 9. Only tokens that keep every word of the output spelt (spelling.py: RequestSpelling.allowed),
   unless none of them is left. Out of memory for a long open run, the rule steps aside. */
static void whole_words(const rule_state *s, float *logits) {
    const udrl_model *m = s->m;
    size_t olen = 0, at, k;
    int apostrophe, ends, i, c, any = 0, letter_ok[26];
    char small[512], *run;
    if (!m->spell_words.n || !s->allowed) return;
    while (olen < s->len && is_ascii_letter((unsigned char)s->text[s->len - 1 - olen])) olen++;
    at = s->len - olen;
    apostrophe = apostrophe_before(s->text, at);
    run = olen + 257 <= sizeof small ? small : malloc(olen + 257); /* the open run, then a lead */
    if (!run) return;
    for (k = 0; k < olen; k++) run[k] = ascii_lower(s->text[at + k]);
    ends = olen == 0 || spelt(m, run, olen, 1, apostrophe, s->extra);
    for (c = 0; c < 26; c++) { /* a lead can only go on from a letter that can */
        run[olen] = (char)('a' + c);
        letter_ok[c] = spelt(m, run, olen + 1, 0, apostrophe, s->extra);
    }
    for (i = 0; i < m->n_vocab; i++) {
        int ok, lead = m->lead_len[i];
        if (i == m->eos_id) ok = ends;
        else if (!m->piece_len[i] || !s->own_spelt[i]) ok = 0;
        else if (!lead) ok = ends;
        else if (!letter_ok[m->piece[i][0] - 'a']) ok = 0;
        else {
            memcpy(run + olen, m->piece[i], (size_t)lead);
            ok = spelt(m, run, olen + (size_t)lead, lead < m->piece_len[i], apostrophe, s->extra);
        }
        s->allowed[i] = (unsigned char)ok;
        any |= ok && logits[i] > -INFINITY;
    }
    if (run != small) free(run);
    if (!any) return;
    for (i = 0; i < m->n_vocab; i++)
        if (!s->allowed[i]) logits[i] = -INFINITY;
}

/* 10. Where the model would end before the requested count, only tokens that start a new word:
   otherwise the best token after a forbidden end is glued-on junk. */
static void word_instead_of_end(const rule_state *s, float *logits) {
    const udrl_model *m = s->m;
    int i, best = 0, any = 0;
    if (guarded_words(s) < 0) return;
    for (i = 1; i < m->n_vocab; i++)
        if (logits[i] > logits[best]) best = i;
    if (best != m->eos_id) return;
    for (i = 0; i < m->n_vocab && !any; i++) any = m->word_start[i] && logits[i] > -INFINITY;
    if (!any) return;
    for (i = 0; i < m->n_vocab; i++)
        if (!m->word_start[i]) logits[i] = -INFINITY;
}

/* 11. No end of sequence before the requested number of words. */
static void ban_early_end(const rule_state *s, float *logits) {
    if (guarded_words(s) >= 0) logits[s->m->eos_id] = -INFINITY;
}

/* rules.RULES, in the same order. */
static void (*const RULES[])(const rule_state *, float *) = {
    query_focus, push_function_words, ban_repeated_ngram, ban_word_again, ban_item_again, ban_word_thrice,
    ban_unfinished_end, finish_focus_word, whole_words, word_instead_of_end, ban_early_end,
};

static void apply_rules(const rule_state *s, float *logits) {
    size_t i;
    for (i = 0; i < sizeof RULES / sizeof RULES[0]; i++) RULES[i](s, logits);
}

static llama_token sample(const float *logits, int n_vocab, const udrl_sampling *s, uint64_t *rng, candidate *work) {
    int i, n = n_vocab;
    double total = 0, r, acc = 0;
    if (s->temperature <= 0) {
        llama_token best = 0;
        for (i = 1; i < n_vocab; i++)
            if (logits[i] > logits[best]) best = i;
        return best;
    }
    for (i = 0; i < n_vocab; i++) { work[i].logit = logits[i] / s->temperature; work[i].id = i; }
    qsort(work, (size_t)n_vocab, sizeof *work, by_logit_desc);
    if (s->top_k > 0 && s->top_k < n) n = s->top_k;
    for (i = 0; i < n; i++) total += exp((double)(work[i].logit - work[0].logit));
    if (s->top_p < 1.0f) {
        double kept = 0;
        int keep = n;
        for (i = 0; i < n; i++) {
            kept += exp((double)(work[i].logit - work[0].logit)) / total;
            if (kept >= s->top_p) { keep = i + 1; break; }
        }
        n = keep;
        total = 0;
        for (i = 0; i < n; i++) total += exp((double)(work[i].logit - work[0].logit));
    }
    r = (double)(next_random(rng) >> 11) / 9007199254740992.0 * total;
    for (i = 0; i < n; i++) {
        acc += exp((double)(work[i].logit - work[0].logit));
        if (r < acc) return work[i].id;
    }
    return work[n - 1].id;
}

static int is_special(const udrl_model *m, llama_token id) {
    int i;
    for (i = 0; i < m->n_special; i++)
        if (m->special_ids[i] == id) return 1;
    return 0;
}

/* Append the text of one token (special tokens render as nothing). */
static int append_piece(udrl_model *m, llama_token id, char **text, size_t *len, size_t *cap) {
    char buf[256];
    int32_t n;
    if (is_special(m, id)) return 1;
    n = llama_token_to_piece(m->vocab, id, buf, (int32_t)sizeof buf, 0, false);
    if (n < 0) return 0;
    if (*len + (size_t)n + 1 > *cap) {
        char *grown = realloc(*text, *cap = 2 * *cap + (size_t)n + 1);
        if (!grown) return 0;
        *text = grown;
    }
    memcpy(*text + *len, buf, (size_t)n);
    *len += (size_t)n;
    (*text)[*len] = '\0';
    return 1;
}

static udrl_status decode(udrl_model *m, llama_token *ids, int32_t n) {
    struct llama_batch batch = llama_batch_get_one(ids, n);
    if (llama_decode(m->ctx, batch) != 0) return fail(m, UDRL_E_RUNTIME, "llama_decode failed");
    return UDRL_OK;
}

/* The end of text[start..end) without trailing whitespace and, with `separators`, the list
   separators (",;:") among it, as generate.py's _without_dangling_end. */
static size_t trim_end(const char *text, size_t start, size_t end, int separators) {
    while (end > start) {
        size_t k, w = 0;
        if (separators && (text[end - 1] == ',' || text[end - 1] == ';' || text[end - 1] == ':')) {
            end--;
            continue;
        }
        for (k = 1; k <= 3 && k <= end - start; k++)
            if (space_at((const unsigned char *)text + end - k, k) == k) { w = k; break; }
        if (!w) break;
        end -= w;
    }
    return end;
}

/* Whether the word w[0..len) is one of the manifest's minor words (compared by focus key). */
static int is_minor_word(const udrl_model *m, const char *w, size_t len) {
    const cJSON *item;
    if (!m->minor_words) return 0;
    cJSON_ArrayForEach(item, m->minor_words)
        if (focus_key_is(w, len, j_str(item))) return 1;
    return 0;
}

/* Title Case text[start..end) in place, as udrl/casing.py's title_case: the head of a word (its first
   byte after ASCII punctuation) is upper-cased when it is an ASCII lowercase letter and the word has
   no ASCII uppercase letter, unless the word is minor and neither starts the text nor follows a word
   ending in ".!?:". Only ASCII bytes change, so lengths and UTF-8 stay as they were. */
static void title_case(const udrl_model *m, char *text, size_t start, size_t end) {
    size_t pos = start, ws, wlen, i, k;
    int starts_phrase = 1, upper;
    while (next_word(text, end, &pos, &ws, &wlen)) {
        char *w = text + ws;
        for (upper = 0, k = 0; k < wlen; k++) upper |= (w[k] >= 'A' && w[k] <= 'Z');
        for (i = 0; i < wlen && ascii_punct((unsigned char)w[i]); i++) {}
        if (i < wlen && w[i] >= 'a' && w[i] <= 'z' && !upper && (starts_phrase || !is_minor_word(m, w, wlen)))
            w[i] = (char)(w[i] - 'a' + 'A');
        starts_phrase = w[wlen - 1] == '.' || w[wlen - 1] == '!' || w[wlen - 1] == '?' || w[wlen - 1] == ':';
    }
}

/* Where the text ready for the stream ends for a title-case task, which waits for all of a word
   (whether it is minor depends on it): `ready` when the text ends on whitespace, else before its
   last word and the separators and whitespace before that, as generate.py's _Decoder.piece. */
static size_t before_open_word(const char *text, size_t from, size_t ready, size_t len) {
    size_t pos = from, ws = ready, wlen, last = ready;
    if (trim_end(text, from, len, 0) < len) return ready;
    while (next_word(text, ready, &pos, &ws, &wlen)) last = ws;
    return last < ready ? trim_end(text, from, last, 1) : ready;
}

/* Hand text[from..to) to the callback; returns its stop request. */
static int emit(udrl_piece_callback callback, void *user_data, char *text, size_t from, size_t to) {
    char saved = text[to];
    int stop;
    text[to] = '\0';
    stop = callback(text + from, user_data);
    text[to] = saved;
    return stop;
}

/* Where the text the rules see starts: past the manifest's output prefix (as the SDK's _Decoder.text). */
static size_t rule_text_start(const udrl_model *m, const char *text, size_t len) {
    size_t n = m->output_prefix_len;
    return n && len >= n && !memcmp(text, m->output_prefix, n) ? n : 0;
}

/* Where the pieces handed to the callback start: past the manifest's output prefix and any
   whitespace before the first word, as in the SDK (whose result is the text stripped). */
static size_t stream_start(const udrl_model *m, const char *text, size_t len) {
    size_t i = 0, w, n = m->output_prefix_len;
    if (n && len >= n && !memcmp(text, m->output_prefix, n)) i = n;
    while (i < len && (w = space_at((const unsigned char *)text + i, len - i)) > 0) i += w;
    return i;
}

udrl_status udrl_generate(udrl_model *m, const char *query, const udrl_command *cmd, const udrl_sampling *sampling,
                          char *out, size_t out_size, udrl_piece_callback callback, void *user_data) {
    udrl_sampling s = sampling ? *sampling : udrl_default_sampling();
    udrl_command r;
    udrl_status status;
    llama_token *prompt = NULL, *ids = NULL, token;
    candidate *work = NULL;
    focus_word *focus = NULL;
    request_spelling spelling;
    int *wanted = NULL, n_focus = 0, started = 0, cut = 0, cased;
    float focus_bias;
    char *text = NULL;
    size_t len = 0, cap = 256, emitted = 0, ready, start, end;
    int32_t n_prompt = 0, budget, generated = 0, room;
    uint64_t rng;
    rule_state rules;
    if (!m || !cmd || !out || out_size == 0) return UDRL_E_ARGUMENT;
    out[0] = '\0';
    m->error[0] = '\0';
    if (s.temperature < 0 || s.top_k < 0 || !(s.top_p > 0 && s.top_p <= 1) || s.max_tokens < 0 ||
        s.no_repeat_ngram < 0 || s.focus != s.focus || s.focus > 1e30f)
        return fail(m, UDRL_E_ARGUMENT, "sampling options out of range (temperature >= 0, top_k >= 0, "
                                        "0 < top_p <= 1, no_repeat_ngram >= 0, focus finite)");
    memset(&spelling, 0, sizeof spelling);
    if (!(prompt = prompt_ids(m, query, cmd, &r, &n_prompt, &status))) return status;
    focus_bias = s.focus < 0 ? (float)focus_at(find_task(m, r.task)->focus_bias, r.length) : s.focus;
    cased = find_task(m, r.task)->title_case;
    room = m->n_ctx - n_prompt;
    if (room < 2) {
        free(prompt);
        return fail(m, UDRL_E_CONTEXT, "query too long: the prompt is %d tokens and this model's context holds %d",
                    n_prompt, m->n_ctx);
    }
    budget = s.max_tokens > 0 ? s.max_tokens : 3 * r.length + 8;
    if (budget > room) budget = room;
    text = malloc(cap);
    ids = malloc(sizeof *ids * (size_t)budget);
    work = s.temperature > 0 ? malloc(sizeof *work * (size_t)m->n_vocab) : NULL;
    if (!text || !ids || (s.temperature > 0 && !work)) { status = fail(m, UDRL_E_MEMORY, "out of memory"); goto done; }
    if (focus_bias > 0) {
        focus = focus_words(m, query, &n_focus, &status);
        if (status != UDRL_OK) goto done;
        if (n_focus && !(wanted = malloc(sizeof *wanted * FOCUS_SCRATCH * (size_t)n_focus))) {
            status = fail(m, UDRL_E_MEMORY, "out of memory");
            goto done;
        }
    }
    if (s.whole_words && (status = make_request_spelling(m, query, &spelling)) != UDRL_OK) goto done;
    text[0] = '\0';
    rules.m = m;
    rules.extra = &spelling.extra;
    rules.own_spelt = spelling.own_spelt;
    rules.allowed = spelling.allowed;
    rules.length = r.length;
    rules.length_guard = s.length_guard;
    rules.no_repeat_ngram = s.no_repeat_ngram;
    rules.focus_bias = focus_bias;
    rules.focus = focus;
    rules.n_focus = n_focus;
    rules.wanted = wanted;
    rng = s.seed;
    llama_memory_clear(llama_get_memory(m->ctx), true);
    if ((status = decode(m, prompt, n_prompt)) != UDRL_OK) goto done;
    while (generated < budget) {
        float *logits = llama_get_logits_ith(m->ctx, -1);
        size_t before = len;
        rules.ids = ids;
        rules.n_ids = generated;
        rules.text = text + rule_text_start(m, text, len);
        rules.len = len - rule_text_start(m, text, len);
        apply_rules(&rules, logits);
        token = sample(logits, m->n_vocab, &s, &rng, work);
        if (token == m->eos_id) break;
        if (!append_piece(m, token, &text, &len, &cap)) { status = fail(m, UDRL_E_MEMORY, "out of memory"); goto done; }
        if (s.length_guard && count_words(text, len) > r.length) { /* this token starts one word too many */
            len = before;
            text[len] = '\0';
            cut = 1;
            break;
        }
        ids[generated++] = token;
        if (!started) emitted = stream_start(m, text, len);
        /* Separators and whitespace at the end wait for the next word: the guard may leave them dangling. */
        ready = trim_end(text, emitted, len, 1);
        if (cased && callback) { /* without a stream, the result alone is cased, once, at the end */
            ready = before_open_word(text, emitted, ready, len);
            title_case(m, text, stream_start(m, text, len), ready);
        }
        if (callback && !incomplete_utf8_tail(text, len) && ready > emitted) {
            int stop = emit(callback, user_data, text, emitted, ready);
            emitted = ready;
            started = 1;
            if (stop) break;
        }
        if (generated < budget && (status = decode(m, &token, 1)) != UDRL_OK) goto done;
    }
    /* The result is the text stripped of surrounding whitespace and, after the guard's cut, of a
       dangling separator, as the SDK's. */
    start = 0;
    while (start < len && space_at((unsigned char *)text + start, len - start)) start += space_at((unsigned char *)text + start, len - start);
    end = trim_end(text, start, len, cut);
    if (cased) title_case(m, text, start, end);
    if (!started) emitted = stream_start(m, text, len);
    if (callback && end > emitted) emit(callback, user_data, text, emitted, end);
    if (end - start + 1 > out_size) {
        memcpy(out, text + start, out_size - 1);
        out[out_size - 1] = '\0';
        status = fail(m, UDRL_E_BUFFER, "output needs %zu bytes, buffer holds %zu", end - start + 1, out_size);
    } else {
        memcpy(out, text + start, end - start);
        out[end - start] = '\0';
        status = UDRL_OK;
    }
done:
    free(prompt);
    free(ids);
    free(text);
    free(work);
    free_focus(focus, n_focus);
    free(wanted);
    free_request_spelling(&spelling);
    return status;
}
