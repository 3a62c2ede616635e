/*
 * A TFLite external delegate library for the edge-agent tests: it stands where
 * libedgetpu would (model.edgetpu_library) and is loaded through the runtime's real
 * load_delegate(library, options). Its Prepare claims no node, so the CPU kernels run
 * the model. It behaves as asked: option "mode" (else the DEFAULT_MODE it was built
 * with) is "ok", "fail" (creation returns NULL with an error), "abort" (abort() while
 * loading, as libedgetpu does on USB errors) or "hang" (never returns).
 * $EDGE_AGENT_TEST_DELEGATE_LOG names a file it appends its calls to.
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef DEFAULT_MODE
#define DEFAULT_MODE "ok"
#endif

typedef struct TfLiteContext TfLiteContext;
typedef int TfLiteStatus; /* kTfLiteOk = 0 */

/*
 * TfLiteDelegate of tensorflow/lite/core/c/common.h, as in tflite-runtime 2.14 and
 * LiteRT: its fields are only ever appended to, and a runtime reads only the fields it
 * knows, so a zeroed struct with the known prefix and spare room fits both.
 */
typedef struct TfLiteDelegate {
    void *data_;
    TfLiteStatus (*Prepare)(TfLiteContext *context, struct TfLiteDelegate *delegate);
    void *CopyFromBufferHandle;
    void *CopyToBufferHandle;
    void *FreeBufferHandle;
    int64_t flags; /* kTfLiteDelegateFlagsNone */
    void *opaque_delegate_builder; /* NULL: the runtime calls Prepare */
    char spare[64];
} TfLiteDelegate;

static void log_line(const char *what, const char *detail) {
    const char *path = getenv("EDGE_AGENT_TEST_DELEGATE_LOG");
    FILE *f;
    if (path == NULL || (f = fopen(path, "a")) == NULL) return;
    fprintf(f, "%s%s%s\n", what, detail[0] ? " " : "", detail);
    fclose(f);
}

static TfLiteStatus prepare(TfLiteContext *context, TfLiteDelegate *delegate) {
    (void)context;
    (void)delegate;
    log_line("prepare", "");
    return 0;
}

/* The external delegate ABI; the Python runtimes pass the option count as a C int. */
TfLiteDelegate *tflite_plugin_create_delegate(char **keys, char **values, int count,
                                              void (*report_error)(const char *)) {
    const char *mode = DEFAULT_MODE;
    char options[512] = "";
    char message[640];
    TfLiteDelegate *delegate;
    int i;
    for (i = 0; i < count; i++) {
        size_t used = strlen(options);
        if (strcmp(keys[i], "mode") == 0) {
            mode = values[i];
            continue;
        }
        snprintf(options + used, sizeof options - used, "%s%s=%s", used ? " " : "", keys[i],
                 values[i]);
    }
    snprintf(message, sizeof message, "mode=%s%s%s", mode, options[0] ? " " : "", options);
    log_line("create", message);
    if (strcmp(mode, "abort") == 0) abort();
    if (strcmp(mode, "hang") == 0) {
        for (;;) pause();
    }
    if (strcmp(mode, "ok") != 0) {
        snprintf(message, sizeof message, "edge-agent test delegate refused to load (%s)",
                 options[0] ? options : "no options");
        if (report_error != NULL) report_error(message);
        return NULL;
    }
    delegate = calloc(1, sizeof *delegate);
    if (delegate == NULL) return NULL;
    delegate->Prepare = prepare;
    return delegate;
}

void tflite_plugin_destroy_delegate(TfLiteDelegate *delegate) {
    if (delegate == NULL) return; /* a runtime may destroy what failed to create */
    log_line("destroy", "");
    free(delegate);
}
