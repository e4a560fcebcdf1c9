// OpenSSL 3 headers plus the few calls Swift cannot import because they are
// macros. Each wrapper is prefixed `berth_` and does nothing but forward.
#ifndef BERTH_COPENSSL_SHIM_H
#define BERTH_COPENSSL_SHIM_H
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>
#include <openssl/bio.h>
#include <openssl/pem.h>

static inline long berth_SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version) {
    return SSL_CTX_set_min_proto_version(ctx, version);
}
static inline long berth_SSL_CTX_set_mode(SSL_CTX *ctx, long mode) {
    return SSL_CTX_set_mode(ctx, mode);
}
static inline long berth_SSL_set_tlsext_host_name(SSL *ssl, const char *name) {
    return SSL_set_tlsext_host_name(ssl, name);
}
static inline long berth_SSL_CTX_set_options(SSL_CTX *ctx, long opts) {
    return (long)SSL_CTX_set_options(ctx, (uint64_t)opts);
}
/* Option bits defined through SSL_OP_BIT(n), a function-like macro Swift does not import. */
static inline long berth_SSL_OP_NO_RENEGOTIATION(void) {
    return (long)SSL_OP_NO_RENEGOTIATION;
}
static inline long berth_SSL_OP_CIPHER_SERVER_PREFERENCE(void) {
    return (long)SSL_OP_CIPHER_SERVER_PREFERENCE;
}
static inline long berth_SSL_OP_NO_COMPRESSION(void) {
    return (long)SSL_OP_NO_COMPRESSION;
}
static inline long berth_SSL_OP_IGNORE_UNEXPECTED_EOF(void) {
    return (long)SSL_OP_IGNORE_UNEXPECTED_EOF;
}
#endif
