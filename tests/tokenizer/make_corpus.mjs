#!/usr/bin/env node
// Writes corpus.hex beside this script: the test strings the tokenizer is checked against, one a
// line, each as the lowercase hex of its raw bytes (so invalid UTF-8 can be written too).
// Deterministic: the only randomness is a fixed-seed PRNG below. Duplicates are dropped (the first
// occurrence keeps its category). Prints how many strings each category contributed.
//
//   node tests/tokenizer/make_corpus.mjs
import { writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));

// ---- seeded PRNG (mulberry32) ---------------------------------------------------------------
function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rnd = mulberry32(0x9e3779b9);
const pick = (arr) => arr[Math.floor(rnd() * arr.length)];
const int = (lo, hi) => lo + Math.floor(rnd() * (hi - lo + 1)); // inclusive

// ---- collection ---------------------------------------------------------------------------
const entries = []; // { hex, cat }
const seen = new Set();
const counts = new Map();
let category = "";
function cat(name) {
  category = name;
  if (!counts.has(name)) counts.set(name, 0);
}
function addBytes(bytes) {
  const hex = Buffer.from(bytes).toString("hex");
  if (seen.has(hex)) return;
  seen.add(hex);
  entries.push({ hex, cat: category });
  counts.set(category, counts.get(category) + 1);
}
function add(...strs) {
  for (const s of strs) {
    // No lone surrogates allowed here: invalid sequences go through addBytes.
    if (/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(s))
      throw new Error("lone surrogate in " + JSON.stringify(s));
    addBytes(Buffer.from(s, "utf8"));
  }
}
const b = (...parts) => // concatenates strings (UTF-8) and byte arrays
  Buffer.concat(parts.map((p) => (typeof p === "string" ? Buffer.from(p, "utf8") : Buffer.from(p))));

// ---- empty ----------------------------------------------------------------------------------
cat("empty");
add("");

// ---- single characters ----------------------------------------------------------------------
cat("single_char");
for (let c = 0x20; c < 0x7f; c++) add(String.fromCharCode(c));
add(..."éèêëàâäçñßøåæœÉÀÇÑØÅÆŒıİłŁðþÞ€£¥¢©®™°±×÷§¶•…—–«»„“”‘’‚′″¿¡");
add(..."中文字あアン한국ไทยनअمعשאЖжΩωЯ");
add("\u0301", "\u0300", "\u0308", "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff");
add("😀", "👍", "🧠", "🎉", "✓", "✔", "★", "☃", "♥", "∑", "∞", "≠", "√", "∫", "ℕ", "ℝ");

// ---- ASCII words and sentences --------------------------------------------------------------
cat("ascii_words");
const words = ["the", "of", "and", "hello", "world", "tokenizer", "Hello", "World", "HELLO",
  "WORLD", "fine-tuning", "state-of-the-art", "e.g.", "i.e.", "etc.", "antidisestablishmentarianism",
  "supercalifragilisticexpialidocious", "a", "I", "x", "OK", "iPhone", "McDonald", "camelCase",
  "snake_case", "kebab-case", "SCREAMING_CASE", "PascalCase", "LoRA", "QLoRA", "GPT", "llama"];
for (const w of words) add(w, " " + w);
add("Hello world", "Hello, world!", "hello world.", "The quick brown fox jumps over the lazy dog.",
  "THE QUICK BROWN FOX", "Is this a question?", "Wait... what?!", "(parenthesized) [bracketed] {braced}",
  "He said \"yes\" and she said 'no'.", "one two  three   four    five", "a b c d e f g",
  "semi;colon:colon", "x=y+z*2/3-1", "~tilde `backtick` ^caret |pipe \\backslash",
  "@mention #hashtag $dollar %percent &ampersand", "....", "!!!", "???", "---", "___", "***",
  "<>", "<<>>", "<=>", "->", "=>", "::", "...", "a.b.c", "end.", "end!", "end?");

