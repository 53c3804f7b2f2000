/* SRTP for the SFU's native fast path on OpenSSL's libcrypto (visavis.sfu._fastpath).
 *
 * Exactly the two profiles the SFU negotiates, with libsrtp2's behaviour for a session
 * created with an "any SSRC" template, window_size 1024 and allow_repeat_tx (what the
 * pure-Python twin asks of pylibsrtp), so the bytes out are identical:
 *   SRTP_AEAD_AES_128_GCM (RFC 7714): 16-byte tag, 12-byte salt;
 *   SRTP_AES128_CM_HMAC_SHA1_80 (RFC 3711): AES-128 counter mode, 10-byte HMAC-SHA1 tag.
 * Keys come from the RFC 3711 AES-CM PRF (KDR 0). Per SSRC: the RTP index (ROC, RFC 3711
 * s3.3.1) with a 1024-packet replay window, and the SRTCP index with a 128-packet one.
 * Header extensions are authenticated, never encrypted (no RFC 6904). One cipher
 * context per session and direction, reused for every packet (no per-packet set-up).
 *
 * Return values are libsrtp2's srtp_err_status_t codes. The caller's buffer must have
 * VV_SRTP_MAX_TRAILER bytes of room after the packet for protect.
 */
#ifndef VISAVIS_SFU_SRTP_H
#define VISAVIS_SFU_SRTP_H

#define VV_SRTP_PROFILE_AES128_CM_SHA1_80 1 /* libsrtp2's srtp_profile_t values */
#define VV_SRTP_PROFILE_AEAD_AES_128_GCM 7
#define VV_SRTP_MAX_TRAILER 20 /* GCM tag (16) + SRTCP index (4) */

enum {
    VV_SRTP_OK = 0,
    VV_SRTP_BAD_PARAM = 2,
    VV_SRTP_ALLOC_FAIL = 3,
    VV_SRTP_INIT_FAIL = 5,
    VV_SRTP_AUTH_FAIL = 7,
    VV_SRTP_CIPHER_FAIL = 8,
    VV_SRTP_REPLAY_FAIL = 9,
    VV_SRTP_REPLAY_OLD = 10,
    VV_SRTP_CANT_CHECK = 14,
    VV_SRTP_KEY_EXPIRED = 15,
    VV_SRTP_PARSE_ERR = 21,
};

typedef struct vv_srtp vv_srtp_t;

/* Master key + salt length of a profile (30 for AES-CM, 28 for AES-GCM), -1 if unknown. */
int vv_srtp_key_length(int profile);
/* A session from the master key + salt; NULL with *status set on failure. */
vv_srtp_t *vv_srtp_create(int profile, const unsigned char *key, int *status);
/* Frees the session, wiping its keys. */
void vv_srtp_free(vv_srtp_t *s);

int vv_srtp_protect(vv_srtp_t *s, unsigned char *pkt, int *len);
int vv_srtp_unprotect(vv_srtp_t *s, unsigned char *pkt, int *len);
int vv_srtp_protect_rtcp(vv_srtp_t *s, unsigned char *pkt, int *len);
int vv_srtp_unprotect_rtcp(vv_srtp_t *s, unsigned char *pkt, int *len);

/* The RFC 3711 AES-CM PRF (KDR 0): `length` (<= 64) bytes for `label` from a master key
 * (16 bytes) and salt (`salt_len` <= 14 bytes, zero-padded). For test vectors. */
int vv_srtp_kdf(const unsigned char *master_key, const unsigned char *master_salt,
                int salt_len, int label, unsigned char *out, int length);

#endif
