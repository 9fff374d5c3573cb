/*
 * udrl.h - command-conditioned prompt generation over llama.cpp, for apps (C99).
 *
 * Opens a udrl GGUF (written by `udrl export --format gguf`), reads the manifest stored in its
 * metadata under UDRL_METADATA_KEY, validates commands against it, builds the prompt token
 * sequence exactly as the Python SDK does, and generates with the same length guard.
 *
 *   udrl_model *model = NULL;
 *   char err[256];
 *   if (udrl_model_open("model-q8_0.gguf", NULL, &model, err, sizeof err) != UDRL_OK) { puts(err); }
 *   udrl_command cmd = { "image", 12, -1 };              // task, length (0: default), reward (-1: highest)
 *   char text[1024];
 *   if (udrl_generate(model, "poster for a jazz night", &cmd, NULL, text, sizeof text, NULL, NULL) == UDRL_OK)
 *       puts(text);
 *   udrl_model_free(model);
 *
 * Thread safety: there is no global mutable state. A udrl_model owns one llama.cpp context and is
 * NOT safe to use from two threads at once; give each thread its own udrl_model, or serialise calls
 * with your own lock. Functions that only read the manifest (udrl_task_*, udrl_length_*,
 * udrl_reward_levels, udrl_manifest_json) may be called concurrently with each other.
 * Call udrl_backend_init() once per process before opening models (it initialises llama.cpp).
 *
 * Sampling: temperature 0 is greedy and gives the same tokens as the Python SDK on the same GGUF.
 * With temperature > 0 and a seed, output is repeatable within this library (its random numbers are
 * not NumPy's, so it differs from the Python SDK's sampled output).
 */
#ifndef UDRL_H
#define UDRL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The GGUF metadata key that holds the manifest JSON (sdk/manifest.py: METADATA_KEY). */
#define UDRL_METADATA_KEY "udrl.manifest"
#define UDRL_MANIFEST_FORMAT "udrl-manifest"
#define UDRL_MANIFEST_VERSION 1

typedef enum {
    UDRL_OK = 0,
    UDRL_E_ARGUMENT = 1,   /* a NULL pointer or an option out of range */
    UDRL_E_IO = 2,         /* the model file is missing, unreadable or not a GGUF llama.cpp can load */
    UDRL_E_MANIFEST = 3,   /* the GGUF has no udrl manifest, or an invalid one */
    UDRL_E_TASK = 4,       /* unknown task */
    UDRL_E_LENGTH = 5,     /* length outside the trained range */
    UDRL_E_REWARD = 6,     /* reward level out of range */
    UDRL_E_QUERY = 7,      /* empty query, or one containing a reserved control token */
    UDRL_E_CONTEXT = 8,    /* prompt too long for the model's context */
    UDRL_E_BUFFER = 9,     /* the caller's output buffer is too small (output is truncated, terminated) */
    UDRL_E_RUNTIME = 10,   /* llama.cpp failed while decoding */
    UDRL_E_MEMORY = 11     /* out of memory */
} udrl_status;

/* A short constant description of a status code. */
const char *udrl_status_str(udrl_status status);

typedef struct udrl_model udrl_model;

typedef struct {
    int n_threads;     /* 0: 4 or the number of cores, whichever is fewer */
    int n_gpu_layers;  /* layers to offload where llama.cpp has a GPU backend; 0: CPU only */
} udrl_model_params;

typedef struct {
    const char *task;  /* one of the manifest's tasks */
    int length;        /* target words; 0: the task's default length from the manifest */
    int reward;        /* relevance level 0..levels-1; -1: the highest */
} udrl_command;

typedef struct {
    float temperature;   /* 0: greedy */
    int top_k;           /* 0: off */
    float top_p;         /* 1: off */
    uint64_t seed;       /* for temperature > 0 */
    int max_tokens;      /* 0: 3 * requested length + 8, within the context */
    int length_guard;    /* 1: no end before the requested word count, stop at it, and never end on
                            one of the manifest's end_stopwords nor bare punctuation (the default) */
    int no_repeat_ngram; /* n: never repeat n generated tokens in a row (2, the default, stops a small
                            model's loops such as a tag list repeating one tag), nor start the last
                            word again ("poster poster"), nor write a content word a third time;
                            0: all three off */
    float focus;         /* query focus: bonus to the query's content words the output lacks so far
                            (see sdk/generate.py); negative: the model's default from its manifest
                            for the task and length (the default); 0: off */
    int whole_words;     /* 1: every word of the output is one the manifest's spelling list or the
                            query spells, when the manifest has a list (docs/decoding.md; the
                            default); 0: the model spells freely */
} udrl_sampling;

/* Called with each new piece of text (UTF-8, never a split character). Return non-zero to stop. */
typedef int (*udrl_piece_callback)(const char *piece, void *user_data);

/* Initialise / release llama.cpp's backends; once per process. */
void udrl_backend_init(void);
void udrl_backend_free(void);

/* Defaults for the option structs. */
udrl_model_params udrl_model_default_params(void);
udrl_sampling udrl_default_sampling(void);

/* Open a udrl GGUF. On failure *model is NULL and err (if given) holds a message. */
udrl_status udrl_model_open(const char *path, const udrl_model_params *params, udrl_model **model,
                            char *err, size_t err_size);
void udrl_model_free(udrl_model *model);

/* The message of the last failed call on this model ("" if none). */
const char *udrl_model_error(const udrl_model *model);

/* The manifest, as stored, and what it allows. */
const char *udrl_manifest_json(const udrl_model *model);
int udrl_task_count(const udrl_model *model);
const char *udrl_task_name(const udrl_model *model, int index);
int udrl_length_min(const udrl_model *model);
int udrl_length_max(const udrl_model *model);
int udrl_reward_levels(const udrl_model *model);
int udrl_default_length(const udrl_model *model, const char *task);

/* Validate a command (filling defaults into *resolved if given). */
udrl_status udrl_check_command(udrl_model *model, const udrl_command *command, udrl_command *resolved);

/* The prompt's token ids, as the Python SDK builds them. *n_tokens gets the count (also when the
   capacity is too small, which returns UDRL_E_BUFFER). */
udrl_status udrl_prompt_tokens(udrl_model *model, const char *query, const udrl_command *command,
                               int32_t *tokens, int32_t capacity, int32_t *n_tokens);

/* Generate. out receives the whole text (stripped, NUL-terminated); callback (optional) receives it
   piece by piece as it decodes. sampling may be NULL (greedy, length guard on). */
udrl_status udrl_generate(udrl_model *model, const char *query, const udrl_command *command,
                          const udrl_sampling *sampling, char *out, size_t out_size,
                          udrl_piece_callback callback, void *user_data);

#ifdef __cplusplus
}
#endif
#endif /* UDRL_H */
