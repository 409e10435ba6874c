/* Tests for common/http/h1_parser.c: heads over split buffers, body framing,
 * pipelining boundaries, limits and smuggling shapes. */
#include "unit.h"

#include <event2/buffer.h>
#include <stdio.h>

#include "http/h1_parser.h"

static struct evbuffer *buf_of(const char *s)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, s, strlen(s));
    return b;
}

static enum h1_result head_of(struct h1_parser *p, struct evbuffer *b, struct http_head *h)
{
    h1_parser_init(p, true, 8192, 100);
    h1_parser_begin(p, h);
    return h1_parse_head(p, b);
}

static void test_request_head(void **state)
{
    (void)state;
    struct h1_parser p;
    struct http_head *h = http_head_acquire();
    struct evbuffer *b =
        buf_of("GET /a?b=1 HTTP/1.1\r\nHost: example\r\nX-Thing:  padded  \r\n\r\nNEXT");
    assert_int_equal(head_of(&p, b, h), H1_HEAD);
    assert_int_equal(h->method, HTTP_GET);
    assert_int_equal(h->url.len, 6);
    assert_memory_equal(http_str_ptr(h, h->url), "/a?b=1", 6);
    size_t len;
    const char *v = http_head_get(h, "x-thing", &len);
    assert_non_null(v);
    assert_int_equal(len, 6);
    assert_memory_equal(v, "padded", 6);
    assert_true(h->keep_alive);
    /* The head is drained; the next message's bytes stay. */
    assert_int_equal(evbuffer_get_length(b), 4);
    size_t n;
    assert_int_equal(h1_parse_body(&p, b, 100, &n), H1_DONE);
    assert_int_equal(n, 0);
    evbuffer_free(b);
    http_head_release(h);
}

static void test_head_split_across_chunks(void **state)
{
    (void)state;
    const char *msg = "POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: "
                      "5\r\nX-Long-Header-Name: value\r\n\r\nhello";
    /* Feed one byte at a time: every split point must work. */
    struct h1_parser p;
    struct http_head *h = http_head_acquire();
    h1_parser_init(&p, true, 8192, 100);
    h1_parser_begin(&p, h);
    struct evbuffer *b = evbuffer_new();
    enum h1_result r = H1_NEED_MORE;
    size_t i = 0;
    for (; msg[i] && r == H1_NEED_MORE; i++) {
        evbuffer_add(b, msg + i, 1);
        r = h1_parse_head(&p, b);
    }
    assert_int_equal(r, H1_HEAD);
    size_t len;
    const char *v = http_head_get(h, "x-long-header-name", &len);
    assert_int_equal(len, 5);
    assert_memory_equal(v, "value", 5);
    assert_true(h->has_content_length);
    assert_int_equal(h->content_length, 5);
    evbuffer_add(b, msg + i, strlen(msg + i));
    size_t n;
    assert_int_equal(h1_parse_body(&p, b, 1000, &n), H1_DONE);
    assert_int_equal(n, 5);
    evbuffer_free(b);
    http_head_release(h);
}

static void test_chunked_body_verbatim_and_boundary(void **state)
{
    (void)state;
    struct h1_parser p;
    struct http_head *h = http_head_acquire();
    const char *body = "5\r\nhello\r\n0\r\nTrailer: x\r\n\r\n";
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n%sGET /next",
                        body);
    assert_int_equal(head_of(&p, b, h), H1_HEAD);
    assert_true(h->chunked);
    size_t n;
    /* Partial: only 4 bytes allowed */
    assert_int_equal(h1_parse_body(&p, b, 4, &n), H1_BODY);
    assert_int_equal(n, 4);
    evbuffer_drain(b, n);
    assert_int_equal(h1_parse_body(&p, b, 1000, &n), H1_DONE);
    assert_int_equal(n, strlen(body) - 4);
    assert_int_equal(p.body_bytes, 5);
    evbuffer_drain(b, n);
    assert_int_equal(evbuffer_get_length(b), 9); /* "GET /next" untouched */
    evbuffer_free(b);
    http_head_release(h);
}

static void expect_error(const char *msg, int status)
{
    struct h1_parser p;
    struct http_head *h = http_head_acquire();
    struct evbuffer *b = buf_of(msg);
    enum h1_result r = head_of(&p, b, h);
    if (r == H1_HEAD) {
        size_t n;
        r = h1_parse_body(&p, b, 1 << 20, &n);
    }
    assert_int_equal(r, H1_ERROR);
    assert_int_equal(p.err_status, status);
    evbuffer_free(b);
    http_head_release(h);
}