// ---- whitespace -------------------------------------------------------------------------------
cat("whitespace");
const wsKinds = [" ", "\t", "\n", "\r\n", "\r", "\u00a0", "\u3000", "\u2028", "\u2029", "\ufeff",
  "\u0085", "\u000b", "\u000c", "\u1680", "\u2002", "\u2003", "\u2009", "\u200a", "\u202f", "\u205f",
  "\u180e", "\u200b"];
const runLens = [1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 32, 33, 40];
for (const k of [" ", "\t", "\n", "\r\n", "\r"]) for (const n of runLens) add(k.repeat(n));
for (const k of wsKinds.slice(5)) for (const n of [1, 2, 3, 8]) add(k.repeat(n));
// whitespace before a letter / digit / punctuation / end, after a word, and leading/trailing
for (const k of wsKinds) {
  for (const n of k === " " || k === "\t" || k.includes("\n") || k === "\r" ? [1, 2, 3] : [1, 2]) {
    const w = k.repeat(n);
    add(w + "a", w + "7", w + ".", "word" + w, w + "word" + w, "a" + w + "b", "1" + w + "2", "!" + w + "?");
  }
}
for (const n of [4, 8, 16, 40]) add(" ".repeat(n) + "x", "x" + " ".repeat(n), " ".repeat(n) + "1", " ".repeat(n) + "(");
// mixes
const mixParts = [" ", " ", " ", "\t", "\n", "\r\n", "\r", "\u00a0", "\u3000"];
for (let i = 0; i < 40; i++) {
  let s = "";
  const n = int(2, 40);
  while (s.length < n) s += pick(mixParts);
  const ctx = i % 4;
  add(ctx === 0 ? s : ctx === 1 ? s + "text" : ctx === 2 ? "text" + s : "a" + s + "b");
}
add(" \t", "\t ", " \n", "\n ", " \r\n", "\r\n ", "\t\n", "\n\t", " \t \t", "\t\t  \n\n  \t\t",
  " \n \n ", "\r\r\n\n", "\n\r", "\r\n\r\n", " \u00a0 ", "\u00a0\u00a0x", "x\u3000y\u3000z");

// ---- newlines with text -------------------------------------------------------------------------
cat("newlines");
const nls = ["\n", "\n\n", "\n\n\n", "\r\n", "\r\n\r\n", "\r", " \n", "\n ", " \n ", "\n\t", "\t\n", "\n  \n"];
for (const nl of nls) add("a" + nl + "b", nl + "hello", "hello" + nl, "Hello." + nl + "World.", "x:" + nl + "  y");
add("line1\nline2\nline3", "line1\n\nline2\n\n\nline3", "\n\nstart", "end\n\n", "para one.\n\npara two.\n",
  "a\nb\nc\nd\ne\nf", "1\n2\n3", "!\n?\n.", "word \nword", "word\n word", "word \n word",
  "   indented\n      more\n   back", "\n", "\n\n", "x\n\n\n\n\n\n\n\n\ny", "trailing spaces   \nnext",
  "mixed\r\nline\nendings\rhere", "tab\tthen\nnewline", "emoji 😀\nnext", "中文\n日本語\n한국어");

