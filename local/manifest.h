/* manifest.h — Knative Service manifests (serving.knative.dev/v1, YAML,
 * several documents per file) read for the local platform.
 *
 * Each document becomes a JSON tree (jansson) plus a map from each field's
 * dotted path ("spec.template.spec.containers[0].command") to its line, so
 * that every complaint names the file, the line and the field. Plain
 * scalars become numbers, booleans or null the way YAML 1.1 reads them;
 * quoted scalars stay strings.
 *
 * What is checked here is what the platform needs to run a revision:
 * apiVersion/kind, metadata.name, exactly one container with a `command`
 * (a local process: `image` is kept for the cluster and ignored), numbers
 * where numbers belong, and a traffic block whose percents add up to 100.
 *
 * Ownership: manifest_load fills an array the caller frees with
 * manifest_free. */
#ifndef LOCAL_MANIFEST_H
#define LOCAL_MANIFEST_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* Limits checked here, so nothing is truncated later (pods.c sizes by them). */
#define MANIFEST_MAX_ARGS 63  /* words of command + args */
#define MANIFEST_MAX_ENV  100 /* env entries of the container */

struct svc_doc {
    char file[256];
    int line; /* the document's first line */
    char name[64], ns[64];
    json_t *template; /* spec.template (owned) */
    json_t *traffic;  /* spec.traffic (owned) or NULL: 100% latest */
    json_t *lines;    /* dotted field path -> line (owned) */
};

/* Loads every document of every file, in order. False with a message in
 * err ("file:line: field: what is wrong") and nothing returned. */
bool manifest_load(const char *const *files, size_t nfiles, struct svc_doc **out, size_t *n,
                   char *err, size_t cap);
void manifest_free(struct svc_doc *docs, size_t n);
/* A manifest loaded so far carried Knative's config-network ConfigMap with
 * system-internal-tls: enabled (read by `coldbrew run` at start, like
 * COLDBREW_INTERNAL_TLS=true). Such a document is not a service. */
extern bool manifest_internal_tls;
/* The line of a field of the document (or of its nearest parent that has one). */
int manifest_line(const struct svc_doc *d, const char *path);

/* Parses YAML text into JSON documents (exposed for the fuzz target and
 * tests). Returns the number of documents or -1 with err set. */
int manifest_parse_yaml(const char *name, const unsigned char *text, size_t len, json_t **docs,
                        json_t **lines, int max_docs, char *err, size_t cap);

#endif
