/* manifest.c — see manifest.h. libyaml builds the node graph; we walk it. */
#include "manifest.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#include "core/err.h"

#define MAX_DOCS       256
#define MAX_FILE_BYTES (4u << 20)
#define MAX_DEPTH      64

/* ---------------------------------------------------------------- YAML -> JSON */

static json_t *scalar(const yaml_node_t *n)
{
    const char *v = (const char *)n->data.scalar.value;
    size_t len = n->data.scalar.length;
    if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return json_stringn(v, len);
    if (!len || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") || !strcmp(v, "NULL"))
        return json_null();
    if (!strcmp(v, "true") || !strcmp(v, "True") || !strcmp(v, "TRUE"))
        return json_true();
    if (!strcmp(v, "false") || !strcmp(v, "False") || !strcmp(v, "FALSE"))
        return json_false();
    char *end;
    errno = 0;
    long long i = strtoll(v, &end, 10);
    if (*end == 0 && errno == 0 && end != v)
        return json_integer(i);
    double d = strtod(v, &end);
    if (*end == 0 && end != v && strspn(v, "0123456789.eE+-") == len)
        return json_real(d);
    return json_stringn(v, len);
}

static json_t *convert(yaml_document_t *doc, yaml_node_t *n, const char *path, json_t *lines,
                       int depth)
{
    if (!n || depth > MAX_DEPTH)
        return json_null();
    json_object_set_new(lines, path[0] ? path : "$",
                        json_integer((json_int_t)n->start_mark.line + 1));
    char sub[1024];
    switch (n->type) {
    case YAML_SCALAR_NODE:
        return scalar(n);
    case YAML_SEQUENCE_NODE: {
        json_t *a = json_array();
        int i = 0;
        for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
             it++, i++) {
            snprintf(sub, sizeof sub, "%s[%d]", path, i);
            json_array_append_new(
                a, convert(doc, yaml_document_get_node(doc, *it), sub, lines, depth + 1));
        }
        return a;
    }
    case YAML_MAPPING_NODE: {
        json_t *o = json_object();
        for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top;
             p++) {
            yaml_node_t *k = yaml_document_get_node(doc, p->key);
            if (!k || k->type != YAML_SCALAR_NODE)
                continue;
            const char *key = (const char *)k->data.scalar.value;
            snprintf(sub, sizeof sub, "%s%s%s", path, path[0] ? "." : "", key);
            json_object_set_new(
                o, key, convert(doc, yaml_document_get_node(doc, p->value), sub, lines, depth + 1));
        }
        return o;
    }
    default:
        return json_null();
    }
}

int manifest_parse_yaml(const char *name, const unsigned char *text, size_t len, json_t **docs,
                        json_t **lines, int max_docs, char *err, size_t cap)
{
    yaml_parser_t parser;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_string(&parser, text, len);
    int n = 0;
    for (;;) {
        yaml_document_t doc;
        if (!yaml_parser_load(&parser, &doc)) {
            snprintf(err, cap, "%s:%zu: YAML: %s%s%s", name, parser.problem_mark.line + 1,
                     parser.problem ? parser.problem : "does not parse", parser.context ? " " : "",
                     parser.context ? parser.context : "");
            yaml_parser_delete(&parser);
            for (int i = 0; i < n; i++) {
                json_decref(docs[i]);
                json_decref(lines[i]);
            }
            return -1;
        }
        yaml_node_t *root = yaml_document_get_root_node(&doc);
        if (!root) {
            yaml_document_delete(&doc);
            break;
        }
        if (n == max_docs) {
            snprintf(err, cap, "%s: more than %d documents", name, max_docs);
            yaml_document_delete(&doc);
            yaml_parser_delete(&parser);
            for (int i = 0; i < n; i++) {
                json_decref(docs[i]);
                json_decref(lines[i]);
            }
            return -1;
        }
        lines[n] = json_object();
        docs[n] = convert(&doc, root, "", lines[n], 0);
        n++;
        yaml_document_delete(&doc);
    }
    yaml_parser_delete(&parser);
    return n;
}

/* ---------------------------------------------------------------- checks */

struct ctx {
    const char *file;
    json_t *lines;
    char *err;
    size_t cap;
};

/* The line of `path`, or of its nearest parent that has one. */
static int lines_lookup(json_t *lines, const char *path)
{
    char p[1024];
    snprintf(p, sizeof p, "%s", path);
    for (;;) {
        json_t *l = json_object_get(lines, p[0] ? p : "$");
        if (l)
            return (int)json_integer_value(l);
        char *cut = strrchr(p, '.');
        char *br = strrchr(p, '[');
        if (br && (!cut || br > cut))
            cut = br;
        if (!cut) {
            if (!p[0])
                return 1;
            p[0] = 0;
            continue;
        }
        *cut = 0;
    }
}

static int line_of(const struct ctx *c, const char *path)
{
    return lines_lookup(c->lines, path);
}

int manifest_line(const struct svc_doc *d, const char *path)
{
    return lines_lookup(d->lines, path);
}

