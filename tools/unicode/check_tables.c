/* check_tables.c: checks host/tokenizer/unicode_tables.c against the JavaScript engine's data.
 *
 * Not part of the build. Run from the repository's top, after the generator (which writes the
 * two /tmp dumps this reads):
 *
 *   node tools/unicode/gen_unicode_tables.mjs
 *   gcc -std=c11 -O2 -Wall -Wextra -Werror -Ihost/tokenizer -o /tmp/check_tables \
 *       tools/unicode/check_tables.c host/tokenizer/unicode_tables.c
 *   /tmp/check_tables [props.bin [nfd.txt [nfc_vectors.txt]]]
 *
 * Checks, for every code point: unicode_class and unicode_ccc_rank against the generator's dump
 * of /\p{L}/u etc. and of its ranks; unicode_decompose against normalize("NFD"). Then runs a
 * deliberately plain reference NFC built only on the four lookups against every line of
 * tests/tokenizer/nfc_vectors.txt, so that the tables are shown sufficient for an NFC that agrees
 * with normalize("NFC"). Prints counts and mismatches; exits 1 on any mismatch. */
#include "unicode.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CP 0x10FFFFu
#define MAX_REPORT 20 /* mismatches printed per check; all are counted */

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "check_tables: out of memory\n");
        exit(2);
    }
    return p;
}

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "check_tables: cannot open %s (run the generator first, from the top)\n",
                path);
        exit(2);
    }
    size_t cap = 1 << 20, n = 0;
    unsigned char *buf = xmalloc(cap + 1);
    for (;;) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        cap *= 2;
        unsigned char *grown = realloc(buf, cap + 1);
        if (!grown) {
            fprintf(stderr, "check_tables: out of memory\n");
            exit(2);
        }
        buf = grown;
    }
    fclose(f);
    buf[n] = 0; /* so text files can be parsed as strings */
    *len = n;
    return buf;
}

/* ---- per code point: class and rank ---------------------------------------------------------- */

static long check_props(const char *path) {
    size_t len;
    unsigned char *props = read_file(path, &len);
    if (len != 2 * ((size_t)MAX_CP + 1)) {
        fprintf(stderr, "check_tables: %s has %zu bytes, expected %zu\n", path, len,
                2 * ((size_t)MAX_CP + 1));
        exit(2);
    }
    long bad_class = 0, bad_rank = 0;
    for (uint32_t cp = 0; cp <= MAX_CP; cp++) {
        uint8_t c = unicode_class(cp), r = unicode_ccc_rank(cp);
        if (c != props[2 * cp] && bad_class++ < MAX_REPORT)
            printf("class mismatch U+%04X: got %u, JS %u\n", (unsigned)cp, c, props[2 * cp]);
        if (r != props[2 * cp + 1] && bad_rank++ < MAX_REPORT)
            printf("rank mismatch U+%04X: got %u, JS %u\n", (unsigned)cp, r, props[2 * cp + 1]);
    }
    /* Out of range values must have no class and no rank, not index past the tables. */
    const uint32_t beyond[] = {MAX_CP + 1, 0x7FFFFFFFu, 0xFFFFFFFFu};
    for (size_t i = 0; i < sizeof beyond / sizeof beyond[0]; i++)
        if (unicode_class(beyond[i]) || unicode_ccc_rank(beyond[i])) {
            printf("class/rank of 0x%X is not 0\n", (unsigned)beyond[i]);
            bad_class++;
        }
    printf("classes: %u code points, %ld mismatches\n", MAX_CP + 1, bad_class);
    printf("ccc ranks: %u code points, %ld mismatches\n", MAX_CP + 1, bad_rank);
    free(props);
    return bad_class + bad_rank;
}

/* ---- per code point: decomposition ---------------------------------------------------------- */

