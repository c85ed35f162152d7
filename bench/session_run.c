/* Times SavedModel signatures through TensorFlow's C API: TF_LoadSessionFromSavedModel (the same
 * loader as TF Serving's) and TF_SessionRun (Session::Run with tensor names, as TF Serving's
 * Predict calls it), with no Python around the call. Built and driven by bench/c_session.py;
 * bench/serving_trained.py times every export with it beside the Python Session.
 *
 * Usage: session_run PLAN. PLAN is a text file, one directive a line, in this order:
 *   config HEX                      a serialized ConfigProto (thread pools), hex-encoded
 *   model EXPORT_DIR                a SavedModel, loaded with the "serve" tag (models count 0, 1..)
 *   call LABEL MODEL INPUT OUTPUT…  a signature: its history input and every output, "op:index"
 *   histories PATH USERS WIDTH      USERS x WIDTH raw ids, one a line ("" = padding)
 *   blocks LABEL POSITION           that call's output POSITION is blocks_executed [B] int32
 *   batch B REPS                    time every call REPS times at batch size B (plus 3 warm-up
 *                                   rounds), interleaved, cycling through the users B at a time
 * Prints, per batch: "times B LABEL ns ns …" for each call and "blocks B SUM COUNT".
 * Any error: a message on stderr naming the directive or the call, and exit status 1.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tensorflow/c/c_api.h"
#include "tensorflow/c/tf_tstring.h"

#define MAX_MODELS 8
#define MAX_CALLS 16
#define MAX_OUTPUTS 16
#define WARMUP 3

typedef struct {
  TF_Graph *graph;
  TF_Session *session;
} Model;

typedef struct {
  char label[64];
  int model;
  TF_Output input;
  TF_Output outputs[MAX_OUTPUTS];
  int num_outputs;
  int blocks_position; /* -1: none */
} Call;

static void die(const char *what, const char *detail) {
  fprintf(stderr, "session_run: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
  exit(1);
}

static void check(TF_Status *status, const char *what) {
  if (TF_GetCode(status) != TF_OK) die(what, TF_Message(status));
}

static TF_Output tensor(Model *model, const char *name) {
  char op[512];
  const char *colon = strrchr(name, ':');
  size_t length = colon ? (size_t)(colon - name) : strlen(name);
  if (length >= sizeof op) die("tensor name too long", name);
  memcpy(op, name, length);
  op[length] = '\0';
  TF_Operation *operation = TF_GraphOperationByName(model->graph, op);
  if (!operation) die("no such operation in the graph", name);
  TF_Output out = {operation, colon ? atoi(colon + 1) : 0};
  return out;
}

static int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  die("config: not a hex digit", NULL);
  return 0;
}

static double now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return 1e9 * (double)t.tv_sec + (double)t.tv_nsec;
}

/* A [batch, width] string tensor of users first..first+batch-1. */
static TF_Tensor *history_tensor(char **ids, int first, int batch, int width) {
  int64_t dims[2] = {batch, width};
  size_t count = (size_t)batch * (size_t)width;
  TF_Tensor *t = TF_AllocateTensor(TF_STRING, dims, 2, count * sizeof(TF_TString));
  TF_TString *data = (TF_TString *)TF_TensorData(t);
  for (size_t i = 0; i < count; ++i) {
    const char *id = ids[(size_t)first * (size_t)width + i];
    TF_TString_Init(&data[i]);
    TF_TString_Copy(&data[i], id, strlen(id));
  }
  return t;
}

