/*
 * test_tokenizer.c: the byte-level tokenizer round-trips every byte, UTF-8 included, skips
 * the specials when decoding and respects both capacities.
 */
#include <string.h>

#include "check.h"
#include "tokenizer.h"

static void test_utf8_round_trip(void) {
    /* "héllo ✓ 日本 🙂": 1-, 2-, 3- and 4-byte UTF-8 sequences */
    const char *s = "h\xC3\xA9llo \xE2\x9C\x93 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x99\x82";
    static const int32_t want[] = {104, 195, 169, 108, 108, 111, 32,  226, 156, 147, 32,
                                   230, 151, 165, 230, 156, 172, 32,  240, 159, 153, 130};
    int32_t n_want = (int32_t)(sizeof want / sizeof want[0]);
    int32_t ids[64];
    int32_t n = tok_encode(s, ids, 64);
    CHECK(n == n_want, "encoded %d ids, want %d", (int)n, (int)n_want);
    int mismatches = 0;
    for (int32_t i = 0; i < n && i < n_want; i++)
        mismatches += ids[i] != want[i];
    CHECK(mismatches == 0, "%d ids differ from the bytes", mismatches);

    char out[64];
    int32_t len = tok_decode(ids, n, out, sizeof out);
    CHECK(len == (int32_t)strlen(s) && strcmp(out, s) == 0, "decoded '%s' (%d bytes)", out,
          (int)len);
    printf("utf8: %d bytes -> %d ids -> %d bytes, %d id mismatches, round trip %s\n",
           (int)strlen(s), (int)n, (int)len, mismatches, strcmp(out, s) == 0 ? "exact" : "DIFFERS");
}

static void test_all_bytes(void) {
    char s[256];
    for (int i = 1; i < 256; i++)
        s[i - 1] = (char)i;
    s[255] = '\0';
    int32_t ids[256];
    int32_t n = tok_encode(s, ids, 256);
    int bad = 0;
    for (int32_t i = 0; i < n; i++)
        bad += ids[i] != i + 1;
    CHECK(n == 255 && bad == 0, "n %d, %d ids differ from their byte", (int)n, bad);
    char out[300];
    int32_t len = tok_decode(ids, n, out, sizeof out);
    CHECK(len == 255 && memcmp(out, s, 256) == 0, "bytes 1..255 do not round-trip (len %d)",
          (int)len);
    printf("bytes 1..255: %d ids, %d wrong, round trip %s\n", (int)n, bad,
           len == 255 && memcmp(out, s, 256) == 0 ? "exact" : "DIFFERS");
}

static void test_specials_and_caps(void) {
    CHECK(TOK_BOS == 256 && TOK_EOS == 257 && TOK_PAD == 258 && TOK_VOCAB == 259,
          "special ids %d %d %d vocab %d", TOK_BOS, TOK_EOS, TOK_PAD, TOK_VOCAB);

    const int32_t ids[] = {TOK_BOS, 'a', TOK_EOS, 'b', TOK_PAD, 0xC3, 0xA9, -1, 999};
    char out[16];
    int32_t len = tok_decode(ids, 9, out, sizeof out);
    CHECK(len == 4 && strcmp(out, "ab\xC3\xA9") == 0, "decoded '%s' (%d)", out, (int)len);

    /* output capacity: 3 bytes hold 2 characters and the NUL */
    char capped[3];
    int32_t capped_len = tok_decode(ids, 9, capped, 3);
    CHECK(capped_len == 2 && strcmp(capped, "ab") == 0, "capped decode gave '%s' (%d)", capped,
          (int)capped_len);
    CHECK(tok_decode(ids, 9, out, 0) == 0, "decode with no room wrote something");

    /* input capacity: at most cap ids */
    int32_t enc[8] = {-7, -7, -7, -7, -7, -7, -7, -7};
    int32_t n = tok_encode("abcdef", enc, 3);
    CHECK(n == 3 && enc[0] == 'a' && enc[2] == 'c' && enc[3] == -7,
          "capped encode wrote %d ids, enc[3] = %d", (int)n, (int)enc[3]);
    CHECK(tok_encode("", enc, 8) == 0, "the empty string is not zero ids");
    printf("decode of 9 ids with specials -> '%s' (%d bytes); cap 3 -> '%s'; encode cap 3 -> "
           "%d ids\n", out, (int)len, capped, (int)n);
}

int main(void) {
    test_utf8_round_trip();
    test_all_bytes();
    test_specials_and_caps();
    return check_report("test_tokenizer");
}