static bool fail(const struct ctx *c, const char *path, const char *what)
{
    snprintf(c->err, c->cap, "%s:%d: %s: %s", c->file, line_of(c, path), path, what);
    return false;
}

static json_t *at(json_t *root, const char *path)
{
    char p[512];
    snprintf(p, sizeof p, "%s", path);
    json_t *cur = root;
    for (char *save, *t = strtok_r(p, ".", &save); t && cur; t = strtok_r(NULL, ".", &save)) {
        char *br = strchr(t, '[');
        if (br) {
            *br = 0;
            cur = json_object_get(cur, t);
            cur = json_array_get(cur, (size_t)atoi(br + 1));
        } else {
            cur = json_object_get(cur, t);
        }
    }
    return cur;
}

static bool want_int(const struct ctx *c, json_t *root, const char *path, long lo, long hi)
{
    json_t *v = at(root, path);
    if (!v)
        return true;
    if (!json_is_integer(v))
        return fail(c, path, "must be a whole number");
    long x = (long)json_integer_value(v);
    if (x < lo || x > hi) {
        char what[96];
        snprintf(what, sizeof what, "must be between %ld and %ld", lo, hi);
        return fail(c, path, what);
    }
    return true;
}

static bool check_service(const struct ctx *c, json_t *d, struct svc_doc *out)
{
    const char *av = json_string_value(json_object_get(d, "apiVersion"));
    const char *kind = json_string_value(json_object_get(d, "kind"));
    if (!json_is_object(d))
        return fail(c, "", "a document must be a mapping (a Knative Service)");
    if (!av || strcmp(av, "serving.knative.dev/v1"))
        return fail(c, "apiVersion", "must be serving.knative.dev/v1");
    if (!kind || strcmp(kind, "Service"))
        return fail(c, "kind", "must be Service");
    const char *name = json_string_value(at(d, "metadata.name"));
    if (!name || !*name)
        return fail(c, "metadata.name", "is required");
    if (strlen(name) > 50 || strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(name))
        return fail(c, "metadata.name", "must be a DNS label of at most 50 characters");
    const char *ns = json_string_value(at(d, "metadata.namespace"));
    if (ns &&
        (strlen(ns) > 63 || strspn(ns, "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(ns)))
        return fail(c, "metadata.namespace", "must be a DNS label");
    json_t *cs = at(d, "spec.template.spec.containers");
    if (!json_is_array(cs) || json_array_size(cs) == 0)
        return fail(c, "spec.template.spec.containers", "one container is required");
    if (json_array_size(cs) > 1)
        return fail(c, "spec.template.spec.containers[1]",
                    "only one container per revision runs locally (sidecars are not supported)");
    json_t *cmd = at(d, "spec.template.spec.containers[0].command");
    if (!json_is_array(cmd) || json_array_size(cmd) == 0)
        return fail(c, "spec.template.spec.containers[0].command",
                    "is required locally: the process to run (image is ignored here)");
    size_t i;
    json_t *v;
    char path[160];
    json_array_foreach(cmd, i, v) if (!json_is_string(v))
    {
        snprintf(path, sizeof path, "spec.template.spec.containers[0].command[%zu]", i);
        return fail(c, path, "must be a string");
    }
    json_t *args = at(d, "spec.template.spec.containers[0].args");
    if (args && !json_is_array(args))
        return fail(c, "spec.template.spec.containers[0].args", "must be a list");
    json_array_foreach(args, i, v) if (!json_is_string(v))
    {
        snprintf(path, sizeof path, "spec.template.spec.containers[0].args[%zu]", i);
        return fail(c, path, "must be a string");
    }
    if (json_array_size(cmd) + json_array_size(args) > MANIFEST_MAX_ARGS) {
        snprintf(path, sizeof path, "at most %d words of command and args together",
                 MANIFEST_MAX_ARGS);
        return fail(c, "spec.template.spec.containers[0].command", path);
    }
    if (json_array_size(at(d, "spec.template.spec.containers[0].env")) > MANIFEST_MAX_ENV) {
        snprintf(path, sizeof path, "at most %d variables", MANIFEST_MAX_ENV);
        return fail(c, "spec.template.spec.containers[0].env", path);
    }
    json_array_foreach(at(d, "spec.template.spec.containers[0].env"), i, v)
    {
        snprintf(path, sizeof path, "spec.template.spec.containers[0].env[%zu].name", i);
        if (!json_is_string(json_object_get(v, "name")))
            return fail(c, path, "is required");
    }
    if (!want_int(c, d, "spec.template.spec.containerConcurrency", 0, 1000) ||
        !want_int(c, d, "spec.template.spec.timeoutSeconds", 1, 3600) ||
        !want_int(c, d, "spec.template.spec.responseStartTimeoutSeconds", 0, 3600) ||
        !want_int(c, d, "spec.template.spec.idleTimeoutSeconds", 0, 3600) ||
        !want_int(c, d, "spec.template.spec.containers[0].ports[0].containerPort", 1, 65535))
        return false;
    json_t *ann = at(d, "spec.template.metadata.annotations");
    const char *k;
    json_object_foreach(ann, k, v)
    {
        if (!json_is_string(v)) {
            snprintf(path, sizeof path, "spec.template.metadata.annotations.%s", k);
            return fail(c, path, "annotation values must be quoted strings");
        }
    }
    json_t *traffic = at(d, "spec.traffic");
    if (traffic) {
        long sum = 0;
        if (!json_is_array(traffic))
            return fail(c, "spec.traffic", "must be a list");
        json_array_foreach(traffic, i, v)
        {
            snprintf(path, sizeof path, "spec.traffic[%zu]", i);
            json_t *pct = json_object_get(v, "percent");
            bool latest = json_is_true(json_object_get(v, "latestRevision"));
            const char *rn = json_string_value(json_object_get(v, "revisionName"));
            if (!latest && !rn)
                return fail(c, path, "needs revisionName or latestRevision: true");
            if (pct && (!json_is_integer(pct) || json_integer_value(pct) < 0 ||
                        json_integer_value(pct) > 100)) {
                snprintf(path, sizeof path, "spec.traffic[%zu].percent", i);
                return fail(c, path, "must be a whole number from 0 to 100");
            }
            sum += pct ? (long)json_integer_value(pct) : 0;
        }
        if (sum != 100)
            return fail(c, "spec.traffic", "percents must add up to 100");
    }
    snprintf(out->name, sizeof out->name, "%s", name);
    snprintf(out->ns, sizeof out->ns, "%s", ns ? ns : "default");
    out->template = json_incref(at(d, "spec.template"));
    out->traffic = traffic ? json_incref(traffic) : NULL;
    out->line = line_of(c, "");
    out->lines = json_incref(c->lines);
    snprintf(out->file, sizeof out->file, "%s", c->file);
    return true;
}

bool manifest_internal_tls;

/* Knative's config-network ConfigMap (knative-serving, or no namespace):
 * only system-internal-tls is read here; true when the document is one. */
static bool config_network(json_t *d)
{
    const char *kind = json_string_value(json_object_get(d, "kind"));
    const char *name = json_string_value(at(d, "metadata.name"));
    if (!kind || strcmp(kind, "ConfigMap") || !name || strcmp(name, "config-network"))
        return false;
    const char *v = json_string_value(at(d, "data.system-internal-tls"));
    if (v && !strcasecmp(v, "enabled"))
        manifest_internal_tls = true;
    return true;
}

bool manifest_load(const char *const *files, size_t nfiles, struct svc_doc **out, size_t *nout,
                   char *err, size_t cap)
{
    struct svc_doc *docs = NULL;
    size_t n = 0;
    for (size_t f = 0; f < nfiles; f++) {
        FILE *fp = fopen(files[f], "rb");
        if (!fp) {
            snprintf(err, cap, "%s: %s", files[f], strerror(errno));
            goto bad;
        }
        /* Also read by a running platform (apply): memory short is this
         * load's error, not the process's end (alloc.h). */
        unsigned char *text = malloc(MAX_FILE_BYTES + 1);
        if (!text) {
            fclose(fp);
            snprintf(err, cap, "%s: %s", files[f], coldbrew_err_no_memory);
            goto bad;
        }
        size_t len = fread(text, 1, MAX_FILE_BYTES + 1, fp);
        fclose(fp);
        if (len > MAX_FILE_BYTES) {
            snprintf(err, cap, "%s: larger than %u bytes", files[f], MAX_FILE_BYTES);
            free(text);
            goto bad;
        }
        json_t *jd[MAX_DOCS], *jl[MAX_DOCS];
        int k = manifest_parse_yaml(files[f], text, len, jd, jl, MAX_DOCS, err, cap);
        free(text);
        if (k < 0)
            goto bad;
        bool ok = true;
        for (int i = 0; i < k; i++) {
            /* config-network (system-internal-tls) is read, and is not a service. */
            bool service = ok && !config_network(jd[i]);
            struct svc_doc *more = service ? realloc(docs, (n + 1) * sizeof *docs) : NULL;
            if (service && !more) {
                snprintf(err, cap, "%s: %s", files[f], coldbrew_err_no_memory);
                ok = false;
            }
            if (service && ok) {
                docs = more;
                memset(&docs[n], 0, sizeof docs[n]);
                struct ctx c = {files[f], jl[i], err, cap};
                ok = check_service(&c, jd[i], &docs[n]);
                if (ok)
                    n++;
            }
            json_decref(jd[i]);
            json_decref(jl[i]);
        }
        if (!ok)
            goto bad;
        if (k == 0) {
            snprintf(err, cap, "%s: no documents", files[f]);
            goto bad;
        }
    }
    *out = docs;
    *nout = n;
    return true;
bad:
    manifest_free(docs, n);
    return false;
}

void manifest_free(struct svc_doc *docs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        json_decref(docs[i].template);
        json_decref(docs[i].traffic);
        json_decref(docs[i].lines);
    }
    free(docs);
}
