/* SRTP on OpenSSL's libcrypto for the SFU's native fast path: see _srtp.h.
 *
 * Why not libsrtp2: Debian's libsrtp2 is built on NSS, whose AES-GCM sets up a context
 * per packet (2.5-4 µs whatever the size, docs/sfu.md); here each session keeps one
 * EVP context per key (AES-NI, PCLMUL) and only its IV changes per packet.
 *
 * Behaviour follows libsrtp2 (2.5-2.7) step for step, so that the pure-Python twin
 * (pylibsrtp) and this path give the same bytes and the same refusals
 * (tests/sfu/test_srtp.py): streams are created per SSRC on first use (on protect at
 * once; on unprotect only once the packet authenticates), the RTP index is estimated as
 * srtp_rdbx_estimate_index does, a protect may repeat an index (NACK answers), the SRTCP
 * index of a sender starts at 1, RTCP and RTP of one SSRC share a stream. Not carried
 * over: MKI, the 2^48-packet key limit, RFC 6904 header encryption, the NULL and
 * 256-bit profiles (never negotiated), and a session holds at most MAX_STREAMS SSRCs
 * (libsrtp2 has no bound; past it a new SSRC is refused with VV_SRTP_ALLOC_FAIL).
 */
#include "_srtp.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define RTP_WINDOW 1024 /* window_size of the policy (bits) */
#define RTP_WORDS (RTP_WINDOW / 64)
#define RTCP_WINDOW 128 /* libsrtp2's rdb_bits_in_bitmask */
#define MAX_STREAMS 4096
#define CM_TAG 10
#define GCM_TAG 16
#define SEQ_MEDIAN 0x8000

typedef unsigned __int128 u128;

typedef struct {
    uint32_t ssrc;
    int used;
    uint64_t index;               /* highest RTP index accepted or sent: ROC << 16 | SEQ */
    uint64_t seen[RTP_WORDS];     /* ring: bit i % 1024 for index i of (index-1024, index] */
    uint32_t rtcp_start;          /* libsrtp2's rdb window_start (a sender's last index) */
    u128 rtcp_seen;               /* bit k: SRTCP index rtcp_start + k received */
} stream_t;

struct vv_srtp {
    int gcm;
    int tag_len;
    EVP_CIPHER_CTX *rtp_cipher, *rtcp_cipher; /* AES-128-GCM or AES-128-CTR, keyed once */
    EVP_MAC_CTX *rtp_mac, *rtcp_mac;          /* HMAC-SHA1, keyed once (AES-CM only) */
    unsigned char rtp_salt[14], rtcp_salt[14];
    stream_t *streams; /* open addressing on the SSRC, never shrinks (as libsrtp2) */
    unsigned cap, count, shift;
};

static inline unsigned rd16(const unsigned char *p) { return (unsigned)p[0] << 8 | p[1]; }
static inline uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void wr32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* ------------------------------------------------------------------ streams */
static inline unsigned slot_of(const vv_srtp_t *s, uint32_t ssrc) {
    return (unsigned)((uint32_t)(ssrc * 2654435761u) >> s->shift);
}

static stream_t *find_stream(vv_srtp_t *s, uint32_t ssrc) {
    unsigned mask = s->cap - 1;
    for (unsigned i = slot_of(s, ssrc);; i = (i + 1) & mask) {
        stream_t *st = &s->streams[i];
        if (!st->used) return NULL;
        if (st->ssrc == ssrc) return st;
    }
}

static int grow(vv_srtp_t *s) {
    unsigned cap = s->cap * 2, shift = s->shift - 1;
    stream_t *old = s->streams, *t = calloc(cap, sizeof *t);
    if (t == NULL) return -1;
    unsigned oldcap = s->cap;
    s->streams = t;
    s->cap = cap;
    s->shift = shift;
    for (unsigned i = 0; i < oldcap; i++) {
        if (!old[i].used) continue;
        unsigned j = slot_of(s, old[i].ssrc);
        while (t[j].used) j = (j + 1) & (cap - 1);
        t[j] = old[i];
    }
    OPENSSL_cleanse(old, oldcap * sizeof *old);
    free(old);
    return 0;
}

