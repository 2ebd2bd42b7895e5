#!/usr/bin/env node
// Writes the reference outputs the C tokenizer is checked against, from corpus.hex, using the
// reference implementation @lenml/tokenizers 3.7.2 (installed by fetch_tokenizers.sh --reference):
//
//   expected/<name>.tsv  (name = llama2, llama3, qwen3), one line per corpus line:
//     index \t ids_with_special \t ids_without_special \t decode_with_hex \t decode_without_hex
//   expected/chat.json   chat-template renderings of four fixed conversations.
//
// A corpus line's bytes become a JS string through new TextDecoder("utf-8", {ignoreBOM: true})
// (WHATWG, replacement mode, a leading BOM kept). Cache folder: $PEFT_CACHE_DIR, default ../../.cache from this script.
//
//   node tests/tokenizer/make_expected.mjs
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { isDeepStrictEqual } from "node:util";

const here = dirname(fileURLToPath(import.meta.url));
const cache = resolve(process.env.PEFT_CACHE_DIR || join(here, "..", "..", ".cache"));
const modules = join(cache, "reference", "node_modules");
const NAMES = ["llama2", "llama3", "qwen3"];
const REFERENCE_VERSION = "3.7.2";

function fail(msg) {
  console.error("make_expected: " + msg);
  process.exit(1);
}

// ---- load the reference -----------------------------------------------------------------------
const corePkg = JSON.parse(readFileSync(join(modules, "@lenml", "tokenizers", "package.json"), "utf8"));
if (corePkg.version !== REFERENCE_VERSION)
  fail(`expected @lenml/tokenizers ${REFERENCE_VERSION}, found ${corePkg.version}`);

const tok = {};
for (const name of NAMES) {
  const dir = join(modules, "@lenml", "tokenizer-" + name);
  const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
  if (pkg.version !== REFERENCE_VERSION) fail(`expected ${pkg.name} ${REFERENCE_VERSION}, found ${pkg.version}`);
  const mod = await import(pathToFileURL(join(dir, "dist", "main.mjs")).href);
  // The package bundles its own copy of tokenizer.json / tokenizer_config.json; the C side reads
  // the files in <cache>/tokenizers/<name>/. Make sure they are the same data.
  for (const [exp, file] of [["tokenizerJSON", "tokenizer.json"], ["tokenizerConfig", "tokenizer_config.json"]]) {
    const bundled = { ...mod[exp] };
    delete bundled.default; // artefact of `import * as x from "x.json"`
    const onDisk = JSON.parse(readFileSync(join(cache, "tokenizers", name, file), "utf8"));
    if (!isDeepStrictEqual(bundled, onDisk)) fail(`${pkg.name}: bundled ${file} differs from ${cache}/tokenizers/${name}/${file}`);
  }
  tok[name] = mod.fromPreTrained();
}

// ---- tokenize the corpus ------------------------------------------------------------------------
const lines = readFileSync(join(here, "corpus.hex"), "utf8").split("\n");
if (lines.pop() !== "") fail("corpus.hex must end with a newline");
// replacement mode; ignoreBOM keeps a leading BOM as U+FEFF, as it is kept anywhere else: the
// tokenizer sees every character of the text
const decoder = new TextDecoder("utf-8", { ignoreBOM: true });
const texts = lines.map((hex, i) => {
  if (!/^([0-9a-f]{2})*$/.test(hex)) fail(`corpus.hex line ${i + 1} is not lowercase hex`);
  return decoder.decode(Buffer.from(hex, "hex"));
});

const hexOf = (s) => Buffer.from(s, "utf8").toString("hex");
const outDir = join(here, "expected");
mkdirSync(outDir, { recursive: true });

