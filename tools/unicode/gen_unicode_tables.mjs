// gen_unicode_tables.mjs: generates the tokenizer's Unicode tables from the JavaScript engine's
// own Unicode data, so that the C tokenizer agrees exactly with the JavaScript reference
// implementation (which uses RegExp with the u flag and String.prototype.normalize("NFC")).
// Every fact below is obtained by asking the engine (regex tests, normalize calls), never from
// a hand-written list: the tables follow whatever Unicode version this node ships.
//
//   node tools/unicode/gen_unicode_tables.mjs
//
// Writes (paths relative to the repository's top, wherever it is run from):
//   host/tokenizer/unicode.h          declarations, UNICODE_MAX_DECOMPOSITION
//   host/tokenizer/unicode_tables.c   the tables and lookup functions
//   tests/tokenizer/nfc_vectors.txt   NFC test vectors: input_hex<TAB>nfc_hex (UTF-8 hex)
//   /tmp/peftkit_unicode_props.bin    per code point: class flags, ccc rank (for check_tables)
//   /tmp/peftkit_unicode_nfd.txt      every code point whose NFD differs (for check_tables)
// The two /tmp files are inputs of tools/unicode/check_tables.c and are not committed.
//
// Exits non-zero if any self-check fails (rank order vs. normalize, composition pairs, sizes).

import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const SCRIPT = fileURLToPath(import.meta.url);
const TOP = join(dirname(SCRIPT), "..", "..");
const SCRIPT_REL = relative(TOP, SCRIPT);
const VERSION = process.versions.unicode;
const OUT_H = join(TOP, "host/tokenizer/unicode.h");
const OUT_C = join(TOP, "host/tokenizer/unicode_tables.c");
const OUT_VECTORS = join(TOP, "tests/tokenizer/nfc_vectors.txt");
const OUT_PROPS = "/tmp/peftkit_unicode_props.bin";
const OUT_NFD = "/tmp/peftkit_unicode_nfd.txt";

const MAX_CP = 0x10ffff;
const isSurrogate = (cp) => cp >= 0xd800 && cp <= 0xdfff;
const isHangulSyllable = (cp) => cp >= 0xac00 && cp <= 0xd7a3;
const S = (cp) => String.fromCodePoint(cp);
const cps = (s) => Array.from(s, (c) => c.codePointAt(0));
const nfd = (s) => s.normalize("NFD");
const nfc = (s) => s.normalize("NFC");
const hex = (n, w = 4) => "0x" + n.toString(16).toUpperCase().padStart(w, "0");

let failures = 0;
function fail(msg) {
    console.error("gen_unicode_tables: FAIL: " + msg);
    failures++;
}

// ---- a. character classes ------------------------------------------------------------------
// Flag values are the C enum's; the regexes are exactly the reference's.
const CLASSES = [
    { name: "L", flag: 1, re: /\p{L}/u },
    { name: "N", flag: 2, re: /\p{N}/u },
    { name: "WS", flag: 4, re: /\s/u },
    { name: "P", flag: 8, re: /\p{P}/u },
    { name: "M", flag: 16, re: /\p{M}/u },
];

const classOf = new Uint8Array(MAX_CP + 1); // surrogates stay 0: the tokenizer never sees them
for (let cp = 0; cp <= MAX_CP; cp++) {
    if (isSurrogate(cp)) continue;
    const s = S(cp);
    let f = 0;
    for (const c of CLASSES) if (c.re.test(s)) f |= c.flag;
    classOf[cp] = f;
}

// JS \s is not Unicode White_Space: report the differences we rely on, as observed.
// The header's comment states what was observed, not what the specification says.
const wsFlag = 4;
const wsProbe = [0xfeff, 0x2028, 0x2029, 0x0085, 0x180e].map((cp) => hex(cp).replace("0x", "U+"));
const wsIn = wsProbe.filter((u) => classOf[parseInt(u.slice(2), 16)] & wsFlag);
const wsOut = wsProbe.filter((u) => !wsIn.includes(u));
const wsNote =
    `it includes ${wsIn.join(", ") || "none"} and excludes ${wsOut.join(", ") || "none"}`;
console.log(`\\s (as tested): ${wsNote}`);

