/* tls_ctx.h — TLS contexts for Knative's system-internal TLS (OpenSSL 3).
 *
 * Building blocks only: this module makes and rotates SSL_CTXs and SSL
 * objects; it never touches sockets beyond SSL_set_fd. The listeners
 * (queue-proxy 8112, activator 8112) and the activator's upstream pools call
 * it and drive the non-blocking handshake with tls_ctx_handshake().
 *
 * Server side (struct tls_ctx_server): the certificate and key come from PEM
 * files (Knative mounts them at /var/lib/knative/certs/tls.{crt,key}). TLS
 * 1.3 minimum unless told otherwise; ALPN offers h2 and http/1.1 (h2 when the
 * client offers it); session tickets on, no server-side session cache (every
 * resumption is a stateless ticket, so memory does not grow with clients);
 * SSL_MODE_RELEASE_BUFFERS so an idle connection holds no record buffers.
 *
 * Rotation invariants:
 *   - Files are re-read every interval (tls_ctx_server_watch, Knative's
 *     certificate watcher checks every minute) and compared by the SHA-256 of
 *     their bytes, never by mtime.
 *   - New content builds a NEW SSL_CTX; the old one is released, and every
 *     SSL made from it keeps it alive (OpenSSL refcounts the SSL_CTX), so
 *     existing connections are untouched and only new ones see the new
 *     certificate.
 *   - Content that does not make a valid context (garbage, key not matching
 *     the certificate, an expired certificate) keeps the current context and
 *     logs why, once per distinct content.
 *   - Ticket keys are carried over, so tickets issued before a rotation still
 *     resume after it; they are replaced every COLDBREW_TLS_TICKET_KEY_LIFETIME
 *     (24 h, Go's rotation period) by a context rebuilt from the same files.
 *
 * Client side (struct tls_ctx_client, activator -> queue-proxy): SNI and the
 * verified name are `data-plane.knative.dev`; the leaf must also carry the DNS
 * SAN `kn-user-<namespace>` (exact, namespace lower-cased, as Knative's
 * verifySAN does over cs.PeerCertificates[0].DNSNames). The trust store is
 * built from PEM (the routing secret's ca.crt plus trust-bundle ConfigMaps)
 * and can be rebuilt at any time: each new SSL takes a reference to the
 * store current at its creation; handshakes already running keep theirs.
 * A rebuild also flushes the session cache (those sessions were verified
 * under the old trust).
 *
 * Sessions (client): a direct-mapped cache of one SSL_SESSION per
 * (namespace, destination). A colliding key replaces the slot: bounded memory,
 * no LRU bookkeeping; a miss costs one full handshake.
 *
 * Single-threaded like the rest of coldbrew: call everything from the loop. */
#ifndef COLDBREW_TLS_CTX_H
#define COLDBREW_TLS_CTX_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/types.h>

struct event_base;

#define TLS_CTX_DEFAULT_CERT_FILE   "/var/lib/knative/certs/tls.crt"
#define TLS_CTX_DEFAULT_KEY_FILE    "/var/lib/knative/certs/tls.key"
#define TLS_CTX_DATA_PLANE_NAME     "data-plane.knative.dev"
#define TLS_CTX_USER_SAN_PREFIX     "kn-user-"
#define TLS_CTX_RELOAD_INTERVAL_MS  60000u     /* COLDBREW_TLS_RELOAD_INTERVAL (Go duration) */
#define TLS_CTX_MAX_PEM_BYTES       (1u << 20) /* COLDBREW_TLS_MAX_PEM_BYTES */
#define TLS_CTX_SESSION_CACHE_SLOTS 1024u      /* COLDBREW_TLS_SESSION_CACHE */

/* Which application protocol a connection negotiated. */
enum tls_alpn {
    TLS_ALPN_NONE,   /* the client sent no ALPN: speak HTTP/1.1 */
    TLS_ALPN_HTTP11, /* "http/1.1" */
    TLS_ALPN_H2,     /* "h2" */
};

/* "1.2" -> TLS1_2_VERSION, "1.3" -> TLS1_3_VERSION (the values Knative's
 * *_TLS_MIN_VERSION / *_TLS_MAX_VERSION accept). False for anything else. */
bool tls_ctx_parse_version(const char *s, int *version);

