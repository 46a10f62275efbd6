/* The C ABI from C: greedy tokens of a fixture through liger.h, state save / restore / fork,
 * sessions on several threads, and every error path. Run by tests/capi.rs (under valgrind in
 * CI):
 *
 *   capi_test MODEL PROMPT_IDS GREEDY_IDS [TOKENIZER_MODEL]
 *
 * MODEL: a fixture converted to a liger file (no tokenizer); PROMPT_IDS / GREEDY_IDS: comma-
 * separated ids, the greedy continuation in hf-compat semantics (the fixture's reference);
 * TOKENIZER_MODEL (optional): a liger file with a tokenizer, for the text functions.
 * Prints each failed check and exits 1 if any failed. */
#define _POSIX_C_SOURCE 200809L
#include "liger.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>

static int failures = 0;

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "%s:%d: check failed: %s (last error: %s)\n", __FILE__, \
                    __LINE__, #cond, liger_last_error());                        \
            failures++;                                                          \
        }                                                                        \
    } while (0)

/* Expects `call` to return `code` and leave a non-empty message. */
#define EXPECT_ERROR(call, code)                                                 \
    do {                                                                         \
        LigerStatus status_ = (call);                                            \
        if (status_ != (code) || liger_last_error()[0] == '\0') {                \
            fprintf(stderr, "%s:%d: %s returned %d, expected %d (message: '%s')\n", \
                    __FILE__, __LINE__, #call, status_, (code), liger_last_error()); \
            failures++;                                                          \
        }                                                                        \
    } while (0)

#define MAX_IDS 256

static size_t parse_ids(const char *text, uint32_t *ids) {
    size_t n = 0;
    const char *p = text;
    while (*p && n < MAX_IDS) {
        ids[n++] = (uint32_t)strtoul(p, (char **)&p, 10);
        if (*p == ',') p++;
    }
    return n;
}

/* Collects generated tokens; stops after `stop_after` if non-zero. */
typedef struct {
    uint32_t tokens[MAX_IDS];
    size_t n;
    size_t stop_after;
    size_t text_bytes;
    char text[1024]; /* the text, while it fits */
} Collected;

static int32_t collect(void *user_data, uint32_t token, const char *text, size_t text_len) {
    Collected *c = (Collected *)user_data;
    if (text == NULL || strlen(text) != text_len) return 1; /* NUL-terminated, as documented */
    if (c->text_bytes + text_len < sizeof c->text) memcpy(c->text + c->text_bytes, text, text_len + 1);
    c->text_bytes += text_len;
    if (token == LIGER_TOKEN_NONE) return 0;
    if (c->n < MAX_IDS) c->tokens[c->n++] = token;
    return c->stop_after != 0 && c->n >= c->stop_after;
}

static int same_ids(const uint32_t *a, const uint32_t *b, size_t n) {
    return memcmp(a, b, n * sizeof(uint32_t)) == 0;
}

static uint32_t prompt[MAX_IDS], greedy[MAX_IDS];
static size_t n_prompt, n_greedy;

/* A thread: its own session on the shared model, the greedy continuation twice. */
typedef struct {
    LigerModel *model;
    int ok;
} Worker;

static void *worker(void *arg) {
    Worker *w = (Worker *)arg;
    w->ok = 1;
    for (int round = 0; round < 2; round++) {
        LigerSession *s = NULL;
        Collected c = {0};
        size_t n = 0;
        if (liger_session_new(w->model, &s) != LIGER_OK ||
            liger_session_feed(s, prompt, n_prompt) != LIGER_OK ||
            liger_session_generate(s, NULL, n_greedy, collect, &c, &n) != LIGER_OK ||
            n != n_greedy || !same_ids(c.tokens, greedy, n_greedy))
            w->ok = 0;
        liger_session_free(s);
    }
    return NULL;
}

/* A thread feeding one token at a time into a session another thread also feeds. */
typedef struct {
    LigerSession *session;
    int ok;
} Feeder;

static void *feeder(void *arg) {
    Feeder *f = (Feeder *)arg;
    f->ok = 1;
    for (int i = 0; i < 20; i++) {
        uint32_t id = (uint32_t)(i % 7);
        if (liger_session_feed(f->session, &id, 1) != LIGER_OK) f->ok = 0;
    }
    return NULL;
}

static void test_loading_errors(const char *model_path) {
    LigerModel *m = NULL;
    LigerModelOptions o;
    EXPECT_ERROR(liger_model_load(NULL, NULL, &m), LIGER_ERROR_NULL);
    EXPECT_ERROR(liger_model_load(model_path, NULL, NULL), LIGER_ERROR_NULL);
    EXPECT_ERROR(liger_model_load("/nonexistent/model.gguf", NULL, &m), LIGER_ERROR_IO);
    EXPECT_ERROR(liger_model_load("\xff\xfe.gguf", NULL, &m), LIGER_ERROR_UTF8);
    EXPECT_ERROR(liger_model_options_default(NULL), LIGER_ERROR_NULL);
    CHECK(liger_model_options_default(&o) == LIGER_OK);
    CHECK(o.backend == LIGER_BACKEND_CPU && o.decode_mode == LIGER_DECODE_WINDOW &&
          o.use_mmap == 1);
    o.use_mmap = 2;
    EXPECT_ERROR(liger_model_load(model_path, &o, &m), LIGER_ERROR_INVALID_ARGUMENT);
    o.use_mmap = 1;
    o.decode_mode = 7;
    EXPECT_ERROR(liger_model_load(model_path, &o, &m), LIGER_ERROR_INVALID_ARGUMENT);
    o.decode_mode = LIGER_DECODE_WINDOW;
    o.backend = 9;
    EXPECT_ERROR(liger_model_load(model_path, &o, &m), LIGER_ERROR_INVALID_ARGUMENT);
    CHECK(m == NULL);

    /* A file that is not a model, and a model file cut in half. */
    char bad[] = "/tmp/liger_capi_bad_XXXXXX";
    FILE *in = fopen(model_path, "rb");
    CHECK(in != NULL);
    if (in) {
        fseek(in, 0, SEEK_END);
        long size = ftell(in);
        fseek(in, 0, SEEK_SET);
        char *bytes = malloc((size_t)size);
        CHECK(fread(bytes, 1, (size_t)size, in) == (size_t)size);
        fclose(in);
        int fd = mkstemp(bad);
        FILE *out = fdopen(fd, "wb");
        fwrite(bytes, 1, (size_t)size / 2, out);
        fclose(out);
        EXPECT_ERROR(liger_model_load(bad, NULL, &m), LIGER_ERROR_MODEL);
        out = fopen(bad, "wb");
        fputs("this is not a GGUF file", out);
        fclose(out);
        EXPECT_ERROR(liger_model_load(bad, NULL, &m), LIGER_ERROR_MODEL);
        remove(bad);
        free(bytes);
    }
}

static void test_handles(LigerModel *model) {
    int not_a_handle = 0;
    LigerSession *s = NULL;
    size_t n = 0;
    uint32_t id = 1;
    EXPECT_ERROR(liger_session_new(NULL, &s), LIGER_ERROR_NULL);
    EXPECT_ERROR(liger_session_new(model, NULL), LIGER_ERROR_NULL);
    EXPECT_ERROR(liger_session_new((LigerModel *)&not_a_handle, &s), LIGER_ERROR_INVALID_HANDLE);
    EXPECT_ERROR(liger_session_feed((LigerSession *)&not_a_handle, &id, 1),
                 LIGER_ERROR_INVALID_HANDLE);
    EXPECT_ERROR(liger_model_vocab_size((LigerModel *)&not_a_handle, &n),
                 LIGER_ERROR_INVALID_HANDLE);
    /* A session handle is not a model handle. */
    CHECK(liger_session_new(model, &s) == LIGER_OK);
    EXPECT_ERROR(liger_model_vocab_size((LigerModel *)s, &n), LIGER_ERROR_INVALID_HANDLE);
    CHECK(liger_session_free(s) == LIGER_OK);
    /* Freed: every use and a second free are errors, not crashes. */
    EXPECT_ERROR(liger_session_feed(s, &id, 1), LIGER_ERROR_INVALID_HANDLE);
    EXPECT_ERROR(liger_session_free(s), LIGER_ERROR_INVALID_HANDLE);
    CHECK(liger_session_free(NULL) == LIGER_OK);
    CHECK(liger_model_free(NULL) == LIGER_OK);
}

static void test_session(LigerModel *model, LigerModel *window_model) {
    LigerSession *s = NULL, *fork = NULL, *other = NULL;
    size_t n = 0, vocab = 0;
    uint64_t pos = 0;
    CHECK(liger_model_vocab_size(model, &vocab) == LIGER_OK && vocab > 0);
    CHECK(liger_session_new(model, &s) == LIGER_OK);

    /* Bad feeds leave the session as it was. */
    uint32_t too_big = (uint32_t)vocab;
    EXPECT_ERROR(liger_session_feed(s, NULL, 3), LIGER_ERROR_NULL);
    EXPECT_ERROR(liger_session_feed(s, &too_big, 1), LIGER_ERROR_INVALID_ARGUMENT);
    CHECK(liger_session_position(s, &pos) == LIGER_OK && pos == 0);
    EXPECT_ERROR(liger_session_generate(s, NULL, 4, NULL, NULL, &n), LIGER_ERROR_INVALID_ARGUMENT);
    CHECK(liger_session_feed(s, NULL, 0) == LIGER_OK);

    /* The reference's greedy continuation. */
    CHECK(liger_session_feed(s, prompt, n_prompt) == LIGER_OK);
    CHECK(liger_session_position(s, &pos) == LIGER_OK && pos == n_prompt);
    CHECK(liger_session_fork(s, &fork) == LIGER_OK);
    Collected c = {0};
    CHECK(liger_session_generate(s, NULL, n_greedy, collect, &c, &n) == LIGER_OK);
    CHECK(n == n_greedy && c.n == n_greedy);
    CHECK(same_ids(c.tokens, greedy, n_greedy));
    if (!same_ids(c.tokens, greedy, n_greedy))
        for (size_t i = 0; i < c.n; i++)
            fprintf(stderr, "  token %zu: got %u, reference %u\n", i, c.tokens[i], greedy[i]);

    /* The fork made after the prompt continues the same way; a callback can stop it. */
    Collected stopped = {.stop_after = 3};
    CHECK(liger_session_generate(fork, NULL, n_greedy, collect, &stopped, &n) == LIGER_OK);
    CHECK(n == 3 && same_ids(stopped.tokens, greedy, 3));

    /* Logits: a short buffer gets the needed length; sampling is greedy by default. */
    float small[4];
    float *logits = malloc(vocab * sizeof(float));
    EXPECT_ERROR(liger_session_logits(s, small, 4, &n), LIGER_ERROR_BUFFER_TOO_SMALL);
    CHECK(n == vocab);
    CHECK(liger_session_logits(s, logits, vocab, &n) == LIGER_OK && n == vocab);
    uint32_t best = 0, sampled = 0;
    for (size_t i = 1; i < vocab; i++)
        if (logits[i] > logits[best]) best = (uint32_t)i;
    CHECK(liger_session_sample(s, NULL, &sampled) == LIGER_OK && sampled == best);
    LigerSamplerOptions so;
    CHECK(liger_sampler_options_default(&so) == LIGER_OK && so.temperature > 0);
    CHECK(liger_session_sample(s, &so, &sampled) == LIGER_OK && sampled < vocab);

    /* State: save, go on, restore, go on again — the same tokens. */
    size_t size = 0;
    CHECK(liger_state_size(s, &size) == LIGER_OK && size > 0);
    uint8_t *state = malloc(size);
    EXPECT_ERROR(liger_state_save(s, state, size - 1, &n), LIGER_ERROR_BUFFER_TOO_SMALL);
    CHECK(liger_state_save(s, state, size, &n) == LIGER_OK && n == size);
    Collected first = {0}, again = {0};
    CHECK(liger_session_generate(s, NULL, 5, collect, &first, &n) == LIGER_OK && n == 5);
    CHECK(liger_state_load(s, state, size) == LIGER_OK);
    CHECK(liger_session_generate(s, NULL, 5, collect, &again, &n) == LIGER_OK && n == 5);
    CHECK(same_ids(first.tokens, again.tokens, 5));

    /* Bad state blobs: truncated, corrupted, another decode mode — the session is unchanged. */
    CHECK(liger_session_position(s, &pos) == LIGER_OK);
    EXPECT_ERROR(liger_state_load(s, state, size / 2), LIGER_ERROR_STATE);
    state[size / 2] ^= 0x40;
    EXPECT_ERROR(liger_state_load(s, state, size), LIGER_ERROR_STATE);
    state[size / 2] ^= 0x40;
    EXPECT_ERROR(liger_state_load(s, NULL, size), LIGER_ERROR_NULL);
    uint64_t pos_after = 0;
    CHECK(liger_session_position(s, &pos_after) == LIGER_OK && pos_after == pos);
    CHECK(liger_session_new(window_model, &other) == LIGER_OK);
    EXPECT_ERROR(liger_state_load(other, state, size), LIGER_ERROR_STATE);

    /* Reset, then the prompt again: the same continuation. */
    CHECK(liger_session_reset(s) == LIGER_OK);
    Collected fresh = {0};
    CHECK(liger_session_feed(s, prompt, n_prompt) == LIGER_OK);
    CHECK(liger_session_generate(s, NULL, n_greedy, collect, &fresh, &n) == LIGER_OK);
    CHECK(same_ids(fresh.tokens, greedy, n_greedy));

    /* No tokenizer in a fixture file: the text functions say so. */
    uint32_t ids[8];
    char text[8];
    EXPECT_ERROR(liger_tokenize(model, "hi", true, ids, 8, &n), LIGER_ERROR_TOKENIZER);
    EXPECT_ERROR(liger_detokenize(model, greedy, 2, text, 8, &n), LIGER_ERROR_TOKENIZER);
    EXPECT_ERROR(liger_session_feed_text(s, "hi", true), LIGER_ERROR_TOKENIZER);

    free(state);
    free(logits);
    CHECK(liger_session_free(other) == LIGER_OK);
    CHECK(liger_session_free(fork) == LIGER_OK);
    CHECK(liger_session_free(s) == LIGER_OK);
}

/* Three sessions decoded together (liger_sessions_decode): each one's greedy tokens are its
 * reference greedy tokens, with sessions at other positions in the same steps; bad batches
 * are refused and feed nothing. */
static void test_sessions_decode(LigerModel *model) {
    enum { N = 3 };
    LigerSession *s[N] = {NULL, NULL, NULL};
    size_t vocab = 0, n = 0;
    CHECK(liger_model_vocab_size(model, &vocab) == LIGER_OK);
    float *logits = malloc(vocab * sizeof(float));
    for (int i = 0; i < N; i++) CHECK(liger_session_new(model, &s[i]) == LIGER_OK);
    CHECK(liger_session_feed(s[0], prompt, n_prompt) == LIGER_OK);
    CHECK(liger_session_feed(s[1], prompt, n_prompt) == LIGER_OK);
    CHECK(liger_session_feed(s[2], prompt, 1) == LIGER_OK);
    uint32_t got[2][64];
    size_t steps = n_greedy < 64 ? n_greedy : 64;
    for (size_t t = 0; t < steps; t++) {
        uint32_t next[N];
        for (int i = 0; i < N; i++) {
            CHECK(liger_session_logits(s[i], logits, vocab, &n) == LIGER_OK);
            size_t best = 0;
            for (size_t v = 1; v < vocab; v++) if (logits[v] > logits[best]) best = v;
            next[i] = (uint32_t)best;
        }
        CHECK(liger_sessions_decode(s, next, N) == LIGER_OK);
        got[0][t] = next[0];
        got[1][t] = next[1];
    }
    CHECK(same_ids(got[0], greedy, steps) && same_ids(got[1], greedy, steps));
    uint64_t before = 0, after = 0;
    CHECK(liger_session_position(s[0], &before) == LIGER_OK);
    LigerSession *twice[2] = {s[0], s[0]};
    uint32_t two[2] = {1, 2}, too_big[2] = {1, (uint32_t)vocab};
    EXPECT_ERROR(liger_sessions_decode(twice, two, 2), LIGER_ERROR_INVALID_ARGUMENT);
    EXPECT_ERROR(liger_sessions_decode(s, too_big, 2), LIGER_ERROR_INVALID_ARGUMENT);
    EXPECT_ERROR(liger_sessions_decode(NULL, two, 2), LIGER_ERROR_NULL);
    EXPECT_ERROR(liger_sessions_decode(s, NULL, 2), LIGER_ERROR_NULL);
    CHECK(liger_session_position(s[0], &after) == LIGER_OK && after == before);
    CHECK(liger_sessions_decode(NULL, NULL, 0) == LIGER_OK);
    for (int i = 0; i < N; i++) CHECK(liger_session_free(s[i]) == LIGER_OK);
    free(logits);
}

static void test_threads(LigerModel *model) {
    enum { WORKERS = 4 };
    pthread_t threads[WORKERS];
    Worker workers[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        workers[i].model = model;
        pthread_create(&threads[i], NULL, worker, &workers[i]);
    }
    for (int i = 0; i < WORKERS; i++) {
        pthread_join(threads[i], NULL);
        CHECK(workers[i].ok);
    }
    /* Two threads feeding one session: serialized, 40 tokens in all. */
    LigerSession *s = NULL;
    CHECK(liger_session_new(model, &s) == LIGER_OK);
    Feeder f[2] = {{s, 0}, {s, 0}};
    for (int i = 0; i < 2; i++) pthread_create(&threads[i], NULL, feeder, &f[i]);
    for (int i = 0; i < 2; i++) {
        pthread_join(threads[i], NULL);
        CHECK(f[i].ok);
    }
    uint64_t pos = 0;
    CHECK(liger_session_position(s, &pos) == LIGER_OK && pos == 40);
    CHECK(liger_session_free(s) == LIGER_OK);
}

static void test_text(const char *path) {
    LigerModel *m = NULL;
    LigerSession *s = NULL;
    LigerModelOptions o;
    liger_model_options_default(&o);
    o.threads = 1;
    uint32_t ids[64];
    char text[64];
    size_t n = 0, len = 0;
    const char *hello = "Hello, world!";
    CHECK(liger_model_load(path, &o, &m) == LIGER_OK);
    EXPECT_ERROR(liger_tokenize(m, hello, false, NULL, 0, &n), LIGER_ERROR_BUFFER_TOO_SMALL);
    CHECK(n > 0 && n < 64);
    CHECK(liger_tokenize(m, hello, false, ids, 64, &n) == LIGER_OK);
    EXPECT_ERROR(liger_tokenize(m, "\xc3\x28", false, ids, 64, &n), LIGER_ERROR_UTF8);
    CHECK(liger_detokenize(m, ids, n, text, sizeof text, &len) == LIGER_OK);
    CHECK(strcmp(text, hello) == 0 && len == strlen(hello));
    EXPECT_ERROR(liger_detokenize(m, ids, n, text, 4, &len), LIGER_ERROR_BUFFER_TOO_SMALL);
    CHECK(len == strlen(hello));
    uint32_t bad = 0xfffffff0u;
    EXPECT_ERROR(liger_detokenize(m, &bad, 1, text, sizeof text, &len),
                 LIGER_ERROR_INVALID_ARGUMENT);
    /* The file's chat template renders a conversation; its stop ids end answers. */
    LigerChatMessage chat[2] = {{"system", "Be brief."}, {"user", "Hi!"}};
    char prompt_text[512];
    size_t need = 0;
    EXPECT_ERROR(liger_chat_apply_template(m, chat, 2, NULL, true, prompt_text, 8, &need),
                 LIGER_ERROR_BUFFER_TOO_SMALL);
    CHECK(liger_chat_apply_template(m, chat, 2, NULL, true, prompt_text, sizeof prompt_text, &len) ==
          LIGER_OK);
    CHECK(len == need && strlen(prompt_text) == len && strstr(prompt_text, "Be brief.") &&
          strstr(prompt_text, "Hi!") && strstr(prompt_text, "Hi!") < prompt_text + len);
    LigerChatMessage no_role = {NULL, "x"};
    EXPECT_ERROR(liger_chat_apply_template(m, &no_role, 1, NULL, true, prompt_text, sizeof prompt_text,
                                           &len),
                 LIGER_ERROR_NULL);
    EXPECT_ERROR(liger_chat_apply_template(NULL, chat, 2, NULL, true, prompt_text, sizeof prompt_text,
                                           &len),
                 LIGER_ERROR_NULL);
    const char *tools = "[{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", "
                        "\"parameters\": {\"type\": \"object\"}}}]";
    char with_tools[2048];
    CHECK(liger_chat_apply_template(m, chat, 2, tools, true, with_tools, sizeof with_tools, &len) ==
              LIGER_OK &&
          strstr(with_tools, "get_weather") && strstr(with_tools, "Hi!"));
    EXPECT_ERROR(liger_chat_apply_template(m, chat, 2, "{\"not\": \"a list\"}", true, with_tools,
                                           sizeof with_tools, &len),
                 LIGER_ERROR_INVALID_ARGUMENT);
    uint32_t stops[8];
    size_t n_stops = 0;
    CHECK(liger_model_stop_ids(m, stops, 8, &n_stops) == LIGER_OK && n_stops >= 1);
    CHECK(liger_session_new(m, &s) == LIGER_OK);
    /* The model may be freed while a session uses it. */
    CHECK(liger_model_free(m) == LIGER_OK);
    CHECK(liger_session_feed_text(s, "The capital of France is", true) == LIGER_OK);
    Collected c = {0};
    LigerSamplerOptions so;
    liger_sampler_options_default(&so);
    CHECK(liger_session_generate(s, &so, 3, collect, &c, &n) == LIGER_OK);
    CHECK(n == c.n && n <= 3);

    /* Structured output: bad grammars are errors that keep the session as it was; a regex
     * and a JSON schema shape what is generated; NULL kind lifts the constraint. */
    EXPECT_ERROR(liger_session_set_grammar(NULL, "regex", "a"), LIGER_ERROR_NULL);
    EXPECT_ERROR(liger_session_set_grammar(s, "yaml", "a: 1"), LIGER_ERROR_INVALID_ARGUMENT);
    EXPECT_ERROR(liger_session_set_grammar(s, "json_schema", "{not json"),
                 LIGER_ERROR_INVALID_ARGUMENT);
    EXPECT_ERROR(liger_session_set_grammar(s, "json_schema", NULL), LIGER_ERROR_NULL);
    CHECK(liger_session_set_grammar(s, "regex", "[0-9]{3}") == LIGER_OK);
    Collected digits = {0};
    CHECK(liger_session_generate(s, &so, 16, collect, &digits, &n) == LIGER_OK);
    CHECK(digits.text_bytes == 3 && strspn(digits.text, "0123456789") == 3);
    CHECK(liger_session_set_grammar(s, "json_schema",
                                    "{\"type\": \"object\", \"properties\": {\"ok\": "
                                    "{\"type\": \"boolean\"}}, \"required\": [\"ok\"], "
                                    "\"additionalProperties\": false}") == LIGER_OK);
    Collected json = {0};
    CHECK(liger_session_generate(s, &so, 64, collect, &json, &n) == LIGER_OK);
    CHECK(json.text[0] == '{' && strstr(json.text, "\"ok\"") != NULL &&
          (strstr(json.text, "true") || strstr(json.text, "false")) &&
          json.text[json.text_bytes - 1] == '}');
    CHECK(liger_session_set_grammar(s, NULL, NULL) == LIGER_OK);

    /* Stop strings: the greedy text cut where the stop string begins (found mid-way through
     * it, so that it may span tokens); bad lists are errors that keep the session's. */
    LigerSession *plain = NULL, *cut = NULL, *banned = NULL, *forced = NULL;
    CHECK(liger_session_feed_text(s, " The capital of Italy is", false) == LIGER_OK);
    CHECK(liger_session_fork(s, &plain) == LIGER_OK && liger_session_fork(s, &cut) == LIGER_OK &&
          liger_session_fork(s, &banned) == LIGER_OK && liger_session_fork(s, &forced) == LIGER_OK);
    Collected full = {0}, stopped = {0};
    CHECK(liger_session_generate(plain, NULL, 24, collect, &full, &n) == LIGER_OK);
    CHECK(full.text_bytes >= 8 && full.text_bytes < sizeof full.text);
    char stop[4] = {0};
    memcpy(stop, full.text + full.text_bytes / 2, 3);
    const char *stop_list[] = {"never in this text", stop};
    const char *too_many[17];
    for (int i = 0; i < 17; i++) too_many[i] = "x";
    const char *empty[] = {""};
    EXPECT_ERROR(liger_session_set_stop_strings(cut, too_many, 17), LIGER_ERROR_INVALID_ARGUMENT);
    EXPECT_ERROR(liger_session_set_stop_strings(cut, NULL, 1), LIGER_ERROR_NULL);
    EXPECT_ERROR(liger_session_set_stop_strings(cut, empty, 1), LIGER_ERROR_INVALID_ARGUMENT);
    EXPECT_ERROR(liger_session_set_stop_strings(NULL, stop_list, 2), LIGER_ERROR_NULL);
    CHECK(liger_session_set_stop_strings(cut, stop_list, 2) == LIGER_OK);
    CHECK(liger_session_generate(cut, NULL, 24, collect, &stopped, &n) == LIGER_OK);
    size_t want = (size_t)(strstr(full.text, stop) - full.text);
    CHECK(stopped.text_bytes == want && memcmp(stopped.text, full.text, want) == 0);
    CHECK(liger_session_set_stop_strings(cut, NULL, 0) == LIGER_OK);

    /* Logit bias: -100 bans the greedy first token, +100 forces a token every step. */
    uint32_t first = full.tokens[0], forced_id = 42;
    float ban = -100.0f, force = 100.0f, nan = NAN;
    uint32_t outside = 1u << 30;
    EXPECT_ERROR(liger_session_set_logit_bias(banned, &outside, &ban, 1),
                 LIGER_ERROR_INVALID_ARGUMENT);
    EXPECT_ERROR(liger_session_set_logit_bias(banned, &first, &nan, 1),
                 LIGER_ERROR_INVALID_ARGUMENT);
    EXPECT_ERROR(liger_session_set_logit_bias(banned, NULL, &ban, 1), LIGER_ERROR_NULL);
    CHECK(liger_session_set_logit_bias(banned, &first, &ban, 1) == LIGER_OK);
    Collected other = {0}, all_forced = {0};
    CHECK(liger_session_generate(banned, NULL, 1, collect, &other, &n) == LIGER_OK);
    CHECK(other.n == 1 && other.tokens[0] != first);
    CHECK(liger_session_set_logit_bias(forced, &forced_id, &force, 1) == LIGER_OK);
    CHECK(liger_session_generate(forced, NULL, 3, collect, &all_forced, &n) == LIGER_OK);
    CHECK(all_forced.n == 3 && all_forced.tokens[0] == forced_id &&
          all_forced.tokens[1] == forced_id && all_forced.tokens[2] == forced_id);
    CHECK(liger_session_free(plain) == LIGER_OK && liger_session_free(cut) == LIGER_OK &&
          liger_session_free(banned) == LIGER_OK && liger_session_free(forced) == LIGER_OK);
    CHECK(liger_session_free(s) == LIGER_OK);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL PROMPT_IDS GREEDY_IDS [TOKENIZER_MODEL]\n", argv[0]);
        return 2;
    }
    n_prompt = parse_ids(argv[2], prompt);
    n_greedy = parse_ids(argv[3], greedy);
    CHECK(liger_abi_version() == LIGER_ABI_VERSION);
    CHECK(liger_version() != NULL && liger_version()[0] != '\0');
    CHECK(liger_last_error() != NULL);

    test_loading_errors(argv[1]);
    LigerModelOptions o;
    liger_model_options_default(&o);
    o.threads = 1; /* valgrind runs threads one at a time: spinning workers only cost time */
    o.decode_mode = LIGER_DECODE_HF_COMPAT;
    LigerModel *model = NULL, *window_model = NULL;
    CHECK(liger_model_load(argv[1], &o, &model) == LIGER_OK);
    o.decode_mode = LIGER_DECODE_WINDOW;
    o.use_mmap = 0; /* read into memory: the same model */
    CHECK(liger_model_load(argv[1], &o, &window_model) == LIGER_OK);
    if (model && window_model) {
        test_handles(model);
        test_session(model, window_model);
        test_sessions_decode(model);
        test_threads(model);
    }
    CHECK(liger_model_free(window_model) == LIGER_OK);
    CHECK(liger_model_free(model) == LIGER_OK);
    EXPECT_ERROR(liger_model_free(model), LIGER_ERROR_INVALID_HANDLE);
    if (argc > 4) test_text(argv[4]);
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("capi_test: all checks passed\n");
    return 0;
}