function rangesOf(flag) {
    const out = [];
    let start = -1;
    for (let cp = 0; cp <= MAX_CP + 1; cp++) {
        const on = cp <= MAX_CP && (classOf[cp] & flag) !== 0;
        if (on && start < 0) start = cp;
        if (!on && start >= 0) {
            out.push([start, cp - 1]);
            start = -1;
        }
    }
    return out;
}
for (const c of CLASSES) c.ranges = rangesOf(c.flag);

// Two-stage table for the BMP: stage 1 maps a block number to a deduplicated block of flags.
// The block size is chosen by trying all sensible ones and keeping the smallest total.
function twoStage(shift) {
    const size = 1 << shift;
    const blocks = new Map();
    const blockData = [];
    const index = [];
    for (let b = 0; b < 0x10000 / size; b++) {
        const block = classOf.subarray(b * size, (b + 1) * size);
        const key = block.join(",");
        let id = blocks.get(key);
        if (id === undefined) {
            id = blocks.size;
            blocks.set(key, id);
            blockData.push(...block);
        }
        index.push(id);
    }
    const indexBytes = blocks.size <= 256 ? 1 : 2;
    const bytes = index.length * indexBytes + blockData.length;
    return { shift, index, blockData, nBlocks: blocks.size, indexBytes, bytes };
}
let bmp = null;
for (let shift = 4; shift <= 9; shift++) {
    const t = twoStage(shift);
    if (!bmp || t.bytes < bmp.bytes) bmp = t;
}

// ---- b. canonical combining class, as an order-preserving rank --------------------------------
// JS exposes no ccc, but NFD's canonical reordering reveals the order: for two non-starters x, y,
// NFD(x+y) swaps them iff ccc(x) > ccc(y). U+0334 has the lowest non-zero ccc (1) and U+0345 the
// highest (240), so every other non-starter reorders against one of them.
const LOW = 0x0334, HIGH = 0x0345;
const reorders = (a, b) => nfd(a + b) !== a + b; // only meaningful for NFD-stable a, b
const nonStarters = [];
for (let cp = 0; cp <= MAX_CP; cp++) {
    if (isSurrogate(cp)) continue;
    const x = S(cp);
    if (nfd(x) !== x) continue;
    if (cp === LOW || cp === HIGH || reorders(x, S(LOW)) || reorders(S(HIGH), x)) {
        nonStarters.push(cp);
    }
}
// x before y iff NFD(y+x) === x+y, i.e. ccc(x) < ccc(y); equal when neither order moves.
function cccCompare(x, y) {
    const a = S(x), b = S(y);
    if (nfd(b + a) === a + b) return -1;
    if (nfd(a + b) === b + a) return 1;
    return 0;
}
const sorted = [...nonStarters].sort((x, y) => cccCompare(x, y) || x - y);
const rankOf = new Map();
let rank = 0;
for (let i = 0; i < sorted.length; i++) {
    const c = i === 0 ? -1 : cccCompare(sorted[i - 1], sorted[i]);
    if (c > 0) fail(`ccc sort not monotone at ${hex(sorted[i])}`);
    if (c < 0) rank++;
    rankOf.set(sorted[i], rank);
}
const nRanks = rank;
if (nRanks > 255) fail(`${nRanks} ranks do not fit in uint8_t`);
// Verify against the engine on every ordered pair of non-starters.
{
    let bad = 0;
    for (const x of nonStarters) {
        const sx = S(x), rx = rankOf.get(x);
        for (const y of nonStarters) {
            const sy = S(y);
            const got = nfd(sx + sy);
            const want = rx > rankOf.get(y) ? sy + sx : sx + sy;
            if (got !== want && bad++ < 10) fail(`rank order of ${hex(x)} ${hex(y)}`);
        }
    }
    console.log(`ccc ranks: ${nonStarters.length} non-starters, ${nRanks} ranks, ` +
        `${nonStarters.length ** 2} pairs checked, ${bad} disagreements`);
    if (bad) failures++;
}