int main(int argc, char **argv) {
  if (argc != 2) die("usage: session_run PLAN", NULL);
  FILE *plan = fopen(argv[1], "r");
  if (!plan) die("cannot open the plan", argv[1]);
  TF_Status *status = TF_NewStatus();
  TF_SessionOptions *options = TF_NewSessionOptions();
  Model models[MAX_MODELS];
  Call calls[MAX_CALLS];
  int num_models = 0, num_calls = 0, users = 0, width = 0;
  char **ids = NULL;
  char *line = NULL;
  size_t capacity = 0;

  while (getline(&line, &capacity, plan) > 0) {
    line[strcspn(line, "\n")] = '\0';
    char *word = strtok(line, " ");
    if (!word) continue;
    if (!strcmp(word, "config")) {
      char *hex = strtok(NULL, " ");
      if (!hex || strlen(hex) % 2) die("config: expected an even number of hex digits", NULL);
      size_t n = strlen(hex) / 2;
      unsigned char *bytes = malloc(n);
      for (size_t i = 0; i < n; ++i) bytes[i] = (unsigned char)(16 * hex_value(hex[2 * i]) +
                                                               hex_value(hex[2 * i + 1]));
      TF_SetConfig(options, bytes, n, status);
      check(status, "config: TF_SetConfig");
      free(bytes);
    } else if (!strcmp(word, "model")) {
      char *dir = strtok(NULL, "");
      if (!dir || num_models == MAX_MODELS) die("model: expected one EXPORT_DIR (at most 8)", dir);
      const char *tags[] = {"serve"};
      models[num_models].graph = TF_NewGraph();
      models[num_models].session = TF_LoadSessionFromSavedModel(
          options, NULL, dir, tags, 1, models[num_models].graph, NULL, status);
      check(status, dir);
      ++num_models;
    } else if (!strcmp(word, "call")) {
      if (num_calls == MAX_CALLS) die("call: at most 16 calls", NULL);
      Call *call = &calls[num_calls];
      char *label = strtok(NULL, " "), *model = strtok(NULL, " "), *input = strtok(NULL, " ");
      if (!label || !model || !input) die("call: expected LABEL MODEL INPUT OUTPUT...", label);
      snprintf(call->label, sizeof call->label, "%s", label);
      call->model = atoi(model);
      if (call->model < 0 || call->model >= num_models) die("call: no such model", label);
      call->input = tensor(&models[call->model], input);
      call->num_outputs = 0;
      call->blocks_position = -1;
      for (char *out; (out = strtok(NULL, " "));) {
        if (call->num_outputs == MAX_OUTPUTS) die("call: at most 16 outputs", label);
        call->outputs[call->num_outputs++] = tensor(&models[call->model], out);
      }
      if (!call->num_outputs) die("call: no outputs", label);
      ++num_calls;
    } else if (!strcmp(word, "histories")) {
      char *path = strtok(NULL, " "), *u = strtok(NULL, " "), *w = strtok(NULL, " ");
      if (!path || !u || !w) die("histories: expected PATH USERS WIDTH", NULL);
      users = atoi(u);
      width = atoi(w);
      FILE *f = fopen(path, "r");
      if (!f || users <= 0 || width <= 0) die("histories: cannot read", path);
      ids = calloc((size_t)users * (size_t)width, sizeof *ids);
      char *id = NULL;
      size_t id_capacity = 0;
      for (size_t i = 0; i < (size_t)users * (size_t)width; ++i) {
        if (getline(&id, &id_capacity, f) < 0) die("histories: fewer than USERS x WIDTH lines", path);
        id[strcspn(id, "\n")] = '\0';
        ids[i] = strdup(id);
      }
      free(id);
      fclose(f);
    } else if (!strcmp(word, "blocks")) {
      char *label = strtok(NULL, " "), *position = strtok(NULL, " ");
      int found = 0;
      for (int c = 0; c < num_calls && label && position; ++c) {
        if (!strcmp(calls[c].label, label)) {
          calls[c].blocks_position = atoi(position);
          found = calls[c].blocks_position >= 0 && calls[c].blocks_position < calls[c].num_outputs;
        }
      }
      if (!found) die("blocks: expected the LABEL of a call and one of its output positions", label);
    } else if (!strcmp(word, "batch")) {
      char *b = strtok(NULL, " "), *r = strtok(NULL, " ");
      int batch = b ? atoi(b) : 0, reps = r ? atoi(r) : 0;
      if (batch <= 0 || reps <= 0 || !ids || batch > users || !num_calls)
        die("batch: expected B REPS, B <= USERS, after the histories and the calls", b);
      int groups = users / batch;
      TF_Tensor **inputs = malloc((size_t)groups * sizeof *inputs);
      for (int g = 0; g < groups; ++g) inputs[g] = history_tensor(ids, g * batch, batch, width);
      double *times = malloc((size_t)num_calls * (size_t)reps * sizeof *times);
      long blocks = 0, rows = 0;
      for (int round = 0; round < reps + WARMUP; ++round) {
        TF_Tensor *input = inputs[round % groups];
        for (int c = 0; c < num_calls; ++c) {
          Call *call = &calls[c];
          TF_Tensor *outputs[MAX_OUTPUTS] = {0};
          double start = now_ns();
          TF_SessionRun(models[call->model].session, NULL, &call->input, &input, 1,
                        call->outputs, outputs, call->num_outputs, NULL, 0, NULL, status);
          double elapsed = now_ns() - start;
          check(status, call->label);
          if (round >= WARMUP) {
            times[(size_t)c * (size_t)reps + (size_t)(round - WARMUP)] = elapsed;
            if (call->blocks_position >= 0) {
              TF_Tensor *b = outputs[call->blocks_position];
              const int32_t *value = (const int32_t *)TF_TensorData(b);
              for (int64_t i = 0; i < TF_Dim(b, 0); ++i) blocks += value[i];
              rows += TF_Dim(b, 0);
            }
          }
          for (int o = 0; o < call->num_outputs; ++o) TF_DeleteTensor(outputs[o]);
        }
      }
      for (int c = 0; c < num_calls; ++c) {
        printf("times %d %s", batch, calls[c].label);
        for (int i = 0; i < reps; ++i) printf(" %.0f", times[(size_t)c * (size_t)reps + (size_t)i]);
        printf("\n");
      }
      printf("blocks %d %ld %ld\n", batch, blocks, rows);
      fflush(stdout);
      for (int g = 0; g < groups; ++g) TF_DeleteTensor(inputs[g]);
      free(inputs);
      free(times);
    } else {
      die("unknown directive", word);
    }
  }
  for (int m = 0; m < num_models; ++m) {
    TF_CloseSession(models[m].session, status);
    TF_DeleteSession(models[m].session, status);
    TF_DeleteGraph(models[m].graph);
  }
  TF_DeleteSessionOptions(options);
  TF_DeleteStatus(status);
  free(line);
  fclose(plan);
  return 0;
}