static long check_decompositions(const char *path) {
    size_t len;
    char *text = (char *)read_file(path, &len);
    size_t nlines = 1;
    for (size_t i = 0; i < len; i++) nlines += text[i] == '\n';
    /* expected[cp] = 1 + index into seqs, 0 when cp decomposes to itself; seqs[i] = {length,
     * code points...}. */
    uint32_t *expected = xmalloc(((size_t)MAX_CP + 1) * sizeof *expected);
    memset(expected, 0, ((size_t)MAX_CP + 1) * sizeof *expected);
    uint32_t(*seqs)[UNICODE_MAX_DECOMPOSITION + 1] = xmalloc(nlines * sizeof *seqs);
    size_t nseq = 0;
    long bad = 0, listed = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        char *end;
        unsigned long cp = strtoul(line, &end, 16);
        size_t n = 0;
        for (;;) {
            char *p = end;
            unsigned long d = strtoul(p, &end, 16);
            if (end == p) break;
            if (n == UNICODE_MAX_DECOMPOSITION) {
                printf("decomposition of U+%04lX longer than UNICODE_MAX_DECOMPOSITION\n", cp);
                bad++;
                break;
            }
            seqs[nseq][1 + n++] = (uint32_t)d;
        }
        if (cp > MAX_CP || n == 0) {
            fprintf(stderr, "check_tables: bad line in %s: %s\n", path, line);
            exit(2);
        }
        seqs[nseq][0] = (uint32_t)n;
        expected[cp] = (uint32_t)++nseq;
        listed++;
    }
    for (uint32_t cp = 0; cp <= MAX_CP; cp++) {
        if (cp >= 0xD800 && cp <= 0xDFFF) continue;
        uint32_t out[UNICODE_MAX_DECOMPOSITION];
        size_t n = unicode_decompose(cp, out);
        const uint32_t *want = expected[cp] ? seqs[expected[cp] - 1] : NULL;
        int ok = want ? n == want[0] && memcmp(out, want + 1, n * sizeof *out) == 0
                      : n == 1 && out[0] == cp;
        if (!ok && bad++ < MAX_REPORT) {
            printf("decomposition mismatch U+%04X: got", (unsigned)cp);
            for (size_t i = 0; i < n; i++) printf(" %04X", (unsigned)out[i]);
            printf("\n");
        }
    }
    printf("decompositions: %u code points (%ld decompose), %ld mismatches\n",
           MAX_CP + 1 - 0x800, listed, bad);
    free(seqs);
    free(expected);
    free(text);
    return bad;
}

/* ---- reference NFC ------------------------------------------------------------------------- */

/* Decodes UTF-8 known to be well formed (it comes from the generator); returns the count, or
 * (size_t)-1 on malformed input so a broken vector line is a reported failure, not a crash. */
static size_t utf8_decode(const unsigned char *s, size_t len, uint32_t *out) {
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        unsigned char b = s[i];
        size_t k = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
        if (k == 0 || i + k > len) return (size_t)-1;
        uint32_t cp = k == 1 ? b : (uint32_t)(b & (0x7F >> k));
        for (size_t j = 1; j < k; j++) {
            if ((s[i + j] & 0xC0) != 0x80) return (size_t)-1;
            cp = cp << 6 | (s[i + j] & 0x3F);
        }
        out[n++] = cp;
        i += k;
    }
    return n;
}

static size_t utf8_encode(const uint32_t *cps, size_t n, unsigned char *out) {
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = cps[i];
        if (c < 0x80) {
            out[len++] = (unsigned char)c;
        } else if (c < 0x800) {
            out[len++] = (unsigned char)(0xC0 | c >> 6);
            out[len++] = (unsigned char)(0x80 | (c & 0x3F));
        } else if (c < 0x10000) {
            out[len++] = (unsigned char)(0xE0 | c >> 12);
            out[len++] = (unsigned char)(0x80 | (c >> 6 & 0x3F));
            out[len++] = (unsigned char)(0x80 | (c & 0x3F));
        } else {
            out[len++] = (unsigned char)(0xF0 | c >> 18);
            out[len++] = (unsigned char)(0x80 | (c >> 12 & 0x3F));
            out[len++] = (unsigned char)(0x80 | (c >> 6 & 0x3F));
            out[len++] = (unsigned char)(0x80 | (c & 0x3F));
        }
    }
    return len;
}

/* NFC of in[0..n) into out (room for n * UNICODE_MAX_DECOMPOSITION); returns the length.
 * Written straight from UAX #15, without shortcuts, because it is the yardstick. */