static void test_smuggling_shapes(void **state)
{
    (void)state;
    expect_error("POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
    expect_error("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400);
    expect_error("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n", 400);
    expect_error("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400);
    expect_error("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400);
    expect_error("GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400);
    expect_error("GET / HTTP/1.1\r\nA: b\nC: d\r\n\r\n", 400);
    expect_error("GARBAGE\r\n\r\n", 400);
}

static void test_limits(void **state)
{
    (void)state;
    char big[10000];
    int n = snprintf(big, sizeof big, "GET / HTTP/1.1\r\nX: ");
    memset(big + n, 'a', 9000);
    strcpy(big + n + 9000, "\r\n\r\n");
    expect_error(big, 431);
    char many[8000];
    n = snprintf(many, sizeof many, "GET / HTTP/1.1\r\n");
    for (int i = 0; i < 120; i++)
        n += snprintf(many + n, sizeof many - (size_t)n, "H%d: v\r\n", i);
    snprintf(many + n, sizeof many - (size_t)n, "\r\n");
    expect_error(many, 431);
}

static void test_response_head_request_and_eof(void **state)
{
    (void)state;
    struct h1_parser p;
    struct http_head *h = http_head_acquire();
    /* A response to HEAD announces a length but carries no body. */
    struct evbuffer *b =
        buf_of("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n");
    h1_parser_init(&p, false, 8192, 100);
    h1_parser_begin(&p, h);
    assert_int_equal(h1_parse_head(&p, b), H1_HEAD);
    assert_int_equal(h->status, 200);
    h1_parser_skip_body(&p);
    size_t n;
    assert_int_equal(h1_parse_body(&p, b, 1000, &n), H1_DONE);
    assert_int_equal(n, 0);
    /* Close-delimited body: EOF completes it. */
    struct evbuffer *c = buf_of("HTTP/1.1 200 OK\r\n\r\nsome bytes");
    h1_parser_begin(&p, h);
    h->len = 0;
    h->nheaders = 0;
    assert_int_equal(h1_parse_head(&p, c), H1_HEAD);
    assert_int_equal(h1_parse_body(&p, c, 1000, &n), H1_BODY);
    assert_int_equal(n, 10);
    assert_true(h1_parser_body_until_eof(&p));
    assert_true(h1_parser_eof_completes(&p));
    evbuffer_free(b);
    evbuffer_free(c);
    http_head_release(h);
}

static void test_truncated_body_is_not_complete(void **state)
{
    (void)state;
    struct h1_parser p;
    struct http_head *h = http_head_acquire();
    struct evbuffer *b = buf_of("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort");
    h1_parser_init(&p, false, 8192, 100);
    h1_parser_begin(&p, h);
    assert_int_equal(h1_parse_head(&p, b), H1_HEAD);
    size_t n;
    assert_int_equal(h1_parse_body(&p, b, 1000, &n), H1_BODY);
    assert_false(h1_parser_eof_completes(&p));
    evbuffer_free(b);
    http_head_release(h);
}

/* A reason set by our own callbacks is the one reported, also when
 * llhttp calls the failure a callback error (the *_complete callbacks). */
static void test_own_reason_survives(void **state)
{
    (void)state;
    struct h1_parser p;
    struct http_head *h = http_head_acquire();
    struct evbuffer *b = buf_of("GET / HTTP/1.1\r\nHost : a\r\n\r\n");
    assert_int_equal(head_of(&p, b, h), H1_ERROR);
    assert_string_equal(p.err, "whitespace in header name");
    assert_int_equal(p.err_status, 400);
    evbuffer_free(b);
    http_head_release(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_head),
        cmocka_unit_test(test_head_split_across_chunks),
        cmocka_unit_test(test_chunked_body_verbatim_and_boundary),
        cmocka_unit_test(test_smuggling_shapes),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_response_head_request_and_eof),
        cmocka_unit_test(test_truncated_body_is_not_complete),
        cmocka_unit_test(test_own_reason_survives),
    };
    int r = cmocka_run_group_tests_name("h1_parser", tests, NULL, NULL);
    http_head_pool_drain();
    return r;
}
