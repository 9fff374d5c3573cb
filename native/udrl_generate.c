/*
 * udrl-generate - the C counterpart of `udrl generate`:
 *
 *   udrl-generate --model model-q8_0.gguf "poster for a jazz night" --task image --length 12
 *   udrl-generate --model model.gguf --file queries.txt --task tags --json
 *
 * Exit status: 0, or the udrl_status code of the first failure (see udrl.h), with the message on
 * stderr.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "udrl.h"

static void usage(void) {
    fputs("usage: udrl-generate --model FILE [QUERY | --file FILE|-] [--task T] [--length N] [--reward N]\n"
          "                     [--temperature F] [--top-p F] [--top-k N] [--seed N] [--max-tokens N]\n"
          "                     [--no-length-guard] [--no-whole-words] [--no-repeat-ngram N] [--focus X] [--threads N]\n"
          "                     [--json] [--stream] [--prompt-tokens]\n",
          stderr);
}

static int print_piece(const char *piece, void *user_data) {
    (void)user_data;
    fputs(piece, stdout);
    fflush(stdout);
    return 0;
}

static void json_string(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c == '\n') fputs("\\n", stdout);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

static int run_one(udrl_model *model, const char *query, const udrl_command *cmd, const udrl_sampling *s, int json,
                   int stream, int prompt_tokens) {
    static char text[65536];
    udrl_status status;
    if (prompt_tokens) {
        int32_t ids[4096], n = 0, i;
        status = udrl_prompt_tokens(model, query, cmd, ids, 4096, &n);
        if (status != UDRL_OK) goto failed;
        for (i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
        putchar('\n');
        return 0;
    }
    status = udrl_generate(model, query, cmd, s, text, sizeof text, stream && !json ? print_piece : NULL, NULL);
    if (status != UDRL_OK) goto failed;
    if (json) {
        udrl_command r;
        udrl_check_command(model, cmd, &r);
        fputs("{\"query\": ", stdout);
        json_string(query);
        printf(", \"task\": \"%s\", \"length\": %d, \"reward\": %d, \"text\": ", r.task, r.length, r.reward);
        json_string(text);
        puts("}");
    } else if (stream) {
        putchar('\n');
    } else {
        puts(text);
    }
    return 0;
failed:
    fprintf(stderr, "udrl-generate: error: %s\n", udrl_model_error(model));
    return (int)status;
}

int main(int argc, char **argv) {
    const char *model_path = getenv("UDRL_MODEL"), *query = NULL, *file = NULL;
    udrl_command cmd = {"image", 0, -1};
    udrl_sampling s = udrl_default_sampling();
    udrl_model_params params = udrl_model_default_params();
    udrl_model *model = NULL;
    int json = 0, stream = 0, prompt_tokens = 0, rc = 0, i, length_given = 0, reward_given = 0;
    char err[512];
    udrl_status status;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEEDS_VALUE if (!v) { fprintf(stderr, "udrl-generate: error: %s needs a value\n", a); return 1; } i++
        if (!strcmp(a, "--model")) { NEEDS_VALUE; model_path = v; }
        else if (!strcmp(a, "--file")) { NEEDS_VALUE; file = v; }
        else if (!strcmp(a, "--task")) { NEEDS_VALUE; cmd.task = v; }
        else if (!strcmp(a, "--length")) { NEEDS_VALUE; cmd.length = atoi(v); length_given = 1; }
        else if (!strcmp(a, "--reward")) { NEEDS_VALUE; cmd.reward = atoi(v); reward_given = 1; }
        else if (!strcmp(a, "--temperature")) { NEEDS_VALUE; s.temperature = (float)atof(v); }
        else if (!strcmp(a, "--top-p")) { NEEDS_VALUE; s.top_p = (float)atof(v); }
        else if (!strcmp(a, "--top-k")) { NEEDS_VALUE; s.top_k = atoi(v); }
        else if (!strcmp(a, "--seed")) { NEEDS_VALUE; s.seed = strtoull(v, NULL, 10); }
        else if (!strcmp(a, "--max-tokens")) { NEEDS_VALUE; s.max_tokens = atoi(v); }
        else if (!strcmp(a, "--threads")) { NEEDS_VALUE; params.n_threads = atoi(v); }
        else if (!strcmp(a, "--no-length-guard")) s.length_guard = 0;
        else if (!strcmp(a, "--no-whole-words")) s.whole_words = 0;
        else if (!strcmp(a, "--no-repeat-ngram")) { NEEDS_VALUE; s.no_repeat_ngram = atoi(v); }
        else if (!strcmp(a, "--focus")) { NEEDS_VALUE; s.focus = (float)atof(v); }
        else if (!strcmp(a, "--json")) json = 1;
        else if (!strcmp(a, "--stream")) stream = 1;
        else if (!strcmp(a, "--prompt-tokens")) prompt_tokens = 1;
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(); return 0; }
        else if (a[0] == '-' && a[1] == '-') { fprintf(stderr, "udrl-generate: error: unknown option %s\n", a); usage(); return 1; }
        else if (!query) query = a;
        else { fprintf(stderr, "udrl-generate: error: give one query (or --file)\n"); return 1; }
#undef NEEDS_VALUE
    }
    if (!model_path || (!query && !file) || (query && file)) { usage(); return 1; }
    udrl_backend_init();
    if ((status = udrl_model_open(model_path, &params, &model, err, sizeof err)) != UDRL_OK) {
        fprintf(stderr, "udrl-generate: error: %s\n", err);
        udrl_backend_free();
        return (int)status;  /* the exit status is the udrl_status code (udrl.h) */
    }
    /* In the C API 0 and -1 mean "default"; on the command line they are out of range, as in Python. */
    if (length_given && cmd.length == 0) {
        fprintf(stderr, "udrl-generate: error: length 0 is outside the range this model was trained on: %d to %d words\n",
                udrl_length_min(model), udrl_length_max(model));
        rc = UDRL_E_LENGTH;
    } else if (reward_given && cmd.reward == -1) {
        fprintf(stderr, "udrl-generate: error: reward must be an integer level from 0 (lowest) to %d, got -1\n",
                udrl_reward_levels(model) - 1);
        rc = UDRL_E_REWARD;
    } else if (query) {
        rc = run_one(model, query, &cmd, &s, json, stream, prompt_tokens);
    } else {
        FILE *f = strcmp(file, "-") ? fopen(file, "r") : stdin;
        char line[8192];
        if (!f) { fprintf(stderr, "udrl-generate: error: cannot open %s\n", file); rc = UDRL_E_IO; }
        while (f && !rc && fgets(line, sizeof line, f)) {
            line[strcspn(line, "\r\n")] = '\0';
            if (line[strspn(line, " \t")] == '\0') continue;
            rc = run_one(model, line, &cmd, &s, json, stream, prompt_tokens);
        }
        if (f && f != stdin) fclose(f);
    }
    udrl_model_free(model);
    udrl_backend_free();
    return rc;
}