static size_t reference_nfc(const uint32_t *in, size_t n, uint32_t *out) {
    /* 1. Full canonical decomposition. */
    size_t m = 0;
    for (size_t i = 0; i < n; i++) m += unicode_decompose(in[i], out + m);

    /* 2. Canonical ordering: stable sort of every run of non-starters by rank (insertion sort
     *    is stable, and the runs are short). */
    for (size_t i = 1; i < m; i++) {
        uint32_t c = out[i];
        uint8_t r = unicode_ccc_rank(c);
        if (r == 0) continue;
        size_t j = i;
        while (j > 0 && unicode_ccc_rank(out[j - 1]) > r) {
            out[j] = out[j - 1];
            j--;
        }
        out[j] = c;
    }

    /* 3. Canonical composition. C is blocked from the last starter L if some character left
     *    between them has rank 0 or a rank >= rank(C). */
    size_t len = 0, starter = (size_t)-1;
    for (size_t i = 0; i < m; i++) {
        uint32_t c = out[i];
        uint8_t r = unicode_ccc_rank(c);
        if (starter != (size_t)-1) {
            int blocked = 0;
            for (size_t k = starter + 1; k < len; k++) {
                uint8_t rb = unicode_ccc_rank(out[k]);
                if (rb == 0 || rb >= r) blocked = 1;
            }
            uint32_t composite = blocked ? 0 : unicode_compose(out[starter], c);
            if (composite) {
                out[starter] = composite;
                continue;
            }
        }
        if (r == 0) starter = len;
        out[len++] = c; /* len <= i, so this never overwrites what is still to be read */
    }
    return len;
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Parses hex digits up to a tab, newline or NUL into bytes; returns the count or -1. */
static long hex_to_bytes(const char *s, unsigned char *out, const char **end) {
    long n = 0;
    while (*s && *s != '\t' && *s != '\n') {
        int hi = hexval(s[0]), lo = hi < 0 ? -1 : hexval(s[1]);
        if (hi < 0 || lo < 0) return -1;
        out[n++] = (unsigned char)(hi << 4 | lo);
        s += 2;
    }
    *end = s;
    return n;
}

static long check_vectors(const char *path) {
    size_t len;
    char *text = (char *)read_file(path, &len);
    /* Any line is shorter than the file, so buffers sized by the file always suffice. */
    unsigned char *in = xmalloc(len), *want = xmalloc(len);
    unsigned char *got = xmalloc(len * UNICODE_MAX_DECOMPOSITION * 4);
    uint32_t *cps = xmalloc(len * sizeof *cps);
    uint32_t *nfc = xmalloc(len * UNICODE_MAX_DECOMPOSITION * sizeof *nfc);
    long lines = 0, bad = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#' || line[0] == 0) continue;
        lines++;
        const char *p;
        long nin = hex_to_bytes(line, in, &p), nwant = -1;
        if (nin >= 0 && *p == '\t') nwant = hex_to_bytes(p + 1, want, &p);
        size_t ncp = nin >= 0 ? utf8_decode(in, (size_t)nin, cps) : (size_t)-1;
        if (nwant < 0 || ncp == (size_t)-1) {
            if (bad++ < MAX_REPORT) printf("malformed vector line: %s\n", line);
            continue;
        }
        size_t nout = reference_nfc(cps, ncp, nfc);
        size_t ngot = utf8_encode(nfc, nout, got);
        if ((ngot != (size_t)nwant || memcmp(got, want, ngot) != 0) && bad++ < MAX_REPORT) {
            printf("NFC mismatch: %s: got ", line);
            for (size_t i = 0; i < ngot; i++) printf("%02X", got[i]);
            printf("\n");
        }
    }
    printf("nfc vectors: %ld lines, %ld mismatches\n", lines, bad);
    free(nfc);
    free(cps);
    free(got);
    free(want);
    free(in);
    free(text);
    return bad;
}

int main(int argc, char **argv) {
    const char *props = argc > 1 ? argv[1] : "/tmp/peftkit_unicode_props.bin";
    const char *nfd = argc > 2 ? argv[2] : "/tmp/peftkit_unicode_nfd.txt";
    const char *vectors = argc > 3 ? argv[3] : "tests/tokenizer/nfc_vectors.txt";
    printf("unicode tables: Unicode %s\n", unicode_version());
    long bad = check_props(props) + check_decompositions(nfd) + check_vectors(vectors);
    printf("%s: %ld mismatches in all\n", bad ? "FAIL" : "OK", bad);
    return bad ? 1 : 0;
}