// ---- digits -------------------------------------------------------------------------------------
cat("digits");
for (let d = 0; d <= 9; d++) add(String(d));
{
  let run = "";
  for (let n = 1; n <= 20; n++) { run += String((n * 7 + 3) % 10); add(run); }
  for (let n = 1; n <= 20; n++) add("9".repeat(n));
}
add("0", "00", "007", "10", "100", "1000", "10000", "123456789", "1234567890123", " 42", "42 ", " 1 2 3 ",
  "abc123", "123abc", "a1b2c3", "x86_64", "v1.2.3", "3.14159", "0.5", ".5", "5.", "-42", "+1", "1e10",
  "1.5e-3", "0x1F", "0b1010", "1,000,000", "1.000.000", "1 000 000", "12:30", "2024-01-15", "$100",
  "100%", "50/50", "3/4", "1st 2nd 3rd 4th", "COVID-19", "4K", "99.9%", "#1", "(555) 123-4567",
  "٠١٢٣٤٥٦٧٨٩", "٣٫١٤", "۱۲۳", "१२३४", "๑๒๓", "１２３", "１２３４５", "x²", "²³", "H₂O", "10⁻³",
  "Ⅻ", "ⅻ", "Ⅳ", "½", "¼ cup", "¾", "⅓", "①②③", "𝟏𝟐𝟑", "〇一二三", "12345678901234567890",
  "3.14159265358979323846", "0.000001", "1,234.56", "€1.234,56");

// ---- English contractions --------------------------------------------------------------------
cat("contractions");
const contr = ["don't", "can't", "won't", "I'm", "we'll", "it's", "they've", "you're", "he'd", "isn't",
  "shouldn't've", "y'all", "o'clock", "rock 'n' roll", "'tis", "John's", "the dog's bone"];
const caseVariants = (s) => [s, s.toLowerCase(), s.toUpperCase(),
  s[0].toUpperCase() + s.slice(1), [...s].map((c, i) => (i % 2 ? c.toUpperCase() : c.toLowerCase())).join("")];
for (const c of contr) add(...caseVariants(c), " " + c);
add("we'LL", "We'Ll", "it'S", "I'M", "i'M", "DON'T", "dOn'T", "'s", "'S", "'t", "'T", "'re", "'RE", "'ve",
  "'VE", "'m", "'M", "'ll", "'LL", "'Ll", "'d", "'D", "''s", "'''", "'", "''", "' s", "'s'", " 's", "x's",
  "x'S", "’s", "don’t", "it’s", "I’M", "‘quoted’", "'quoted'", "\"quoted\"", "a's b's c's", "'sss",
  "'sa", "'dd", "'lll", "'re'", "he's'nt", "'s'd'll", "it's, isn't it?", "I'm\tfine", "we'll\nsee");

// ---- accents, precomposed and decomposed ------------------------------------------------------
cat("accents");
add("é", "e\u0301", "café", "cafe\u0301", "Å", "A\u030a", "\u212b", "ñ", "n\u0303", "niño", "nin\u0303o",
  "ậ", "a\u0323\u0302", "a\u0302\u0323", "ệ", "e\u0323\u0302", "ǖ", "u\u0308\u0304", "Ω", "\u2126",
  "ﬁ", "ﬂ", "ǅ", "ő", "ł", "ø", "ß", "ẞ", "İstanbul", "ıi", "Straße", "STRASSE", "Ærøskøbing", "Zürich",
  "naïve", "coöperate", "résumé", "re\u0301sume\u0301", "Crème brûlée", "Cre\u0300me bru\u0302le\u0301e",
  "\u0301a", "e\u0301\u0301\u0301", "o\u0308\u0304\u0301", "Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇", "\u1100\u1161\u11a8",
  "\u1100\u1161", "\u110b\u1175", "\u1112\u1161\u11ab\u1100\u116e\u11a8\u110b\u1165", "각", "\uac00\u11a8",
  "Tiếng Việt có dấu", "Tiếng Việt có dấu".normalize("NFD"), "Nguyễn Văn Hưởng", "Hà Nội",
  "Đà Nẵng".normalize("NFD"), "ḍḥṃṇṣṭ", "Ἀθῆναι", "Ἀθῆναι".normalize("NFD"), "ŠŽČĆĐ", "ąęėįųū",
  "Ångström", "A\u030angstro\u0308m", "ﬀﬃﬄ", "Ｆｕｌｌｗｉｄｔｈ", "ｶﾀｶﾅ", "㍿", "℃", "№", "™", "½".normalize("NFKD"));

