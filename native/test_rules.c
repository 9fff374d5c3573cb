/*
 * test_rules.c - runs the shared decoding vectors (tests/data/decoding-vectors.json) through the C
 * layer's decoding rules and compares the logits they leave with the file's, which the SDK's rules
 * (udrl/rules.py) wrote: a rule changed on one side only fails here or in the Python test.
 *
 *   test-rules MODEL.gguf VECTORS.json     prints "ok NAME" or "FAIL NAME: ..." per case; exit 1 on a failure
 *   test-rules --casing CASING.json        the same for Title Case (tests/data/casing-vectors.json)
 *
 * It includes udrl.c to reach the static rules and its typed lookups over cJSON.
 */
#include "udrl.c"

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    char *data = NULL;
    long size;
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (data = malloc((size_t)size + 1)) && fread(data, 1, (size_t)size, f) == (size_t)size) {
        data[size] = '\0';
        *len = (size_t)size;
    } else {
        free(data);
        data = NULL;
    }
    fclose(f);
    return data;
}

/* A [token id, value] pair of the vectors file; 0 when it is not one. */
static int id_value(const cJSON *pair, int n_vocab, int *t, double *value) {
    const cJSON *v = cJSON_GetArrayItem(pair, 1);
    if (!cJSON_IsArray(pair) || !j_int(cJSON_GetArrayItem(pair, 0), t) || *t < 0 || *t >= n_vocab || !cJSON_IsNumber(v))
        return 0;
    *value = v->valuedouble;
    return 1;
}

/* The case's expected logits: 0 but for its given ones, raised and banned as the file says. */
static int expected_logits(const cJSON *c, float *want, int n_vocab) {
    const cJSON *logits = j_get(c, "logits"), *expect = j_get(c, "expect"), *banned, *raised, *item;
    int a, b, t;
    double value;
    if (!cJSON_IsArray(logits) || !(banned = j_get(expect, "banned")) || !(raised = j_get(expect, "raised"))) return 0;
    cJSON_ArrayForEach(item, logits) {
        if (!id_value(item, n_vocab, &t, &value)) return 0;
        want[t] = (float)value;
    }
    cJSON_ArrayForEach(item, raised) {
        if (!id_value(item, n_vocab, &t, &value)) return 0;
        want[t] += (float)value;
    }
    cJSON_ArrayForEach(item, banned) {
        if (!j_int(cJSON_GetArrayItem(item, 0), &a) || !j_int(cJSON_GetArrayItem(item, 1), &b) || a < 0 || b >= n_vocab)
            return 0;
        for (t = a; t <= b; t++) want[t] = -INFINITY;
    }
    return 1;
}

