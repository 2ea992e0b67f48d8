/*
 * textenc -- how keys (arbitrary bytes) are shown: escaped text and base64.
 */
#ifndef KD_TEXTENC_H
#define KD_TEXTENC_H

#include <stddef.h>

/*
 * The key as printable text: bytes 0x20..0x7e as they are (with '\\' and
 * '"' backslash-escaped), everything else as \xNN. Returns a malloc'd string.
 */
char *text_escape(const void *buf, size_t len);
/* Standard base64 with padding; a malloc'd string. */
char *text_base64(const void *buf, size_t len);
/* Decodes standard base64 into a malloc'd buffer (*outlen bytes); NULL if malformed. */
char *text_unbase64(const char *s, size_t len, size_t *outlen);

#endif