/* Adds a copy of `init` (not present); NULL if out of memory or past MAX_STREAMS. */
static stream_t *insert_stream(vv_srtp_t *s, const stream_t *init) {
    if (s->count >= MAX_STREAMS) return NULL;
    if (2 * (s->count + 1) > s->cap && grow(s) < 0) return NULL;
    unsigned i = slot_of(s, init->ssrc);
    while (s->streams[i].used) i = (i + 1) & (s->cap - 1);
    s->streams[i] = *init;
    s->streams[i].used = 1;
    s->count++;
    return &s->streams[i];
}

static inline void fresh_stream(stream_t *st, uint32_t ssrc) {
    memset(st, 0, sizeof *st);
    st->ssrc = ssrc;
}

/* ------------------------------------------------------------------ replay (rdbx, rdb) */
/* srtp_rdbx_estimate_index: the packet index of sequence number `seq` and its distance
 * from the highest index so far (RFC 3711 s3.3.1, with libsrtp2's ROC-0 start). */
static int32_t estimate(const stream_t *st, unsigned seq, uint64_t *est) {
    if (st->index > SEQ_MEDIAN) {
        uint32_t local_roc = (uint32_t)(st->index >> 16), roc;
        int local_seq = (int)(st->index & 0xFFFF), s = (int)seq;
        int32_t diff;
        if (local_seq < SEQ_MEDIAN) {
            if (s - local_seq > SEQ_MEDIAN) {
                roc = local_roc - 1;
                diff = s - local_seq - 0x10000;
            } else {
                roc = local_roc;
                diff = s - local_seq;
            }
        } else if (local_seq - SEQ_MEDIAN > s) {
            roc = local_roc + 1;
            diff = s - local_seq + 0x10000;
        } else {
            roc = local_roc;
            diff = s - local_seq;
        }
        *est = (uint64_t)roc << 16 | seq;
        return diff;
    }
    *est = seq;
    return (int32_t)seq - (int32_t)(uint16_t)st->index;
}

static inline int seen_bit(const stream_t *st, uint64_t i) {
    return (int)(st->seen[(i % RTP_WINDOW) >> 6] >> (i & 63) & 1);
}
static inline void set_seen(stream_t *st, uint64_t i) {
    st->seen[(i % RTP_WINDOW) >> 6] |= (uint64_t)1 << (i & 63);
}

/* srtp_rdbx_check */
static int rdbx_check(const stream_t *st, int32_t delta) {
    if (delta > 0) return VV_SRTP_OK;
    if (RTP_WINDOW - 1 + delta < 0) return VV_SRTP_REPLAY_OLD;
    if (seen_bit(st, st->index + (uint64_t)(int64_t)delta)) return VV_SRTP_REPLAY_FAIL;
    return VV_SRTP_OK;
}

/* srtp_rdbx_add_index: the window as a ring instead of a shifted bit vector (same set). */
static void rdbx_add(stream_t *st, int32_t delta) {
    if (delta > 0) {
        if (delta >= RTP_WINDOW) {
            memset(st->seen, 0, sizeof st->seen);
        } else {
            for (int32_t k = 1; k <= delta; k++) {
                uint64_t i = st->index + (uint64_t)k;
                st->seen[(i % RTP_WINDOW) >> 6] &= ~((uint64_t)1 << (i & 63));
            }
        }
        st->index += (uint16_t)delta;
        set_seen(st, st->index);
    } else {
        set_seen(st, st->index + (uint64_t)(int64_t)delta);
    }
}