const summary = [];
for (const name of NAMES) {
  const t = tok[name];
  const rows = [];
  const st = { ids_with: 0, ids_without: 0, same: 0, roundtrip: 0, empty_without: 0, maxlen: 0 };
  texts.forEach((text, i) => {
    const withIds = t.encode(text, { add_special_tokens: true });
    const withoutIds = t.encode(text, { add_special_tokens: false });
    const dec = (ids) => (ids.length === 0 ? null : t.decode(ids, { skip_special_tokens: false }));
    const dWith = dec(withIds);
    const dWithout = dec(withoutIds);
    rows.push([i, withIds.join(","), withoutIds.join(","), dWith === null ? "-" : hexOf(dWith),
      dWithout === null ? "-" : hexOf(dWithout)].join("\t"));
    st.ids_with += withIds.length;
    st.ids_without += withoutIds.length;
    st.maxlen = Math.max(st.maxlen, withIds.length);
    if (withIds.join(",") === withoutIds.join(",")) st.same++;
    if (withoutIds.length === 0) st.empty_without++;
    if ((dWithout ?? "") === text) st.roundtrip++;
  });
  writeFileSync(join(outDir, name + ".tsv"), rows.join("\n") + "\n");
  summary.push([name, st]);
}

// ---- chat templates ---------------------------------------------------------------------------------
const conversations = {
  A: [
    { role: "user", content: "Hello! How are you?" },
    { role: "assistant", content: "I'm fine, thanks. How can I help you today?" },
  ],
  B: [
    { role: "system", content: "You are a helpful assistant." },
    { role: "user", content: "What is 2+2?" },
    { role: "assistant", content: "2+2 = 4." },
    { role: "user", content: "And 3*3?" },
    { role: "assistant", content: "3*3 = 9." },
  ],
  C: [
    { role: "system", content: "  Be brief.\n" },
    { role: "user", content: "  \n  Héllo, wörld! 你好 🌍\n\n  " },
    { role: "assistant", content: "\n\tΚαλημέρα — こんにちは\u00a0 " },
    { role: "user", content: " Tabs\tand\nnewlines\r\n inside, e\u0301 and 👨‍👩‍👧 " },
    { role: "assistant", content: "" },
  ],
  D: [
    { role: "system", content: "You are a pirate. Answer in one sentence." },
    { role: "user", content: "Where is the treasure?" },
  ],
};

// Llama-2-chat template, verbatim (the \n are the two characters backslash-n inside Jinja string
// literals, as in the JSON file).
const LLAMA2_TEMPLATE = String.raw`{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}`;
const LLAMA2_SOURCE = "meta-llama/Llama-2-7b-chat-hf tokenizer_config.json \"chat_template\" " +
  "(https://huggingface.co/meta-llama/Llama-2-7b-chat-hf/blob/main/tokenizer_config.json#L12), text as " +
  "quoted, with that link, in guidance-ai/guidance guidance/chat.py (llama2_template, commit " +
  "025fac921a76aa05b54633f39b4e4df6ff9b957c); the same text appears in other public copies";

const CHATML_TEMPLATE = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

