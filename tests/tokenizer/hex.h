/* hex.h: the parity corpus and the NFC vectors write text as hex (so that any bytes, invalid
 * UTF-8 included, fit on a line); the programs that read them share this. */
#ifndef PEFT_TESTS_HEX_H
#define PEFT_TESTS_HEX_H

#include <stddef.h>
#include <stdio.h>

/* s[0..n) as hex pairs into out (n / 2 bytes at most); the bytes written. */
static inline size_t unhex(const char *s, size_t n, char *out) {
    size_t k = 0;
    for (size_t i = 0; i + 1 < n; i += 2) {
        unsigned v;
        if (sscanf(s + i, "%2x", &v) != 1) break;
        out[k++] = (char)v;
    }
    return k;
}

#endif