/* srtp_rdb_check */
static int rdb_check(const stream_t *st, uint32_t idx) {
    if (idx >= st->rtcp_start + RTCP_WINDOW) return VV_SRTP_OK;
    if (idx < st->rtcp_start) return VV_SRTP_REPLAY_OLD;
    if ((st->rtcp_seen >> (idx - st->rtcp_start)) & 1) return VV_SRTP_REPLAY_FAIL;
    return VV_SRTP_OK;
}

/* srtp_rdb_add_index */
static void rdb_add(stream_t *st, uint32_t idx) {
    if (idx < st->rtcp_start) return;
    uint32_t delta = idx - st->rtcp_start;
    if (delta < RTCP_WINDOW) {
        st->rtcp_seen |= (u128)1 << delta;
    } else {
        delta -= RTCP_WINDOW - 1;
        st->rtcp_seen = delta > RTCP_WINDOW - 1 ? 0 : st->rtcp_seen >> delta;
        st->rtcp_seen |= (u128)1 << (RTCP_WINDOW - 1);
        st->rtcp_start += delta;
    }
}

/* ------------------------------------------------------------------ primitives */
static int gcm_seal(EVP_CIPHER_CTX *c, const unsigned char *iv, const unsigned char *aad,
                    int aad_len, const unsigned char *aad2, int aad2_len, unsigned char *data,
                    int len, unsigned char *tag) {
    int n;
    unsigned char end[16];
    if (EVP_CipherInit_ex(c, NULL, NULL, NULL, iv, 1) != 1 ||
        (aad_len > 0 && EVP_CipherUpdate(c, NULL, &n, aad, aad_len) != 1) ||
        (aad2_len > 0 && EVP_CipherUpdate(c, NULL, &n, aad2, aad2_len) != 1) ||
        (len > 0 && EVP_CipherUpdate(c, data, &n, data, len) != 1) ||
        EVP_CipherFinal_ex(c, end, &n) != 1 ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, GCM_TAG, tag) != 1)
        return VV_SRTP_CIPHER_FAIL;
    return VV_SRTP_OK;
}

/* Decrypts in place and checks the tag (OpenSSL compares it in constant time). */
static int gcm_open(EVP_CIPHER_CTX *c, const unsigned char *iv, const unsigned char *aad,
                    int aad_len, const unsigned char *aad2, int aad2_len, unsigned char *data,
                    int len, const unsigned char *tag) {
    int n;
    unsigned char end[16];
    if (EVP_CipherInit_ex(c, NULL, NULL, NULL, iv, 0) != 1 ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, GCM_TAG, (void *)tag) != 1 ||
        (aad_len > 0 && EVP_CipherUpdate(c, NULL, &n, aad, aad_len) != 1) ||
        (aad2_len > 0 && EVP_CipherUpdate(c, NULL, &n, aad2, aad2_len) != 1) ||
        (len > 0 && EVP_CipherUpdate(c, data, &n, data, len) != 1))
        return VV_SRTP_CIPHER_FAIL;
    if (EVP_CipherFinal_ex(c, end, &n) <= 0) return VV_SRTP_AUTH_FAIL;
    return VV_SRTP_OK;
}

static int ctr_xor(EVP_CIPHER_CTX *c, const unsigned char *iv, unsigned char *data, int len) {
    int n;
    if (EVP_CipherInit_ex(c, NULL, NULL, NULL, iv, 1) != 1 ||
        (len > 0 && EVP_CipherUpdate(c, data, &n, data, len) != 1))
        return VV_SRTP_CIPHER_FAIL;
    return VV_SRTP_OK;
}

static int hmac(EVP_MAC_CTX *m, const unsigned char *a, size_t alen, const unsigned char *b,
                size_t blen, unsigned char *out) {
    size_t n;
    if (EVP_MAC_init(m, NULL, 0, NULL) != 1 || EVP_MAC_update(m, a, alen) != 1 ||
        (blen > 0 && EVP_MAC_update(m, b, blen) != 1) || EVP_MAC_final(m, out, &n, 20) != 1)
        return VV_SRTP_AUTH_FAIL;
    return VV_SRTP_OK;
}