/* Apply the rules to one case; 1 when the logits they leave are the expected ones. */
static int run_case(udrl_model *m, const cJSON *c, float *got, float *want) {
    const char *name = j_str(j_get(c, "name")), *query = j_str(j_get(c, "query"));
    const cJSON *ids_v = j_get(c, "ids"), *guard_v = j_get(c, "length_guard"), *focus_v = j_get(c, "focus"), *item;
    const cJSON *split_v = j_get(c, "split_words"), *push_v = j_get(c, "push_function_words");
    int manifest_push = m->focus_push_function_words;
    rule_state s;
    llama_token *ids = NULL;
    focus_word *focus = NULL;
    request_spelling spelling;
    int *wanted = NULL, n_focus = 0, ok = 0, i, first_bad = -1, argmax;
    char *text = NULL;
    size_t len = 0, cap = 64, k = 0;
    double value;
    udrl_status status = UDRL_OK;
    if (!name || !query || !cJSON_IsArray(ids_v) || !cJSON_IsBool(guard_v) || !cJSON_IsNumber(focus_v) ||
        !cJSON_IsBool(split_v) || !cJSON_IsBool(push_v)) {
        printf("FAIL malformed case\n");
        return 0;
    }
    memset(&s, 0, sizeof s);
    memset(&spelling, 0, sizeof spelling);
    s.m = m;
    s.length_guard = cJSON_IsTrue(guard_v);
    s.focus_bias = (float)focus_v->valuedouble;
    if (!j_int(j_get(c, "length"), &s.length) || !j_int(j_get(c, "no_repeat_ngram"), &s.no_repeat_ngram) ||
        !(ids = malloc(sizeof *ids * ((size_t)cJSON_GetArraySize(ids_v) + 1))) || !(text = malloc(cap))) {
        printf("FAIL %s: malformed case\n", name);
        goto done;
    }
    text[0] = '\0';
    cJSON_ArrayForEach(item, ids_v) {
        int t;
        if (!j_int(item, &t) || !append_piece(m, t, &text, &len, &cap)) {
            printf("FAIL %s: bad token id\n", name);
            goto done;
        }
        ids[k++] = t;
    }
    if (s.focus_bias > 0) {
        int manifest_split = m->focus_split_words;
        m->focus_split_words = cJSON_IsTrue(split_v); /* the case's, as the Python side passes it */
        focus = focus_words(m, query, &n_focus, &status);
        m->focus_split_words = manifest_split;
        if (status != UDRL_OK || (n_focus && !(wanted = malloc(sizeof *wanted * FOCUS_SCRATCH * (size_t)n_focus)))) {
            printf("FAIL %s: focus words\n", name);
            goto done;
        }
    }
    if (!cJSON_IsBool(j_get(c, "whole_words"))) {
        printf("FAIL %s: malformed case\n", name);
        goto done;
    }
    if (cJSON_IsTrue(j_get(c, "whole_words")) && make_request_spelling(m, query, &spelling) != UDRL_OK) {
        printf("FAIL %s: spelling tables\n", name);
        goto done;
    }
    s.extra = &spelling.extra;
    s.own_spelt = spelling.own_spelt;
    s.allowed = spelling.allowed;
    s.focus = focus;
    s.n_focus = n_focus;
    s.wanted = wanted;
    s.ids = ids;
    s.n_ids = (int32_t)k;
    s.text = text + rule_text_start(m, text, len);
    s.len = len - rule_text_start(m, text, len);
    for (i = 0; i < m->n_vocab; i++) got[i] = want[i] = 0.0f;
    if (!expected_logits(c, want, m->n_vocab)) { printf("FAIL %s: malformed expectation\n", name); goto done; }
    cJSON_ArrayForEach(item, j_get(c, "logits")) {
        if (id_value(item, m->n_vocab, &i, &value)) got[i] = (float)value;
    }
    m->focus_push_function_words = cJSON_IsTrue(push_v); /* the case's, as the Python side passes it */
    apply_rules(&s, got);
    m->focus_push_function_words = manifest_push;
    for (i = 0; i < m->n_vocab && first_bad < 0; i++)
        if (!(got[i] == want[i] || fabsf(got[i] - want[i]) <= 1e-5f)) first_bad = i;
    for (argmax = 0, i = 1; i < m->n_vocab; i++)
        if (got[i] > got[argmax]) argmax = i;
    if (first_bad >= 0)
        printf("FAIL %s: token %d is %g, expected %g\n", name, first_bad, got[first_bad], want[first_bad]);
    else if (!j_int(j_get(j_get(c, "expect"), "argmax"), &i) || i != argmax)
        printf("FAIL %s: argmax %d\n", name, argmax);
    else {
        printf("ok %s\n", name);
        ok = 1;
    }
done:
    free(ids);
    free(text);
    free(wanted);
    free_focus(focus, n_focus);
    free_request_spelling(&spelling);
    return ok;
}

/* The vectors file's focus biases: focus_at of each [bias, length, bonus] gives the bonus, and
   valid_focus_bias refuses each invalid one, over the file's length range. Returns the failures. */
static int run_focus_bias(const cJSON *root) {
    const cJSON *range = j_get(root, "focus_lengths"), *c;
    int lo, hi, failed = 0, n = 0, length;
    char *text;
    if (!j_int(cJSON_GetArrayItem(range, 0), &lo) || !j_int(cJSON_GetArrayItem(range, 1), &hi) ||
        !cJSON_IsArray(j_get(root, "focus_at")) || !cJSON_IsArray(j_get(root, "invalid_focus_bias"))) {
        printf("FAIL the vectors file has no focus biases\n");
        return 1;
    }
    cJSON_ArrayForEach(c, j_get(root, "focus_at")) {
        const cJSON *bias = cJSON_GetArrayItem(c, 0), *want = cJSON_GetArrayItem(c, 2);
        double got;
        text = cJSON_PrintUnformatted(bias);
        if (!j_int(cJSON_GetArrayItem(c, 1), &length) || !cJSON_IsNumber(want) || !valid_focus_bias(bias, lo, hi)) {
            printf("FAIL focus_at %s: malformed or refused\n", text ? text : "?");
            failed++;
        } else if ((got = focus_at(bias, length)) != want->valuedouble) {
            printf("FAIL focus_at %s at %d: %.17g, expected %.17g\n", text ? text : "?", length, got, want->valuedouble);
            failed++;
        } else {
            printf("ok focus_at %s at %d\n", text ? text : "?", length);
        }
        free(text);
        n++;
    }
    cJSON_ArrayForEach(c, j_get(root, "invalid_focus_bias")) {
        text = cJSON_PrintUnformatted(c);
        if (valid_focus_bias(c, lo, hi)) { printf("FAIL focus bias %s: accepted\n", text ? text : "?"); failed++; }
        else printf("ok focus bias %s refused\n", text ? text : "?");
        free(text);
        n++;
    }
    printf("%d focus bias cases, %d failed\n", n, failed);
    return failed;
}