// ---- scripts ------------------------------------------------------------------------------------
cat("scripts");
add("你好，世界！", "我爱自然语言处理。", "机器学习是人工智能的一个分支。", "中华人民共和国", "繁體中文測試",
  "こんにちは世界", "私は日本語を勉強しています。", "カタカナとひらがなと漢字", "東京都渋谷区", "ｱｲｳｴｵ",
  "안녕하세요, 세계!", "한국어 텍스트입니다.", "대한민국 서울특별시", "สวัสดีครับ", "ภาษาไทยไม่มีช่องว่างระหว่างคำ",
  "नमस्ते दुनिया", "हिन्दी भाषा", "क्षत्रिय", "مرحبا بالعالم", "اللغة العربية جميلة", "السَّلَامُ عَلَيْكُمْ",
  "שלום עולם", "עִבְרִית", "Привет, мир!", "Съешь же ещё этих мягких французских булок.", "ПРИВЕТ",
  "Γειά σου Κόσμε", "Ελληνικά", "ΑΒΓΔ αβγδ", "Բարեւ աշխարհ", "გამარჯობა", "வணக்கம்", "নমস্কার",
  "ሰላም", "Xin chào", "Hello 世界 мир עולם", "mixed日本語English한국어", "abcабвαβγ", "English (中文) عربى",
  "Ünïcödé ✓ 漢字 😀", "Ⓐⓑⓒ", "ℌ𝔢𝔩𝔩𝔬", "ᚠᛇᚻ᛫ᛒᛦᚦ", "ꦗꦮ", "ᐊᓂᔑᓈᐯᒧᐎᓐ");

// ---- emoji --------------------------------------------------------------------------------------
cat("emoji");
add("😀", "😀😀", "😀😁😂🤣", "👍", "👍🏻", "👍🏽", "👍🏿", "👋🏼 hi", "👨‍👩‍👧‍👦", "👨‍👩‍👧", "👩‍❤️‍👨",
  "👩‍💻", "👨🏾‍🚀", "👩🏼‍⚕️", "🧑‍🍳", "🏳️‍🌈", "🏳️‍⚧️", "🇺🇸", "🇫🇷🇯🇵", "🇺🇸🇫🇷🇯🇵🇩🇪", "🇦", "🇦🇧🇨",
  "1️⃣", "#️⃣", "*️⃣", "1\u20e3", "❤️", "❤︎", "❤", "☺", "☺️", "✌️", "🧠", "🫠", "🔥🔥🔥", "I ❤️ NY",
  "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "🏴󠁧󠁢󠁥󠁮󠁧󠁿", "x\ufe0f", "a\ufe0e", "🐕‍🦺", "🫶🏽", "emoji: 🎉🎊🎈", "text😀text",
  "😀 😀", " 😀", "😀\n", "⌚⌛", "🀄", "🃏", "©️", "®️", "™️", "🅰️", "🆗", "0️⃣1️⃣2️⃣");