/* AES-CM IV (RFC 3711 s4.1.1): salt XOR SSRC << 64 XOR index << 16. */
static inline void cm_iv(unsigned char iv[16], const unsigned char *salt, uint32_t ssrc,
                         uint64_t index) {
    memset(iv, 0, 16);
    wr32(iv + 4, ssrc);
    wr32(iv + 8, (uint32_t)(index >> 16));
    wr32(iv + 12, (uint32_t)(index << 16));
    for (int i = 0; i < 14; i++) iv[i] ^= salt[i];
}

/* AES-GCM IV (RFC 7714 s8.1, s9.1): salt XOR 00 00 | SSRC | a | b. */
static inline void gcm_iv(unsigned char iv[12], const unsigned char *salt, uint32_t ssrc,
                          uint32_t a, unsigned b, int b_bytes) {
    memset(iv, 0, 12);
    wr32(iv + 2, ssrc);
    if (b_bytes == 2) { /* RTP: ROC (4) | SEQ (2) */
        wr32(iv + 6, a);
        iv[10] = (unsigned char)(b >> 8);
        iv[11] = (unsigned char)b;
    } else { /* RTCP: 00 00 | SRTCP index (4) */
        wr32(iv + 8, (uint32_t)b);
    }
    for (int i = 0; i < 12; i++) iv[i] ^= salt[i];
}

/* srtp_validate_rtp_header: the header length (CSRCs, extension) or an error. */
static int rtp_header(const unsigned char *p, int len, int *hlen) {
    if (len < 12) return VV_SRTP_BAD_PARAM;
    int h = 12 + 4 * (p[0] & 0x0F);
    if (p[0] & 0x10) {
        h += 4;
        if (len < h) return VV_SRTP_BAD_PARAM;
        h += 4 * (int)rd16(p + h - 2);
    }
    if (len < h) return VV_SRTP_BAD_PARAM;
    *hlen = h;
    return VV_SRTP_OK;
}

/* ------------------------------------------------------------------ sessions */
int vv_srtp_key_length(int profile) {
    if (profile == VV_SRTP_PROFILE_AES128_CM_SHA1_80) return 30;
    if (profile == VV_SRTP_PROFILE_AEAD_AES_128_GCM) return 28;
    return -1;
}

int vv_srtp_kdf(const unsigned char *master_key, const unsigned char *master_salt,
                int salt_len, int label, unsigned char *out, int length) {
    unsigned char iv[16] = {0}, zero[64] = {0};
    int n, ok = 0;
    if (salt_len < 0 || salt_len > 14 || length < 0 || length > 64) return VV_SRTP_BAD_PARAM;
    memcpy(iv, master_salt, (size_t)salt_len);
    iv[7] ^= (unsigned char)label;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    if (c != NULL)
        ok = EVP_EncryptInit_ex(c, EVP_aes_128_ctr(), NULL, master_key, iv) == 1 &&
             EVP_EncryptUpdate(c, out, &n, zero, length) == 1;
    EVP_CIPHER_CTX_free(c);
    return ok ? VV_SRTP_OK : VV_SRTP_INIT_FAIL;
}

static EVP_CIPHER_CTX *keyed_cipher(const EVP_CIPHER *type, const unsigned char *key) {
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    if (c != NULL && EVP_EncryptInit_ex(c, type, NULL, key, NULL) != 1) {
        EVP_CIPHER_CTX_free(c);
        c = NULL;
    }
    return c;
}

static EVP_MAC_CTX *keyed_hmac(const unsigned char *key) {
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (mac == NULL) return NULL;
    EVP_MAC_CTX *m = EVP_MAC_CTX_new(mac);
    EVP_MAC_free(mac); /* the context keeps its own reference */
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA1", 0),
        OSSL_PARAM_construct_end()};
    if (m != NULL && EVP_MAC_init(m, key, 20, params) != 1) {
        EVP_MAC_CTX_free(m);
        m = NULL;
    }
    return m;
}