// ---- c. canonical decompositions ------------------------------------------------------------
const decomps = []; // [cp, [code points]]
let maxDecomp = 0;
for (let cp = 0; cp <= MAX_CP; cp++) {
    if (isSurrogate(cp) || isHangulSyllable(cp)) continue;
    const d = nfd(S(cp));
    if (d === S(cp)) continue;
    const v = cps(d);
    decomps.push([cp, v]);
    maxDecomp = Math.max(maxDecomp, v.length);
}
// Hangul syllables decompose algorithmically into 2 or 3 jamo; the out[] array must hold them.
const UNICODE_MAX_DECOMPOSITION = Math.max(maxDecomp, 3);
const decompFlat = [];
const decompEntries = decomps.map(([cp, v]) => {
    const off = decompFlat.length;
    decompFlat.push(...v);
    return [cp, off, v.length];
});
if (decompFlat.length > 0xffff) fail("decomposition data exceeds uint16_t offsets");

// ---- d. canonical composition pairs ---------------------------------------------------------
const pairs = []; // [first, second, composite]
let dropped = 0;
for (const [cp, v] of decomps) {
    if (nfc(S(cp)) !== S(cp)) continue; // excluded or singleton: not a primary composite
    const a = cps(nfc(String.fromCodePoint(...v.slice(0, -1))));
    const c = v[v.length - 1];
    if (a.length !== 1 || nfc(S(a[0]) + S(c)) !== S(cp)) {
        dropped++;
        const from = a.map((x) => hex(x)).join(" ");
        console.log(`composition: dropped ${hex(cp)} (${from} + ${hex(c)})`);
        continue;
    }
    pairs.push([a[0], c, cp]);
}
pairs.sort((p, q) => p[0] - q[0] || p[1] - q[1]);
for (let i = 1; i < pairs.length; i++) {
    const [p, q] = [pairs[i - 1], pairs[i]];
    if (p[0] === q[0] && p[1] === q[1]) fail(`duplicate pair ${hex(q[0])} ${hex(q[1])}`);
}
console.log(`composition pairs: ${pairs.length}, dropped ${dropped}`);

// ---- C output -------------------------------------------------------------------------------
// Initializer rows, packed up to 100 columns.
function rows(items, indent = "    ", width = 100) {
    const lines = [];
    let line = "";
    for (const item of items) {
        if (line && indent.length + line.length + 1 + item.length + 1 > width) {
            lines.push(indent + line);
            line = "";
        }
        line += (line ? " " : "") + item + ",";
    }
    if (line) lines.push(indent + line);
    return lines.join("\n");
}
const banner = (what) => `/* ${what}
 *
 * GENERATED FILE - DO NOT EDIT BY HAND. Generated by ${SCRIPT_REL}
 * from the Unicode ${VERSION} data of node ${process.version}
 * (process.versions.unicode = "${VERSION}").
 * Regenerate with: node ${SCRIPT_REL}
 */`;

const WHAT = "Unicode character classes and canonical normalization data for the tokenizer.";
const header = `${banner("unicode.h: " + WHAT)}

/* What this is: lookup functions over tables derived from the JavaScript engine's own Unicode
 * data, because the tokenizer must agree exactly with a JavaScript reference implementation that
 * uses RegExp with the u flag and String.prototype.normalize("NFC"). Its semantics are the target,
 * not the Unicode Character Database read directly; in particular UNI_WS is JavaScript's \\s
 * (WhiteSpace + LineTerminator), which is not Unicode's White_Space: as tested when generating,
 * ${wsNote}.
 *
 *   unicode_class      OR of the UNI_* flags: /\\p{L}/u, /\\p{N}/u, /\\s/u, /\\p{P}/u, /\\p{M}/u.
 *                      Surrogates and values above U+10FFFF have no class.
 *   unicode_ccc_rank   0 for starters; otherwise a rank 1..${nRanks} that orders code points as
 *                      their canonical combining class does (not the ccc value itself:
 *                      JavaScript has no API for it, so the order is recovered from NFD's
 *                      reordering). Code points that have a decomposition (U+0340, U+0344...)
 *                      return 0 whatever their ccc; decompose first, as NFC does.
 *   unicode_decompose  full canonical decomposition (recursive, Hangul included) into out[];
 *                      returns the length, or 1 with out[0] = cp when cp does not decompose.
 *   unicode_compose    the primary composite of a pair (Hangul LV and LVT included), or 0.
 *   unicode_version    the Unicode version the tables were generated from, e.g. "${VERSION}".
 *
 * Canonical ordering and composition (the NFC algorithm itself) are the caller's. The generator
 * checks the ranks against normalize("NFD") on every pair of non-starters; after generating,
 * tools/unicode/check_tables.c checks every code point and tests/tokenizer/nfc_vectors.txt. */
#ifndef PEFT_TOKENIZER_UNICODE_H
#define PEFT_TOKENIZER_UNICODE_H

#include <stddef.h>
#include <stdint.h>

/* Longest full canonical decomposition of one code point (Hangul syllables need 3). */
#define UNICODE_MAX_DECOMPOSITION ${UNICODE_MAX_DECOMPOSITION}

enum { UNI_L = 1, UNI_N = 2, UNI_WS = 4, UNI_P = 8, UNI_M = 16 };

uint8_t unicode_class(uint32_t cp);
uint8_t unicode_ccc_rank(uint32_t cp);
size_t unicode_decompose(uint32_t cp, uint32_t out[UNICODE_MAX_DECOMPOSITION]);
uint32_t unicode_compose(uint32_t first, uint32_t second);
const char *unicode_version(void);

#endif
`;