// ---- code ----------------------------------------------------------------------------------------
cat("code");
add("def f(x):\n    return x * 2\n",
  "def add(a, b):\n\treturn a + b\n",
  "class Foo:\n    def __init__(self):\n        self.x = 1\n\n    def bar(self, y: int) -> int:\n        return self.x + y\n",
  "if x == 1:\n  print('one')\nelif x == 2:\n  print(\"two\")\nelse:\n  pass",
  "import numpy as np\nfrom typing import List, Dict\n\narr = np.zeros((3, 4), dtype=np.float32)\n",
  "# comment\nx = [i**2 for i in range(10) if i % 2 == 0]  # squares\n",
  "#include <stdio.h>\n\nint main(void) {\n\tprintf(\"Hello, world!\\n\");\n\treturn 0;\n}\n",
  "static inline uint32_t rotl(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }",
  "for (int i = 0; i < n; ++i) {\n        a[i] += b[i] * c;\n}",
  "struct tok { const char *s; size_t n; };\n/* block\n * comment */\n",
  "{\"name\": \"peftkit\", \"version\": \"0.1.0\", \"tags\": [\"a\", \"b\"], \"n\": 42, \"ok\": true, \"x\": null}",
  "{\n  \"key\": \"value\",\n  \"nested\": {\n    \"arr\": [1, 2, 3]\n  }\n}",
  "<!DOCTYPE html>\n<html>\n  <head><title>Test</title></head>\n  <body>\n    <p class=\"x\">Hi &amp; bye</p>\n  </body>\n</html>",
  "<div id=\"main\"><span>text</span><br/></div>",
  "#!/bin/sh\nset -eu\nfor f in *.txt; do\n\techo \"$f\" | tr a-z A-Z > \"${f%.txt}.out\"\ndone\n",
  "ls -la | grep '^d' | awk '{print $9}' && echo done || exit 1",
  "const f = (a, b) => a ?? b;\nlet x = `template ${y}`;\n",
  "fn main() {\n    let v: Vec<u8> = vec![1, 2, 3];\n    println!(\"{:?}\", v);\n}",
  "SELECT id, name FROM users WHERE age >= 18 ORDER BY name ASC;",
  "key: value\nlist:\n  - a\n  - b\nnested:\n    deep: true\n",
  "all: build\n\nbuild:\n\t$(CC) -O2 -o app main.c\n\nclean:\n\trm -f app\n",
  "--- a/file.c\n+++ b/file.c\n@@ -1,3 +1,3 @@\n-int x = 1;\n+int x = 2;\n",
  "    four spaces", "        eight spaces", "\tone tab", "\t\ttwo tabs", "\t    tab then spaces",
  "  \t  mixed indent", "x    = 1  # aligned", "a\t= 1\nbb\t= 2", "if (a) {\n\tif (b) {\n\t\treturn;\n\t}\n}",
  "regex: ^[a-zA-Z0-9_.+-]+@[a-zA-Z0-9-]+\\.[a-zA-Z0-9-.]+$", "path\\to\\file.txt", "C:\\Users\\Name\\Desktop",
  "a->b->c", "x != y && y <= z || !w", "i++; j--; k += 2; m <<= 1;", "printf(\"%d %s %5.2f\\n\", a, b, c);");

// ---- URLs, emails, markdown ----------------------------------------------------------------------
cat("urls_markdown");
add("https://example.com", "http://www.example.org/path/to/page.html?query=1&b=two#frag",
  "https://example.com/a%20b?q=%E4%B8%AD", "ftp://files.example.net/pub/file.tar.gz", "www.example.com",
  "https://user:pass@host:8080/", "https://中文.例子/路径", "See https://example.com/docs.",
  "user@example.com", "first.last+tag@sub.domain.co.uk", "Email me at a.b@c.de!", "mailto:someone@example.com",
  "# Heading 1", "## Heading 2\n\nText", "**bold** and *italic* and `code`", "- item 1\n- item 2\n  - nested",
  "1. first\n2. second\n3. third", "[link](https://example.com)", "![alt text](image.png \"title\")",
  "> quote\n> more quote", "```python\nprint('hi')\n```", "| a | b |\n|---|---|\n| 1 | 2 |", "---\n",
  "~~strike~~", "<https://autolink.com>", "Text with footnote[^1].\n\n[^1]: The note.", "* * *",
  "__init__.py", "@user please review #123", "192.168.0.1:8080", "::1", "2001:db8::ff00:42:8329",
  "C++ and C# and F#", "AT&T", "R&D", "Q&A");