void vv_srtp_free(vv_srtp_t *s) {
    if (s == NULL) return;
    EVP_CIPHER_CTX_free(s->rtp_cipher); /* OpenSSL wipes the key schedules */
    EVP_CIPHER_CTX_free(s->rtcp_cipher);
    EVP_MAC_CTX_free(s->rtp_mac);
    EVP_MAC_CTX_free(s->rtcp_mac);
    if (s->streams != NULL) {
        OPENSSL_cleanse(s->streams, s->cap * sizeof *s->streams);
        free(s->streams);
    }
    OPENSSL_cleanse(s, sizeof *s);
    free(s);
}

vv_srtp_t *vv_srtp_create(int profile, const unsigned char *key, int *status) {
    int klen = vv_srtp_key_length(profile);
    if (klen < 0) {
        *status = VV_SRTP_BAD_PARAM;
        return NULL;
    }
    vv_srtp_t *s = calloc(1, sizeof *s);
    if (s == NULL) {
        *status = VV_SRTP_ALLOC_FAIL;
        return NULL;
    }
    s->gcm = profile == VV_SRTP_PROFILE_AEAD_AES_128_GCM;
    s->tag_len = s->gcm ? GCM_TAG : CM_TAG;
    int salt_len = klen - 16;
    s->cap = 8;
    s->shift = 32 - 3;
    s->streams = calloc(s->cap, sizeof *s->streams);
    /* session keys (RFC 3711 s4.3): labels 0-2 for SRTP, 3-5 for SRTCP */
    unsigned char k[6][20];
    int ok = s->streams != NULL;
    for (int label = 0; label < 6 && ok; label++) {
        int len = label % 3 == 0 ? 16 : label % 3 == 1 ? 20 : salt_len;
        if (s->gcm && label % 3 == 1) continue; /* GCM authenticates itself */
        ok = vv_srtp_kdf(key, key + 16, salt_len, label, k[label], len) == VV_SRTP_OK;
    }
    if (ok) {
        memcpy(s->rtp_salt, k[2], (size_t)salt_len);
        memcpy(s->rtcp_salt, k[5], (size_t)salt_len);
        const EVP_CIPHER *type = s->gcm ? EVP_aes_128_gcm() : EVP_aes_128_ctr();
        s->rtp_cipher = keyed_cipher(type, k[0]);
        s->rtcp_cipher = keyed_cipher(type, k[3]);
        ok = s->rtp_cipher != NULL && s->rtcp_cipher != NULL;
        if (ok && !s->gcm) {
            s->rtp_mac = keyed_hmac(k[1]);
            s->rtcp_mac = keyed_hmac(k[4]);
            ok = s->rtp_mac != NULL && s->rtcp_mac != NULL;
        }
    }
    OPENSSL_cleanse(k, sizeof k);
    if (!ok) {
        vv_srtp_free(s);
        *status = VV_SRTP_INIT_FAIL;
        return NULL;
    }
    *status = VV_SRTP_OK;
    return s;
}