/* Knative's TLS settings from the environment (knative.dev/pkg/network/tls
 * DefaultConfigFromEnv): <prefix>TLS_MIN_VERSION, TLS_MAX_VERSION ("1.2" or
 * "1.3"), TLS_CIPHER_SUITES (Go's suite names, comma separated) and
 * TLS_CURVE_PREFERENCES (X25519, CurveP256/P-256, CurveP384/P-384,
 * CurveP521/P-521), prefix "QUEUE_PROXY_" or "ACTIVATOR_". Names are
 * translated to OpenSSL's into `store`, which must outlive the options.
 * Spaces around names and empty items are ignored; an unknown name is an
 * error (Knative exits on it), and so is X25519MLKEM768, which OpenSSL 3.0
 * cannot do. Go ignores cipher suites for TLS 1.3 and so do we. */
struct tls_ctx_env {
    char ciphers[768];
    char groups[96];
};
struct tls_ctx_server_opts;
bool tls_ctx_opts_from_env(const char *prefix, struct tls_ctx_server_opts *o,
                           struct tls_ctx_env *store, char *err, size_t cap);

/* Drives SSL_do_handshake once. 1 done, 0 call again when the socket is
 * readable (or writable if SSL_want_write(ssl)), -1 failed: *why is a static
 * reason ("peer certificate expired", ...). Clears OpenSSL's error queue. */
int tls_ctx_handshake(SSL *ssl, const char **why);

/* The protocol ALPN settled on (either side, after the handshake). */
enum tls_alpn tls_ctx_alpn(const SSL *ssl);

/* ---------------------------------------------------------------- server */

struct tls_ctx_server_opts {
    const char *cert_file; /* NULL: TLS_CTX_DEFAULT_CERT_FILE */
    const char *key_file;  /* NULL: TLS_CTX_DEFAULT_KEY_FILE */
    int min_version;       /* 0: TLS 1.3 (Knative's default minimum) */
    int max_version;       /* 0: the highest OpenSSL knows */
    const char *ciphers;   /* OpenSSL TLS <= 1.2 cipher list; NULL: OpenSSL's default */
    const char *groups;    /* e.g. "X25519:P-256"; NULL: OpenSSL's default */
    size_t max_pem_bytes;  /* 0: COLDBREW_TLS_MAX_PEM_BYTES or TLS_CTX_MAX_PEM_BYTES; larger
                            * files are refused (a reason and a log line say so) */
    /* Client certificates (METRICS_PROMETHEUS_TLS_CLIENT_AUTH / _CLIENT_CA_FILE;
     * the 8112 listeners ask for none). The CA file is re-read and hashed with
     * the pair, so its rotation is picked up too. */
    enum tls_client_auth {
        TLS_CLIENT_AUTH_NONE,     /* "" or "none" */
        TLS_CLIENT_AUTH_OPTIONAL, /* "optional": verified if given (Go's VerifyClientCertIfGiven) */
        TLS_CLIENT_AUTH_REQUIRE,  /* "require": RequireAndVerifyClientCert */
    } client_auth;
    const char *client_ca_file; /* required unless client_auth is NONE */
    /* The pair as bytes instead of files (the activator's, from the routing
     * secret: its image has a read-only root and nowhere to write files).
     * Both set: the file names are only labels for logs. */
    const char *cert_pem, *key_pem;
    size_t cert_pem_len, key_pem_len;
};

/* Knative's values for METRICS_PROMETHEUS_TLS_CLIENT_AUTH: "", "none",
 * "optional", "require", any case, spaces around ignored. */
bool tls_ctx_parse_client_auth(const char *s, enum tls_client_auth *out);

struct tls_ctx_server;

/* Loads the files and builds the first context. NULL with *why (static)
 * when they do not make a valid context. The options' strings are copied. */
struct tls_ctx_server *tls_ctx_server_new(const struct tls_ctx_server_opts *o, const char **why);
/* A new SSL on the current context, in accept state, reading and writing fd.
 * The caller owns it (SSL_free); NULL on allocation failure. */
SSL *tls_ctx_server_accept(struct tls_ctx_server *s, int fd);
/* The current context (borrowed; valid until the next reload). */
SSL_CTX *tls_ctx_server_ctx(struct tls_ctx_server *s);