// ---- long texts (2-5 KB) -----------------------------------------------------------------------
cat("long");
{
  const vocab = ["the", "model", "training", "data", "is", "a", "of", "and", "to", "in", "with", "for",
    "learning", "rate", "gradient", "layer", "weights", "adapter", "low-rank", "matrix", "we", "can",
    "this", "that", "it's", "don't", "token", "sequence", "batch", "loss", "2024", "42", "3.5", "fine",
    "tuning", "CPU", "memory", "fast", "slow", "results", "show", "improves", "over", "baseline"];
  const sentence = () => {
    const n = int(6, 18);
    const ws = [];
    for (let i = 0; i < n; i++) ws.push(pick(vocab));
    ws[0] = ws[0][0].toUpperCase() + ws[0].slice(1);
    return ws.join(" ") + pick([".", ".", ".", "!", "?", ";", ":"]);
  };
  const prose = (target) => {
    let s = "";
    while (Buffer.byteLength(s) < target) s += sentence() + (rnd() < 0.15 ? "\n\n" : " ");
    return s.trimEnd();
  };
  add(prose(2200));
  add(prose(4800));
  const multi = ["Hello world.", "你好，世界。", "こんにちは。", "안녕하세요.", "Привет!", "مرحبا", "שלום",
    "Γειά σου", "नमस्ते", "สวัสดี", "😀👍🏽", "café naïve", "1,234.56", "don't", "\t", "\n", "  "];
  let m = "";
  while (Buffer.byteLength(m) < 3000) m += pick(multi) + pick([" ", " ", "", "\n"]);
  add(m);
  const codeBlock = "def f(x):\n    if x > 0:\n        return x * 2\n    return -x\n\n";
  add(codeBlock.repeat(Math.ceil(2500 / codeBlock.length)));
  add("a".repeat(2048));
  add("ab ".repeat(700));
  add(" ".repeat(1000) + "x" + "\n".repeat(1000));
}

// ---- added / special tokens written in the text ----------------------------------------------------
cat("special_tokens");
const specials = ["<s>", "</s>", "<unk>", "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>",
  "<|start_header_id|>", "<|end_header_id|>", "<|reserved_special_token_3|>", "<|im_start|>", "<|im_end|>",
  "<|endoftext|>", "<think>", "</think>", "<tool_call>", "</tool_call>", "<|vision_start|>", "<|fim_prefix|>"];
for (const t of specials) {
  add(t, " " + t, t + " ", " " + t + " ", "a" + t + "b", "a " + t + " b", t + "\n", "\n" + t, t + t,
    t + " " + t, "Hello" + t, t + "Hello", "  " + t + "  ");
}
add("<s></s>", "<s> </s>", "</s><s>", "<s><s><s>", "<<s>>", "<s", "s>", "</s", "<|im_start", "im_start|>",
  "<|im_start|", "<|im_end", "<|eot_id", "<|begin_of_text", "<|reserved_special_token_250|>",
  "<|reserved_special_token_251|>", "<|reserved_special_token_|>", "<|im_start|><|im_end|>",
  "<|im_start|>user<|im_end|>", "<|begin_of_text|><|start_header_id|>", "<|eot_id|><|eot_id|>",
  "<S>", "< s>", "<s >", "<|IM_START|>", "<| im_start |>", "<|Im_start|>", "<unk><unk>",
  "<|endoftext|><|endoftext|>", "<think></think>", "<think>\n\n</think>\n\n", "<tool_call>\n{}\n</tool_call>",
  "text<|endoftext|>more text", "<s>[INST] hi [/INST]", "[INST]", "<<SYS>>", "<|im_start|>\n", "\n<|im_end|>\n",
  "x <|eot_id|>y", "x<|eot_id|> y", "<|im_end|>。", "😀<|im_end|>😀", "你好<s>世界");