/* ------------------------------------------------------------------ RTP */
int vv_srtp_protect(vv_srtp_t *s, unsigned char *p, int *len) {
    int hlen, rc = rtp_header(p, *len, &hlen);
    if (rc != VV_SRTP_OK) return rc;
    uint32_t ssrc = rd32(p + 8);
    stream_t *st = find_stream(s, ssrc);
    if (st == NULL) {
        stream_t fresh;
        fresh_stream(&fresh, ssrc);
        if ((st = insert_stream(s, &fresh)) == NULL) return VV_SRTP_ALLOC_FAIL;
    }
    uint64_t est;
    int32_t delta = estimate(st, rd16(p + 2), &est);
    rc = rdbx_check(st, delta);
    if (rc != VV_SRTP_OK && rc != VV_SRTP_REPLAY_FAIL) return rc; /* repeats allowed */
    rdbx_add(st, delta);
    int n = *len;
    if (s->gcm) {
        unsigned char iv[12];
        gcm_iv(iv, s->rtp_salt, ssrc, (uint32_t)(est >> 16), (unsigned)(est & 0xFFFF), 2);
        rc = gcm_seal(s->rtp_cipher, iv, p, hlen, NULL, 0, p + hlen, n - hlen, p + n);
    } else {
        unsigned char iv[16], roc[4], mac[20];
        cm_iv(iv, s->rtp_salt, ssrc, est);
        rc = ctr_xor(s->rtp_cipher, iv, p + hlen, n - hlen);
        wr32(roc, (uint32_t)(est >> 16));
        if (rc == VV_SRTP_OK && (rc = hmac(s->rtp_mac, p, (size_t)n, roc, 4, mac)) == VV_SRTP_OK)
            memcpy(p + n, mac, CM_TAG);
    }
    if (rc == VV_SRTP_OK) *len = n + s->tag_len;
    return rc;
}

int vv_srtp_unprotect(vv_srtp_t *s, unsigned char *p, int *len) {
    int hlen, rc = rtp_header(p, *len, &hlen);
    if (rc != VV_SRTP_OK) return rc;
    uint32_t ssrc = rd32(p + 8);
    stream_t fresh, *st = find_stream(s, ssrc);
    if (st == NULL) { /* libsrtp2's provisional (template) stream: ROC 0, no history */
        fresh_stream(&fresh, ssrc);
        st = &fresh;
    }
    uint64_t est;
    int32_t delta = estimate(st, rd16(p + 2), &est);
    if ((rc = rdbx_check(st, delta)) != VV_SRTP_OK) return rc;
    int n = *len, tag = s->tag_len;
    if (s->gcm) {
        /* libsrtp2's order and codes: a header past the tag is a parse error, a payload
         * shorter than the tag a cipher failure */
        if (n >= tag && hlen > n - tag) return VV_SRTP_PARSE_ERR;
        if (n - hlen < tag) return VV_SRTP_CIPHER_FAIL;
        unsigned char iv[12];
        gcm_iv(iv, s->rtp_salt, ssrc, (uint32_t)(est >> 16), (unsigned)(est & 0xFFFF), 2);
        rc = gcm_open(s->rtp_cipher, iv, p, hlen, NULL, 0, p + hlen, n - hlen - tag,
                      p + n - tag);
    } else {
        if (hlen > n - tag) return VV_SRTP_PARSE_ERR;
        unsigned char iv[16], roc[4], mac[20];
        wr32(roc, (uint32_t)(est >> 16));
        if ((rc = hmac(s->rtp_mac, p, (size_t)(n - tag), roc, 4, mac)) != VV_SRTP_OK) return rc;
        if (CRYPTO_memcmp(mac, p + n - tag, (size_t)tag) != 0) return VV_SRTP_AUTH_FAIL;
        cm_iv(iv, s->rtp_salt, ssrc, est);
        rc = ctr_xor(s->rtp_cipher, iv, p + hlen, n - tag - hlen);
    }
    if (rc != VV_SRTP_OK) return rc;
    if (st == &fresh && (st = insert_stream(s, &fresh)) == NULL) return VV_SRTP_ALLOC_FAIL;
    rdbx_add(st, delta);
    *len = n - tag;
    return VV_SRTP_OK;
}