const bmpIndexType = bmp.indexBytes === 1 ? "uint8_t" : "uint16_t";
const classTables = CLASSES.map((c) => `/* /${c.re.source}/u: ${c.ranges.length} ranges. */
static const struct uni_range uni_ranges_${c.name}[${c.ranges.length}] = {
${rows(c.ranges.map(([a, b]) => `{${hex(a)}, ${hex(b)}}`))}
};`).join("\n\n");

const source = `${banner("unicode_tables.c: " + WHAT)}

/* See unicode.h for what each function means. Every table here is sorted for binary search;
 * the BMP classes also have a two-stage table because unicode_class is on the tokenizer's hot
 * path and almost all text is in the BMP. */
#include "unicode.h"

/* Longest decomposition in the data below (Hangul excluded); the header's constant also
 * covers Hangul's 3. */
#define UNICODE_TABLES_MAX_DECOMPOSITION ${maxDecomp}
_Static_assert(UNICODE_TABLES_MAX_DECOMPOSITION <= UNICODE_MAX_DECOMPOSITION &&
                   3 <= UNICODE_MAX_DECOMPOSITION,
               "unicode.h and unicode_tables.c were generated from different data");

static const char uni_version[] = "${VERSION}";

const char *unicode_version(void) { return uni_version; }

/* ---- character classes --------------------------------------------------------------------- */

struct uni_range {
    uint32_t first, last;
};

${classTables}

/* Classes of U+0000..U+FFFF: block number (cp >> ${bmp.shift}) -> one of ${bmp.nBlocks} distinct
 * blocks of ${1 << bmp.shift} flag bytes (${bmp.bytes} bytes in all; the block size is the one that
 * minimizes this). Surrogates have no class. */
#define UNI_BMP_SHIFT ${bmp.shift}
static const ${bmpIndexType} uni_bmp_index[${bmp.index.length}] = {
${rows(bmp.index.map(String))}
};

static const uint8_t uni_bmp_blocks[${bmp.blockData.length}] = {
${rows(Array.from(bmp.blockData, String))}
};

static int uni_in_ranges(const struct uni_range *r, size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < r[mid].first) hi = mid;
        else if (cp > r[mid].last) lo = mid + 1;
        else return 1;
    }
    return 0;
}

#define UNI_COUNT(a) (sizeof(a) / sizeof((a)[0]))

uint8_t unicode_class(uint32_t cp) {
    if (cp < 0x10000) {
        uint32_t block = uni_bmp_index[cp >> UNI_BMP_SHIFT];
        return uni_bmp_blocks[(block << UNI_BMP_SHIFT) | (cp & ((1u << UNI_BMP_SHIFT) - 1))];
    }
    if (cp > 0x10FFFF) return 0;
    uint8_t f = 0;
${CLASSES.map(({ name: n }) =>
        `    if (uni_in_ranges(uni_ranges_${n}, UNI_COUNT(uni_ranges_${n}), cp)) f |= UNI_${n};`)
        .join("\n")}
    return f;
}

/* ---- canonical combining class rank ------------------------------------------------------- */

struct uni_ccc {
    uint32_t cp;
    uint8_t rank;
};

/* ${nonStarters.length} non-starters, ranks 1..${nRanks} (rank order = ccc order). */
static const struct uni_ccc uni_ccc_ranks[${nonStarters.length}] = {
${rows(nonStarters.map((cp) => `{${hex(cp)}, ${rankOf.get(cp)}}`))}
};

uint8_t unicode_ccc_rank(uint32_t cp) {
    size_t lo = 0, hi = UNI_COUNT(uni_ccc_ranks);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < uni_ccc_ranks[mid].cp) hi = mid;
        else if (cp > uni_ccc_ranks[mid].cp) lo = mid + 1;
        else return uni_ccc_ranks[mid].rank;
    }
    return 0;
}

/* ---- canonical decomposition -------------------------------------------------------------- */

/* Hangul syllables are algorithmic (Unicode 3.12, "Conjoining Jamo Behavior"). */
enum {
    UNI_S_BASE = 0xAC00, UNI_L_BASE = 0x1100, UNI_V_BASE = 0x1161, UNI_T_BASE = 0x11A7,
    UNI_L_COUNT = 19, UNI_V_COUNT = 21, UNI_T_COUNT = 28,
    UNI_N_COUNT = UNI_V_COUNT * UNI_T_COUNT, UNI_S_COUNT = UNI_L_COUNT * UNI_N_COUNT
};

struct uni_decomp {
    uint32_t cp;
    uint16_t offset; /* into uni_decomp_data */
    uint8_t length;
};

/* Full (already recursive) decompositions of ${decompEntries.length} code points. */
static const uint32_t uni_decomp_data[${decompFlat.length}] = {
${rows(decompFlat.map((cp) => hex(cp)))}
};

static const struct uni_decomp uni_decomps[${decompEntries.length}] = {
${rows(decompEntries.map(([cp, off, len]) => `{${hex(cp)}, ${off}, ${len}}`))}
};

size_t unicode_decompose(uint32_t cp, uint32_t out[UNICODE_MAX_DECOMPOSITION]) {
    if (cp >= UNI_S_BASE && cp < UNI_S_BASE + UNI_S_COUNT) {
        uint32_t s = cp - UNI_S_BASE;
        out[0] = UNI_L_BASE + s / UNI_N_COUNT;
        out[1] = UNI_V_BASE + (s % UNI_N_COUNT) / UNI_T_COUNT;
        if (s % UNI_T_COUNT == 0) return 2;
        out[2] = UNI_T_BASE + s % UNI_T_COUNT;
        return 3;
    }
    size_t lo = 0, hi = UNI_COUNT(uni_decomps);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < uni_decomps[mid].cp) hi = mid;
        else if (cp > uni_decomps[mid].cp) lo = mid + 1;
        else {
            const struct uni_decomp *d = &uni_decomps[mid];
            for (size_t i = 0; i < d->length; i++) out[i] = uni_decomp_data[d->offset + i];
            return d->length;
        }
    }
    out[0] = cp;
    return 1;
}

/* ---- canonical composition ---------------------------------------------------------------- */

struct uni_pair {
    uint32_t first, second, composite;
};

/* ${pairs.length} primary composites by (first, second); Hangul is algorithmic. */
static const struct uni_pair uni_pairs[${pairs.length}] = {
${rows(pairs.map(([a, b, p]) => `{${hex(a)}, ${hex(b)}, ${hex(p)}}`))}
};

uint32_t unicode_compose(uint32_t first, uint32_t second) {
    if (first >= UNI_L_BASE && first < UNI_L_BASE + UNI_L_COUNT &&
        second >= UNI_V_BASE && second < UNI_V_BASE + UNI_V_COUNT)
        return UNI_S_BASE +
               ((first - UNI_L_BASE) * UNI_V_COUNT + (second - UNI_V_BASE)) * UNI_T_COUNT;
    /* LV + T: T_BASE itself is not a trailing consonant, hence the strict lower bound. */
    if (first >= UNI_S_BASE && first < UNI_S_BASE + UNI_S_COUNT &&
        (first - UNI_S_BASE) % UNI_T_COUNT == 0 &&
        second > UNI_T_BASE && second < UNI_T_BASE + UNI_T_COUNT)
        return first + (second - UNI_T_BASE);
    size_t lo = 0, hi = UNI_COUNT(uni_pairs);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct uni_pair *p = &uni_pairs[mid];
        if (first < p->first || (first == p->first && second < p->second)) hi = mid;
        else if (first > p->first || second > p->second) lo = mid + 1;
        else return p->composite;
    }
    return 0;
}
`;