// ---- chat-formatted text as the templates produce it ---------------------------------------------------
cat("chat_formatted");
add("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
  "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n2+2 = 4.<|eot_id|>",
  "<|start_header_id|>assistant<|end_header_id|>\n\n",
  "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n",
  "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n2+2 = 4.<|im_end|>\n",
  "<|im_start|>assistant\n<think>\nThe user asks something.\n</think>\n\nAnswer.<|im_end|>",
  "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n你好！有什么可以帮你的吗？<|im_end|>\n",
  "<|im_start|>user\n<tool_response>\n{\"ok\": true}\n</tool_response><|im_end|>\n",
  "<|im_start|>assistant\n<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1}}\n</tool_call><|im_end|>\n",
  "<s>[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\nHello! [/INST]",
  "<s>[INST] Hello! [/INST] Hi there! </s><s>[INST] How are you? [/INST]",
  "[INST] no bos [/INST] answer </s>", "<s>[INST]hello[/INST]", "<|im_start|>user\n\n\n<|im_end|>",
  "<|im_start|>user\n  spaced  <|im_end|>\n", "<|start_header_id|>user<|end_header_id|>\n\n  spaced  <|eot_id|>");

// ---- byte-fallback triggers (rare characters) ---------------------------------------------------
cat("rare_chars");
add("𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𝔘", "𝕳𝖊𝖑𝖑𝖔", "𝐁𝐨𝐥𝐝", "𝓢𝓬𝓻𝓲𝓹𝓽", "\u{10FFFD}", "\u{10FFFF}", "\u{F0000}", "\u{E000}",
  "\u{E0001}", "\uFFFF", "\uFFFE", "\uFDD0", "𐀀𐀁𐀂", "𐌰𐌱𐌲", "𒀀𒀁", "𓀀𓀁𓂀", "𐤀𐤁", "𐎀𐎁", "ᚠᚢᚦ",
  "\u{1F9E0}", "\u{1FAE0}", "𠀀𠀁", "𪚥", "𝄞", "🀀", "⿰", "ꙮ", "ⵣ", "𖹀", "hello 𝔘 world", "a\u{10FFFD}b",
  "𝔘𝔫𝔦 and 𓀀 and \u{E000}", "\u{1D400}\u{1D401}\u{1D402}", "ᏣᎳᎩ", "ꓘꓡ", "\u0378", "\u{2FFFF}");

// ---- control characters ------------------------------------------------------------------------
cat("control");
for (let c = 0; c < 0x20; c++) add(String.fromCharCode(c));
add("\u007f");
for (const c of [0, 1, 7, 8, 0x1b, 0x1f, 0x7f]) add("a" + String.fromCharCode(c) + "b", " " + String.fromCharCode(c));
add("\u0000\u0000", "x\u0000", "\u0000x", "\u001b[31mred\u001b[0m", "bell\u0007", "back\bspace",
  "\u0080", "\u0081", "\u009f", "a\u0085b", "\u008d\u008e", "\ufffd", "\ufffd\ufffd", "a\ufffdb",
  " \ufffd", "\ufffd ", "text \ufffd text", "\u00ad", "soft\u00adhyphen", "\u200e\u200f", "a\u202eb",
  "\u2066x\u2069", "\u034f", "\ufe00", "\u{e0100}", "\u0600", "\u061c");

// ---- invalid UTF-8 -----------------------------------------------------------------------------------
cat("invalid_utf8");
for (const x of [0x80, 0x81, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xed, 0xef, 0xf0, 0xf4])
  addBytes([x]);