/* The casing vectors (tests/data/casing-vectors.json): title_case of each "title_case" text, and
   what a title-case stream hands out of each "stream" text so far. */
static int run_casing(const char *path) {
    size_t len = 0, n = 0, ready, end;
    char *data = read_file(path, &len), *text;
    cJSON *root = data ? cJSON_ParseWithLength(data, len) : NULL;
    const cJSON *c;
    udrl_model m;
    int failed = 0, stream;
    if (!root || !cJSON_IsArray(j_get(root, "minor_words"))) {
        fprintf(stderr, "%s is not a casing vectors file\n", path);
        return 2;
    }
    memset(&m, 0, sizeof m);
    m.minor_words = j_get(root, "minor_words");
    for (stream = 0; stream < 2; stream++) {
        cJSON_ArrayForEach(c, j_get(root, stream ? "stream" : "title_case")) {
            const char *in = j_str(cJSON_GetArrayItem(c, 0)), *want = j_str(cJSON_GetArrayItem(c, 1));
            if (!in || !want || !(text = malloc(strlen(in) + 1))) { printf("FAIL malformed case\n"); failed++; continue; }
            len = strlen(in);
            memcpy(text, in, len + 1);
            end = len;
            if (stream) {
                size_t start = stream_start(&m, text, len);
                ready = trim_end(text, start, len, 1);
                end = before_open_word(text, start, ready, len);
                title_case(&m, text, start, end);
                memmove(text, text + start, end - start);
                text[end - start] = '\0';
            } else {
                title_case(&m, text, 0, len);
            }
            if (strcmp(text, want)) { printf("FAIL %s %s: %s\n", stream ? "stream" : "title_case", in, text); failed++; }
            else printf("ok %s %s\n", stream ? "stream" : "title_case", in);
            n++;
            free(text);
        }
    }
    printf("%zu casing cases, %d failed\n", n, failed);
    cJSON_Delete(root);
    free(data);
    return failed ? 1 : 0;
}

int main(int argc, char **argv) {
    udrl_model *model = NULL;
    char err[512];
    size_t len = 0;
    char *data;
    cJSON *root;
    const cJSON *cases, *c;
    float *got, *want;
    int failed = 0;
    if (argc == 3 && !strcmp(argv[1], "--casing")) return run_casing(argv[2]);
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL.gguf VECTORS.json | --casing CASING.json\n", argv[0]);
        return 2;
    }
    udrl_backend_init();
    if (udrl_model_open(argv[1], NULL, &model, err, sizeof err) != UDRL_OK) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    if (!(data = read_file(argv[2], &len))) {
        fprintf(stderr, "cannot read %s\n", argv[2]);
        return 2;
    }
    root = cJSON_ParseWithLength(data, len);
    if (!cJSON_IsArray(cases = j_get(root, "cases"))) {
        fprintf(stderr, "%s is not a vectors file\n", argv[2]);
        return 2;
    }
    got = malloc(sizeof *got * (size_t)model->n_vocab);
    want = malloc(sizeof *want * (size_t)model->n_vocab);
    if (!got || !want) return 2;
    cJSON_ArrayForEach(c, cases) failed += !run_case(model, c, got, want);
    printf("%d cases, %d failed\n", cJSON_GetArraySize(cases), failed);
    failed += run_focus_bias(root);
    free(got);
    free(want);
    cJSON_Delete(root);
    free(data);
    udrl_model_free(model);
    udrl_backend_free();
    return failed ? 1 : 0;
}