// ---- NFC test vectors -----------------------------------------------------------------------
const utf8hex = (s) => Buffer.from(s, "utf8").toString("hex").toUpperCase();
const vectorLines = [];
const seen = new Set();
function vector(s) {
    if (seen.has(s)) return;
    seen.add(s);
    vectorLines.push(`${utf8hex(s)}\t${utf8hex(nfc(s))}`);
}
// Deterministic PRNG (xorshift32) so the vectors are reproducible.
let rngState = 0x9e3779b9;
function rnd(n) {
    rngState ^= rngState << 13; rngState >>>= 0;
    rngState ^= rngState >>> 17;
    rngState ^= rngState << 5; rngState >>>= 0;
    return rngState % n;
}
const pick = (arr) => arr[rnd(arr.length)];
const counts = {};
function section(name, fn) {
    const before = vectorLines.length;
    fn();
    counts[name] = vectorLines.length - before;
}

section("code points whose NFC differs", () => {
    for (let cp = 0; cp <= MAX_CP; cp++) {
        if (isSurrogate(cp)) continue;
        const s = S(cp);
        if (nfc(s) !== s) vector(s);
    }
});
section("primary composites (NFC keeps them)", () => {
    for (const [, , p] of pairs) vector(S(p));
});
section("NFD of every composition pair", () => {
    for (const [, , p] of pairs) vector(nfd(S(p)));
});
section("mark reordering", () => {
    const byFirst = new Map();
    for (const [a, c] of pairs) {
        if (!byFirst.has(a)) byFirst.set(a, []);
        byFirst.get(a).push(c);
    }
    const bases = [...byFirst.keys()].filter((a) => !rankOf.has(a));
    for (let i = 0; i < 400; i++) {
        const base = pick(bases);
        const n = 2 + rnd(3);
        const marks = [];
        // Prefer marks that compose with the base, so reordering changes what composes.
        for (let k = 0; k < n; k++) {
            const own = byFirst.get(base).filter((c) => rankOf.has(c));
            marks.push(own.length && rnd(2) ? pick(own) : pick(nonStarters));
        }
        for (let k = marks.length - 1; k > 0; k--) {
            const j = rnd(k + 1);
            [marks[k], marks[j]] = [marks[j], marks[k]];
        }
        vector(String.fromCodePoint(base, ...marks));
    }
});
section("Hangul", () => {
    const L = (i) => 0x1100 + i, V = (i) => 0x1161 + i, T = (i) => 0x11a7 + i;
    const LV = (l, v) => 0xac00 + (l * 21 + v) * 28;
    for (let l = 0; l < 19; l++) for (let v = 0; v < 21; v++) {
        vector(String.fromCodePoint(L(l), V(v)));
        vector(String.fromCodePoint(L(l), V(v), T(1 + ((l * 21 + v) % 27))));
        vector(String.fromCodePoint(LV(l, v), T(1 + ((l * 7 + v * 3) % 27))));
    }
    // t = 0 is U+11A7, which is not a trailing consonant and must not compose.
    for (let t = 0; t < 28; t++) vector(String.fromCodePoint(L(5), V(7), T(t)));
    for (let t = 0; t < 28; t++) vector(String.fromCodePoint(LV(11, 2), T(t)));
    // Edges of the ranges and sequences that must not compose.
    const edges = [
        [0x10ff, V(0)], [L(19), V(0)], [L(0), 0x1160], [L(0), V(21)], [L(0), V(0), 0x11c3],
        [LV(0, 0) + 1, T(1)], [LV(18, 20) + 27, T(1)], [L(0), T(1)], [L(0), L(1), V(0)],
        [LV(3, 3), V(3)], [L(0), 0x0301, V(0)], [LV(0, 0), 0x0301, T(1)], [0xd7a3, T(3)],
        [L(0), V(0), T(1), T(2)], [0xac00, 0x0300], [0x1100, 0x1161, 0x0345, 0x11a8],
    ];
    for (const e of edges) vector(String.fromCodePoint(...e));
});
section("blocked composition", () => {
    const starters = [0x0062, 0x0020, 0x00e9, 0x0915, 0x4e00, 0x1100];
    for (const [a, c] of pairs) {
        // A starter between always blocks.
        vector(String.fromCodePoint(a, pick(starters), c));
        const rc = rankOf.get(c);
        if (!rc) continue;
        // A non-starter of the same class blocks; a lower one does not; a higher one is
        // reordered after C by canonical ordering, so C composes.
        const same = nonStarters.filter((x) => rankOf.get(x) === rc);
        const lower = nonStarters.filter((x) => rankOf.get(x) < rc);
        const higher = nonStarters.filter((x) => rankOf.get(x) > rc);
        vector(String.fromCodePoint(a, pick(same), c));
        if (lower.length) vector(String.fromCodePoint(a, pick(lower), c));
        if (higher.length) vector(String.fromCodePoint(a, pick(higher), c));
    }
});