// The Qwen3 template uses Python string methods (startswith, endswith, split, lstrip, rstrip,
// strip('\n')) and subscripts a call result (`x.split(..)[-1]`). The Jinja engine bundled in the
// reference (@huggingface/jinja 0.2.x) has none of these string methods and cannot parse a subscript
// after a call, so the template does not parse. `messages[::-1]` is NOT the problem: the engine
// supports it. Each construct is rewritten below with what the engine has (string slices, `in`,
// namespace, range loops), keeping Python's semantics exactly; the tools branch is left as is (it
// needs `tojson` on objects and the `string` test, which the engine lacks; tools are not used here).
const QWEN3_REWRITES = [
  {
    what: "startswith/endswith -> slice comparisons",
    from: "not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>'))",
    to: "not(message.content[:15] == '<tool_response>' and message.content[-16:] == '</tool_response>')",
  },
  {
    what: "content = s.split('</think>')[-1].lstrip('\\n'); reasoning_content = s.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') -> index search with range loops and slices",
    from: String.raw`                {%- set content = message.content.split('</think>')[-1].lstrip('\n') %}
                {%- set reasoning_content = message.content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}`,
    to: String.raw`                {%- set t = namespace(s=message.content, first=-1, last=-1, open=-1, c='', r='') %}
                {%- for i in range(t.s|length) %}
                    {%- if t.s[i:i+8] == '</think>' %}
                        {%- if t.first < 0 %}
                            {%- set t.first = i %}
                        {%- endif %}
                        {%- set t.last = i %}
                    {%- endif %}
                {%- endfor %}
                {%- set t.c = t.s[t.last+8:] %}
                {%- for i in range(t.c|length) %}
                    {%- if t.c[:1] == '\n' %}
                        {%- set t.c = t.c[1:] %}
                    {%- endif %}
                {%- endfor %}
                {%- set t.r = t.s[:t.first] %}
                {%- for i in range(t.r|length) %}
                    {%- if t.r[-1:] == '\n' %}
                        {%- set t.r = t.r[:-1] %}
                    {%- endif %}
                {%- endfor %}
                {%- for i in range(t.r|length) %}
                    {%- if t.r[i:i+7] == '<think>' %}
                        {%- set t.open = i %}
                    {%- endif %}
                {%- endfor %}
                {%- if t.open >= 0 %}
                    {%- set t.r = t.r[t.open+7:] %}
                {%- endif %}
                {%- for i in range(t.r|length) %}
                    {%- if t.r[:1] == '\n' %}
                        {%- set t.r = t.r[1:] %}
                    {%- endif %}
                {%- endfor %}
                {%- set content = t.c %}
                {%- set reasoning_content = t.r %}`,
  },
  {
    what: "reasoning_content.strip('\\n') and content.lstrip('\\n') -> range loops and slices (the engine's strip() ignores its argument and trims all whitespace; lstrip does not exist)",
    from: String.raw`                {{- '<|im_start|>' + message.role + '\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}`,
    to: String.raw`                {%- set u = namespace(r=reasoning_content, c=content) %}
                {%- for i in range(u.r|length) %}
                    {%- if u.r[:1] == '\n' %}
                        {%- set u.r = u.r[1:] %}
                    {%- endif %}
                {%- endfor %}
                {%- for i in range(u.r|length) %}
                    {%- if u.r[-1:] == '\n' %}
                        {%- set u.r = u.r[:-1] %}
                    {%- endif %}
                {%- endfor %}
                {%- for i in range(u.c|length) %}
                    {%- if u.c[:1] == '\n' %}
                        {%- set u.c = u.c[1:] %}
                    {%- endif %}
                {%- endfor %}
                {{- '<|im_start|>' + message.role + '\n<think>\n' + u.r + '\n</think>\n\n' + u.c }}`,
  },
];

const errors = [];
function render(t, label, template) {
  const out = {};
  for (const [key, messages] of Object.entries(conversations)) {
    out[key] = {};
    for (const gen of [false, true]) {
      try {
        const opts = { tokenize: false, add_generation_prompt: gen };
        if (template !== null) opts.chat_template = template;
        // a deep copy, so that no template can change the conversation seen by the next render
        out[key][String(gen)] = t.apply_chat_template(structuredClone(messages), opts);
      } catch (e) {
        out[key][String(gen)] = null;
        errors.push(`${label}/${key}/add_generation_prompt=${gen}: ${e.message}`);
      }
    }
  }
  return out;
}

// The original Qwen3 template, and the replacement of messages[::-1] alone, must both fail to
// parse (checked, so that the notes stay true).
function parseError(t, template) {
  try {
    t.apply_chat_template(conversations.A, { tokenize: false, chat_template: template });
    return null;
  } catch (e) {
    return e.message;
  }
}
const qwenOriginal = tok.qwen3.chat_template;
if (typeof qwenOriginal !== "string") fail("qwen3 tokenizer has no chat_template string");
const qwenOriginalError = parseError(tok.qwen3, qwenOriginal);
const qwenReverseOnlyError = parseError(tok.qwen3, qwenOriginal.replace("messages[::-1]", "messages|reverse"));
if (qwenOriginalError === null || qwenReverseOnlyError === null)
  fail("the qwen3 template now parses: revisit the rewrite and the notes in make_expected.mjs");