enum tls_ctx_reload {
    TLS_CTX_RELOAD_UNCHANGED, /* same bytes as the current context */
    TLS_CTX_RELOAD_SWAPPED,   /* new context in place for new connections */
    TLS_CTX_RELOAD_KEPT,      /* new bytes refused; *why says why; old context kept */
};
/* A server made from bytes (cert_pem/key_pem): new bytes, then a reload
 * with the same rules as a file change (kept when they are no valid pair). */
enum tls_ctx_reload tls_ctx_server_set_pem(struct tls_ctx_server *s, const char *crt, size_t clen,
                                           const char *key, size_t klen, const char **why);
/* Re-reads the files now (what the timer calls). */
enum tls_ctx_reload tls_ctx_server_reload(struct tls_ctx_server *s, const char **why);
/* How many contexts were swapped in since creation (for logs and tests). */
unsigned tls_ctx_server_generation(const struct tls_ctx_server *s);
/* Checks the files every interval_ms on a libevent timer of `base`; 0:
 * COLDBREW_TLS_RELOAD_INTERVAL (a Go duration, for tests that cannot wait)
 * or one minute. False if the timer could not be made. */
bool tls_ctx_server_watch(struct tls_ctx_server *s, struct event_base *base, unsigned interval_ms);
/* Stops the timer and drops the module's reference to the context;
 * connections still open keep theirs. */
void tls_ctx_server_free(struct tls_ctx_server *s);

/* METRICS_PROMETHEUS_TLS_CERT / _KEY (both set: TLS on the Prometheus
 * port), _CLIENT_AUTH, _CLIENT_CA_FILE and METRICS_PROMETHEUS_TLS_MIN_VERSION
 * etc., as Knative's observability config reads them: a server watched on
 * `base`. NULL with *configured false when the variables ask for no TLS;
 * NULL with *configured true and *err when they are wrong. */
struct tls_ctx_server *tls_ctx_metrics_from_env(struct event_base *base, bool *configured,
                                                char *err, size_t cap);

/* ---------------------------------------------------------------- client */

struct tls_ctx_client_opts {
    const char *server_name; /* NULL: TLS_CTX_DATA_PLANE_NAME (SNI and verified name) */
    int min_version;         /* 0: TLS 1.3 (Knative's client minimum) */
    int max_version;         /* 0: the highest */
    size_t session_slots;    /* 0: COLDBREW_TLS_SESSION_CACHE or TLS_CTX_SESSION_CACHE_SLOTS */
};

struct tls_ctx_client;

/* A client with an empty trust store: every handshake fails as "not signed
 * by a trusted CA" until tls_ctx_client_set_trust() succeeds. */
struct tls_ctx_client *tls_ctx_client_new(const struct tls_ctx_client_opts *o, const char **why);

/* One PEM source of CA certificates. */
struct tls_ctx_pem {
    const char *data;
    size_t len;
    const char *origin; /* for logs: "secret routing-serving-certs ca.crt", a ConfigMap name */
};
/* Builds a new trust store from every certificate in the sources and swaps
 * it in for new handshakes. A source without a certificate is skipped with a
 * warning (Go's AppendCertsFromPEM skips what it cannot parse). Returns the
 * number of certificates now trusted; 0 with *why when none could be read,
 * in which case the previous store stays. */
int tls_ctx_client_set_trust(struct tls_ctx_client *c, const struct tls_ctx_pem *srcs, size_t n,
                             const char **why);
/* The same from files (the CA file and bundle files); unreadable files are
 * skipped with a warning like unparsable ones. */
int tls_ctx_client_set_trust_files(struct tls_ctx_client *c, const char *const *files, size_t n,
                                   const char **why);

/* A new SSL in connect state on fd for a pod of `ns`, offering `alpn`
 * (TLS_ALPN_NONE: no ALPN extension). `dest` ("10.0.0.7:8112") keys the
 * session cache together with ns; a cached session is offered for
 * resumption. The caller owns the SSL (SSL_free). NULL on allocation failure
 * or a namespace longer than 63 bytes (a DNS label). */
SSL *tls_ctx_client_connect(struct tls_ctx_client *c, int fd, const char *ns, const char *dest,
                            enum tls_alpn alpn);
/* Drops every cached session (also done by set_trust). */
void tls_ctx_client_flush_sessions(struct tls_ctx_client *c);
/* How many sessions the cache holds now (for tests and metrics). */
size_t tls_ctx_client_cached_sessions(const struct tls_ctx_client *c);
void tls_ctx_client_free(struct tls_ctx_client *c);

#endif