const vectorsText = `# NFC test vectors: input_hex<TAB>nfc_hex (UTF-8, hex).
# GENERATED - DO NOT EDIT BY HAND. Generated by ${SCRIPT_REL}
# from String.prototype.normalize("NFC") of node ${process.version}, Unicode ${VERSION}.
# Regenerate with: node ${SCRIPT_REL}
${vectorLines.join("\n")}
`;
if (vectorsText.length >= 1 << 20) fail(`nfc_vectors.txt has ${vectorsText.length} bytes (> 1 MB)`);

// ---- dumps for check_tables.c ----------------------------------------------------------------
const props = new Uint8Array(2 * (MAX_CP + 1));
for (let cp = 0; cp <= MAX_CP; cp++) {
    props[2 * cp] = classOf[cp];
    props[2 * cp + 1] = rankOf.get(cp) ?? 0;
}
const nfdLines = [];
for (let cp = 0; cp <= MAX_CP; cp++) {
    if (isSurrogate(cp)) continue;
    const d = nfd(S(cp));
    if (d === S(cp)) continue;
    nfdLines.push(cp.toString(16) + "\t" + cps(d).map((x) => x.toString(16)).join(" "));
}

if (failures) {
    console.error(`gen_unicode_tables: ${failures} check(s) failed; nothing written`);
    process.exit(1);
}

