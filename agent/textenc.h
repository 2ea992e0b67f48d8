/*
 * textenc -- how keys (arbitrary bytes) are shown: escaped text and base64.
 */
#ifndef KD_TEXTENC_H
#define KD_TEXTENC_H

#include <stddef.h>

/*
 * A key as text for people, the one form keydrift shows keys in (check,
 * history, the API, the status page): printable ASCII as it is, a backslash
 * as "\\", any other byte as \xNN, so the text maps back to exactly one
 * key. Returns a malloc'd string (the caller frees it), NULL when out of memory.
 */
char *text_escape(const void *buf, size_t len);
/*
 * Reverses text_escape into out (at most outsz bytes; *outlen gets the
 * length): 0, or -1 when the text is not in that form or too long.
 */
int text_unescape(const char *text, void *out, size_t outsz, size_t *outlen);
/* Standard base64 with padding; a malloc'd string. */
char *text_base64(const void *buf, size_t len);
/* Decodes standard base64 into a malloc'd buffer (*outlen bytes); NULL if malformed. */
char *text_unbase64(const char *s, size_t len, size_t *outlen);

#endif