let qwenRewritten = qwenOriginal;
for (const r of QWEN3_REWRITES) {
  const n = qwenRewritten.split(r.from).length - 1;
  if (n !== 1) fail(`qwen3 rewrite "${r.what}": expected the original text once, found it ${n} times`);
  qwenRewritten = qwenRewritten.replace(r.from, () => r.to);
}

const chat = {
  llama3: render(tok.llama3, "llama3", null),
  chatml: render(tok.qwen3, "chatml", CHATML_TEMPLATE),
  chatml_qwen3: render(tok.qwen3, "chatml_qwen3", qwenRewritten),
  llama2: render(tok.llama2, "llama2", LLAMA2_TEMPLATE),
  llama3_template: tok.llama3.chat_template,
  chatml_template: CHATML_TEMPLATE,
  chatml_qwen3_template: qwenRewritten,
  llama2_template: LLAMA2_TEMPLATE,
  conversations,
  notes: [
    `Rendered with @lenml/tokenizers ${REFERENCE_VERSION} (Jinja engine: the bundled @huggingface/jinja 0.2.x) ` +
      `on node ${process.versions.node}, Unicode ${process.versions.unicode}; apply_chat_template(messages, ` +
      `{tokenize: false, add_generation_prompt}) with the tokenizer's own special tokens (bos_token, eos_token, ...).`,
    `"llama3": the llama3 package's own chat_template, unchanged (this early Llama-3 template always ends with the ` +
      `assistant header, so add_generation_prompt changes nothing).`,
    `"chatml": the plain ChatML template in "chatml_template", passed as the chat_template option to the qwen3 tokenizer.`,
    `"chatml_qwen3": the qwen3 package's own chat_template, rewritten as in "chatml_qwen3_template". The original ` +
      `does not parse (${JSON.stringify(qwenOriginalError)}); replacing messages[::-1] with messages|reverse does not ` +
      `help (same error), and would be wrong anyway: the engine supports [::-1], while its reverse filter reverses ` +
      `the messages array in place, so the later "for message in messages" would walk the conversation backwards. ` +
      `The failing constructs are Python string methods and a subscript after a call. Rewrites (each keeps Python's ` +
      `semantics; the tools branch is unchanged and would still fail if tools were passed): ` +
      QWEN3_REWRITES.map((r, i) => `(${i + 1}) ${r.what}`).join("; ") + ".",
    `"llama2": the llama2 package ships no chat_template; "llama2_template" is the Llama-2-chat template from ${LLAMA2_SOURCE}. ` +
      `It ignores add_generation_prompt. A conversation that breaks its user/assistant alternation would be recorded as null.`,
    `Render errors (null entries): ${errors.length ? errors.join(" | ") : "none"}.`,
  ].join("\n"),
};
writeFileSync(join(outDir, "chat.json"), JSON.stringify(chat, null, 2) + "\n");

// ---- summary ------------------------------------------------------------------------------------------
console.log(`reference @lenml/tokenizers ${corePkg.version}, node ${process.versions.node}, unicode ${process.versions.unicode}`);
console.log(`corpus strings: ${texts.length}`);
for (const [name, st] of summary) {
  console.log(`${name.padEnd(7)} ids with special ${st.ids_with}, without ${st.ids_without}; ` +
    `lines where add_special_tokens changes nothing ${st.same}/${texts.length}; ` +
    `decode(without) == text on ${st.roundtrip}/${texts.length}; empty id lists ${st.empty_without}; longest ${st.maxlen}`);
}
console.log(`chat.json: ${errors.length} render error(s)${errors.length ? ":\n  " + errors.join("\n  ") : ""}`);