mkdirSync(dirname(OUT_C), { recursive: true });
mkdirSync(dirname(OUT_VECTORS), { recursive: true });
writeFileSync(OUT_H, header);
writeFileSync(OUT_C, source);
writeFileSync(OUT_VECTORS, vectorsText);
writeFileSync(OUT_PROPS, props);
writeFileSync(OUT_NFD, nfdLines.join("\n") + "\n");

console.log(`Unicode ${VERSION} (node ${process.version})`);
for (const c of CLASSES) console.log(`class ${c.name}: ${c.ranges.length} ranges`);
console.log(`BMP two-stage table: shift ${bmp.shift}, ${bmp.nBlocks} blocks, ${bmp.bytes} bytes`);
console.log(`decompositions: ${decompEntries.length} (${decompFlat.length} code points), ` +
    `max length ${maxDecomp}, UNICODE_MAX_DECOMPOSITION ${UNICODE_MAX_DECOMPOSITION}`);
console.log(`nfc vectors: ${vectorLines.length} lines, ${vectorsText.length} bytes`);
for (const [k, v] of Object.entries(counts)) console.log(`  ${k}: ${v}`);
const written = [OUT_H, OUT_C, OUT_VECTORS].map((p) => relative(TOP, p)).concat(OUT_PROPS, OUT_NFD);
console.log(`wrote ${written.join(", ")}`);