for (let x = 0xf5; x <= 0xff; x++) addBytes([x]);
for (const bytes of [
  [0x80, 0x80], [0x80, 0x80, 0x80, 0x80], [0xc3], [0xc3, 0x28], [0xe2, 0x82], [0xe2, 0x28, 0xa1],
  [0xe2, 0x82, 0x28], [0xf0, 0x9f, 0x98], [0xf0, 0x9f], [0xf0, 0x28, 0x8c, 0xbc], [0xf0, 0x90, 0x28, 0xbc],
  [0xf0, 0x28, 0x8c, 0x28], [0xc0, 0xaf], [0xc1, 0xbf], [0xe0, 0x80, 0xaf], [0xe0, 0x9f, 0xbf],
  [0xf0, 0x80, 0x80, 0xaf], [0xf0, 0x8f, 0xbf, 0xbf], [0xed, 0xa0, 0x80], [0xed, 0xbf, 0xbf],
  [0xed, 0xa0, 0xbd, 0xed, 0xb8, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xf7, 0xbf, 0xbf, 0xbf],
  [0xf8, 0x88, 0x80, 0x80, 0x80], [0xfc, 0x84, 0x80, 0x80, 0x80, 0x80], [0xfe, 0xff], [0xff, 0xfe],
  [0xef, 0xbf, 0xbd], [0xef, 0xbb, 0xbf], [0xc3, 0xa9, 0xff], [0xe4, 0xb8], [0xe4, 0xb8, 0xe4, 0xb8, 0xad],
  [0xc2, 0xc2, 0xa0], [0xe0, 0xa0], [0xa0, 0xa1], [0x00, 0x80, 0x00], [0xc3, 0x80, 0x80],
]) addBytes(bytes);
addBytes(b("hel", [0xff], "lo"));
addBytes(b("caf", [0xc3]));
addBytes(b("caf", [0xc3], " au lait"));
addBytes(b("é", [0xff]));
addBytes(b("é", [0x80]));
addBytes(b("中", [0xe4, 0xb8]));
addBytes(b("😀", [0xf0, 0x9f, 0x98], "😀"));
addBytes(b("abc", [0x80], "def", [0xbf], "ghi"));
addBytes(b("word ", [0xc0, 0xaf], " word"));
addBytes(b("surrogate ", [0xed, 0xa0, 0x80], " here"));
addBytes(b("don", [0xe2, 0x80], "t"));
addBytes(b("don", [0xe2, 0x80, 0x99], "t"));
addBytes(b(" ", [0x80]));
addBytes(b([0x80], " "));
addBytes(b("\n", [0xfe], "\n"));
addBytes(b("<s>", [0xff], "</s>"));
addBytes(b("<|im_start|>", [0xc3], "<|im_end|>"));
addBytes(b("123", [0xa0], "456"));
addBytes(b("Hello", [0xc2], " ", [0xa0], "World"));
addBytes(b("\t", [0xf0, 0x9f, 0x98, 0x80, 0x80], "\t"));
for (let i = 0; i < 16; i++) { // random garbage, with a few ASCII letters between
  const n = int(3, 30);
  const bytes = [];
  for (let j = 0; j < n; j++) bytes.push(rnd() < 0.25 ? int(0x61, 0x7a) : int(0x80, 0xff));
  addBytes(bytes);
}

// ---- a fuzz mix of everything above (seeded) -------------------------------------------------------------
cat("mixed_random");
{
  const pieces = ["hello", " world", "don't", "'s", "123", "4567", " ", "  ", "\t", "\n", "\r\n", "é",
    "e\u0301", "中文", "日本", "한국", "😀", "👍🏽", "👨‍👩‍👧", "<s>", "</s>", "<|im_start|>", "<|eot_id|>",
    "<think>", ".", ",", "!", "?", "(", ")", "\u00a0", "\u3000", "ไทย", "мир", "𝔘", "\u0000", "\ufffd",
    "x²", "½", "١٢"];
  for (let i = 0; i < 40; i++) {
    const n = int(2, 12);
    let s = "";
    for (let j = 0; j < n; j++) s += pick(pieces);
    add(s);
  }
}

// ---- write ---------------------------------------------------------------------------------------
const out = join(here, "corpus.hex");
writeFileSync(out, entries.map((e) => e.hex).join("\n") + "\n");
let first = 0;
for (const [name, n] of counts) {
  console.log(`${name.padEnd(16)} ${String(n).padStart(4)}  lines ${first}..${first + n - 1}`);
  first += n;
}
console.log(`${"total".padEnd(16)} ${String(entries.length).padStart(4)}  -> ${out}`);