/* ------------------------------------------------------------------ RTCP */
int vv_srtp_protect_rtcp(vv_srtp_t *s, unsigned char *p, int *len) {
    int n = *len, rc;
    if (n < 8) return VV_SRTP_BAD_PARAM;
    uint32_t ssrc = rd32(p + 4);
    stream_t *st = find_stream(s, ssrc);
    if (st == NULL) {
        stream_t fresh;
        fresh_stream(&fresh, ssrc);
        if ((st = insert_stream(s, &fresh)) == NULL) return VV_SRTP_ALLOC_FAIL;
    }
    if (st->rtcp_start >= 0x7fffffff) return VV_SRTP_KEY_EXPIRED;
    uint32_t idx = ++st->rtcp_start;
    unsigned char trailer[4];
    wr32(trailer, 0x80000000u | idx); /* E: always encrypted */
    if (s->gcm) {
        /* RFC 7714 s9: header | ciphertext | tag | E+index; AAD header and E+index */
        unsigned char iv[12];
        gcm_iv(iv, s->rtcp_salt, ssrc, 0, idx, 4);
        rc = gcm_seal(s->rtcp_cipher, iv, p, 8, trailer, 4, p + 8, n - 8, p + n);
        memcpy(p + n + GCM_TAG, trailer, 4);
    } else {
        /* RFC 3711 s3.4: header | ciphertext | E+index | tag */
        unsigned char iv[16], mac[20];
        cm_iv(iv, s->rtcp_salt, ssrc, idx);
        rc = ctr_xor(s->rtcp_cipher, iv, p + 8, n - 8);
        memcpy(p + n, trailer, 4);
        if (rc == VV_SRTP_OK && (rc = hmac(s->rtcp_mac, p, (size_t)n + 4, NULL, 0, mac)) == 0)
            memcpy(p + n + 4, mac, CM_TAG);
    }
    if (rc == VV_SRTP_OK) *len = n + s->tag_len + 4;
    return rc;
}

int vv_srtp_unprotect_rtcp(vv_srtp_t *s, unsigned char *p, int *len) {
    int n = *len, tag = s->tag_len, rc;
    if (n < 8 + 4) return VV_SRTP_BAD_PARAM;
    uint32_t ssrc = rd32(p + 4);
    stream_t fresh, *st = find_stream(s, ssrc);
    if (st == NULL) {
        fresh_stream(&fresh, ssrc);
        st = &fresh;
    }
    if (n < 8 + tag + 4) return VV_SRTP_BAD_PARAM;
    uint32_t idx;
    if (s->gcm) {
        const unsigned char *trailer = p + n - 4;
        idx = rd32(trailer) & 0x7fffffff;
        if ((rc = rdb_check(st, idx)) != VV_SRTP_OK) return rc;
        unsigned char iv[12];
        gcm_iv(iv, s->rtcp_salt, ssrc, 0, idx, 4);
        if (trailer[0] & 0x80)
            rc = gcm_open(s->rtcp_cipher, iv, p, 8, trailer, 4, p + 8, n - 8 - tag - 4,
                          p + n - 4 - tag);
        else /* RFC 7714 s9.3: unencrypted, the whole packet authenticated */
            rc = gcm_open(s->rtcp_cipher, iv, p, n - tag - 4, trailer, 4, NULL, 0,
                          p + n - 4 - tag);
        if (rc != VV_SRTP_OK) return rc;
    } else {
        const unsigned char *trailer = p + n - tag - 4;
        if (!(trailer[0] & 0x80)) return VV_SRTP_CANT_CHECK; /* we always encrypt */
        idx = rd32(trailer) & 0x7fffffff;
        if ((rc = rdb_check(st, idx)) != VV_SRTP_OK) return rc;
        unsigned char iv[16], mac[20];
        if ((rc = hmac(s->rtcp_mac, p, (size_t)(n - tag), NULL, 0, mac)) != VV_SRTP_OK)
            return rc;
        if (CRYPTO_memcmp(mac, p + n - tag, (size_t)tag) != 0) return VV_SRTP_AUTH_FAIL;
        cm_iv(iv, s->rtcp_salt, ssrc, idx);
        if ((rc = ctr_xor(s->rtcp_cipher, iv, p + 8, n - 8 - tag - 4)) != VV_SRTP_OK) return rc;
    }
    if (st == &fresh && (st = insert_stream(s, &fresh)) == NULL) return VV_SRTP_ALLOC_FAIL;
    rdb_add(st, idx);
    *len = n - tag - 4;
    return VV_SRTP_OK;
}
