// peer-greedy: llama.cpp's greedy continuation with per-step top-k log-probabilities, as JSON.
//
//   peer-greedy MODEL N_PREDICT TOP_K ID,ID,... [N_THREADS]
//
// Built by scripts/peer-llamacpp against the peer's libllama. Why not the server's /completion with n_probs:
// the server drops the probabilities of tokens whose text is an incomplete UTF-8 sequence (byte tokens),
// which random-weight models emit often. This tool uses llama.cpp's default context settings (n_ctx 0 = the
// model's, flash attention auto, f16 KV cache), evaluates the prompt in one llama_decode call and then one
// token per call, like a single server slot. Log-probabilities are the log-softmax of the raw logits,
// computed in double. PEER_GREEDY_F32_KV=1 in the environment switches to an f32 KV cache without flash
// attention (for checking the float64 reference, not for fixtures). Greedy = argmax (lowest id on exact ties). Stops after N_PREDICT tokens or after an
// end-of-generation token (which is included).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama.h"

static void quiet(enum ggml_log_level level, const char *text, void *user) {
    (void)level; (void)text; (void)user;
}

static int parse_ids(const char *s, llama_token **out) {
    int cap = 16, n = 0;
    llama_token *ids = malloc(sizeof(llama_token) * cap);
    const char *p = s;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p) { free(ids); return -1; }
        if (n == cap) { cap *= 2; ids = realloc(ids, sizeof(llama_token) * cap); }
        ids[n++] = (llama_token)v;
        p = end;
        if (*p == ',') p++;
        else if (*p) { free(ids); return -1; }
    }
    *out = ids;
    return n;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s MODEL N_PREDICT TOP_K ID,ID,... [N_THREADS]\n", argv[0]);
        return 2;
    }
    const char *path = argv[1];
    int n_predict = atoi(argv[2]);
    int top_k = atoi(argv[3]);
    int n_threads = argc > 5 ? atoi(argv[5]) : 2;
    llama_token *prompt = NULL;
    int n_prompt = parse_ids(argv[4], &prompt);
    if (n_prompt <= 0 || n_predict < 0 || top_k <= 0) {
        fprintf(stderr, "peer-greedy: bad arguments\n");
        return 2;
    }

    llama_log_set(quiet, NULL);
    llama_backend_init();
    struct llama_model *model = llama_model_load_from_file(path, llama_model_default_params());
    if (!model) { fprintf(stderr, "peer-greedy: cannot load %s\n", path); return 1; }
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);
    for (int i = 0; i < n_prompt; i++) {
        if (prompt[i] < 0 || prompt[i] >= n_vocab) { fprintf(stderr, "peer-greedy: id %d out of range\n", prompt[i]); return 2; }
    }
    struct llama_context_params cp = llama_context_default_params();
    const int n_train = llama_model_n_ctx_train(model);
    cp.n_ctx = n_train > 0 && n_train < 4096 ? (uint32_t)n_train : 4096;  // like the reference server's -c 4096
    cp.n_threads = n_threads;
    if (getenv("PEER_GREEDY_F32_KV")) {
        // Validation mode: f32 KV cache, no flash attention, to see how close llama.cpp gets without them.
        cp.type_k = GGML_TYPE_F32;
        cp.type_v = GGML_TYPE_F32;
        cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    }
    cp.n_threads_batch = n_threads;
    if (cp.n_batch < (uint32_t)n_prompt) cp.n_batch = n_prompt;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "peer-greedy: cannot create a context\n"); return 1; }

    double *lp = malloc(sizeof(double) * n_vocab);
    int *best = malloc(sizeof(int) * top_k);
    printf("{\"prompt_ids\":[");
    for (int i = 0; i < n_prompt; i++) printf(i ? ",%d" : "%d", prompt[i]);
    printf("],\"steps\":[");
    const char *stop = "limit";
    llama_token next = 0;
    for (int step = 0; step < n_predict; step++) {
        struct llama_batch batch = step == 0 ? llama_batch_get_one(prompt, n_prompt) : llama_batch_get_one(&next, 1);
        if (llama_decode(ctx, batch) != 0) { fprintf(stderr, "peer-greedy: llama_decode failed\n"); return 1; }
        const float *logits = llama_get_logits_ith(ctx, -1);
        double mx = -INFINITY;
        for (int v = 0; v < n_vocab; v++) if (logits[v] > mx) mx = logits[v];
        double sum = 0;
        for (int v = 0; v < n_vocab; v++) sum += exp((double)logits[v] - mx);
        double lse = mx + log(sum);
        for (int v = 0; v < n_vocab; v++) lp[v] = (double)logits[v] - lse;
        int k = top_k < n_vocab ? top_k : n_vocab;
        for (int j = 0; j < k; j++) {  // selection of the k best, descending, lowest id first on ties
            int b = -1;
            for (int v = 0; v < n_vocab; v++) {
                int taken = 0;
                for (int t = 0; t < j; t++) if (best[t] == v) { taken = 1; break; }
                if (taken) continue;
                if (b < 0 || lp[v] > lp[b]) b = v;
            }
            best[j] = b;
        }
        next = best[0];
        printf("%s{\"id\":%d,\"logprob\":%.17g,\"top\":[", step ? "," : "", next, lp[next]);
        for (int j = 0; j < k; j++) printf("%s[%d,%.17g]", j ? "," : "", best[j], lp[best[j]]);
        printf("]}");
        if (llama_vocab_is_eog(vocab, next)) { stop = "eos"; break; }
    }
    printf("],\"stop_type\":\"%s\"}\n", stop);
    free(lp); free(best); free(prompt);
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
