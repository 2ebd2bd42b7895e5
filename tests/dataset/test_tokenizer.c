/*
 * test_tokenizer.c: the byte tokenizer (the synthetic models' own) round-trips every byte,
 * UTF-8 included, puts BOS first only when asked, skips the specials when decoding and refuses
 * an id outside its 259.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core.h"
#include "tokenizer.h"

static void test_utf8_round_trip(void) {
    /* "héllo ✓ 日本 🙂": 1-, 2-, 3- and 4-byte UTF-8 sequences */
    const char *s = "h\xC3\xA9llo \xE2\x9C\x93 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x99\x82";
    static const int32_t want[] = {104, 195, 169, 108, 108, 111, 32,  226, 156, 147, 32,
                                   230, 151, 165, 230, 156, 172, 32,  240, 159, 153, 130};
    size_t n_want = sizeof want / sizeof want[0];
    const struct tokenizer *t = tokenizer_bytes();
    struct tok_encoding e = {0};
    tokenizer_encode(t, s, strlen(s), 0, &e);
    CHECK(e.n == n_want, "encoded %zu ids, want %zu", e.n, n_want);
    int mismatches = 0;
    for (size_t i = 0; i < e.n && i < n_want; i++)
        mismatches += e.ids[i] != want[i] || e.offset[i] != (int64_t)i;
    CHECK(mismatches == 0, "%d ids or offsets differ from the bytes", mismatches);

    char *out = NULL;
    size_t len = 0;
    CHECK(tokenizer_decode(t, e.ids, e.n, 0, &out, &len) == 0, "decode failed: %s", err_msg());
    CHECK(out && len == strlen(s) && strcmp(out, s) == 0, "decoded '%s' (%zu bytes)", out ? out : "", len);
    printf("utf8: %zu bytes -> %zu ids -> %zu bytes, %d id mismatches, round trip %s\n",
           strlen(s), e.n, len, mismatches, out && strcmp(out, s) == 0 ? "exact" : "DIFFERS");
    free(out);
    tok_encoding_free(&e);
}

static void test_all_bytes(void) {
    char s[256];
    for (int i = 0; i < 256; i++)
        s[i] = (char)i;
    const struct tokenizer *t = tokenizer_bytes();
    struct tok_encoding e = {0};
    tokenizer_encode(t, s, 256, TOK_ADD_SPECIAL, &e);
    int bad = e.ids[0] != TOK_BOS;
    for (size_t i = 1; i < e.n; i++)
        bad += e.ids[i] != (int32_t)i - 1;
    CHECK(e.n == 257 && bad == 0, "n %zu, %d ids differ from BOS + their byte", e.n, bad);
    char *out = NULL;
    size_t len = 0;
    CHECK(tokenizer_decode(t, e.ids, e.n, 1, &out, &len) == 0, "decode failed");
    CHECK(len == 256 && memcmp(out, s, 256) == 0, "bytes 0..255 do not round-trip (len %zu)", len);
    printf("bytes 0..255 with BOS: %zu ids, %d wrong, round trip %s\n", e.n, bad,
           len == 256 && memcmp(out, s, 256) == 0 ? "exact" : "DIFFERS");
    free(out);
    tok_encoding_free(&e);
}

static void test_specials(void) {
    const struct tokenizer *t = tokenizer_bytes();
    CHECK(TOK_BOS == 256 && TOK_EOS == 257 && TOK_PAD == 258 && TOK_VOCAB == 259,
          "special ids %d %d %d vocab %d", TOK_BOS, TOK_EOS, TOK_PAD, TOK_VOCAB);
    CHECK(tokenizer_vocab_size(t) == 259 && tokenizer_bos(t) == TOK_BOS &&
              tokenizer_eos(t) == TOK_EOS && tokenizer_pad(t) == TOK_PAD,
          "sizes and special ids of the byte tokenizer");
    const int32_t ids[] = {TOK_BOS, 'a', TOK_EOS, 'b', TOK_PAD, 0xC3, 0xA9};
    char *out = NULL;
    size_t len = 0;
    CHECK(tokenizer_decode(t, ids, 7, 0, &out, &len) == 0 && len == 4 && strcmp(out, "ab\xC3\xA9") == 0,
          "decoded '%s' (%zu)", out ? out : "", len);
    free(out);
    const int32_t bad[] = {'a', 999};
    CHECK(tokenizer_decode(t, bad, 2, 0, &out, &len) == -1 && strstr(err_msg(), "999"),
          "id 999 was not refused: %s", err_msg());
    CHECK(strcmp(tokenizer_piece(t, 'A'), "<0x41>") == 0 && strcmp(tokenizer_piece(t, TOK_EOS), "<eos>") == 0,
          "pieces %s %s", tokenizer_piece(t, 'A'), tokenizer_piece(t, TOK_EOS));
    CHECK(tokenizer_token_id(t, "<eos>") == TOK_EOS, "the id of <eos>");
    printf("specials: decode skips BOS/EOS/PAD, refuses id 999 (%s)\n", err_msg());
}

int main(void) {
    test_utf8_round_trip();
    test_all_bytes();
    test_specials();
    return check_report("test_tokenizer");
}
