#!/usr/bin/env bash
# The host's folders form layers, lowest first (host/meson.build, host/README.md). A file may
# include its own folder's headers by name, and from another folder only that folder's face
# (FOLDER/FOLDER.h), and only of a lower layer. Prints every offending line; exit 1 if any.
set -u
root=${1:-${PEFT_SOURCE_ROOT:-$(dirname "$0")/../..}}
cd "$root/host" || { echo "no host folder under $root"; exit 1; }
layers=(core model io tokenizer data methods check stage merge run report cli)
rank() { local i; for i in "${!layers[@]}"; do [ "${layers[$i]}" = "$1" ] && { echo "$i"; return; }; done; echo -1; }

bad=0
checked=0
for dir in */; do
    dir=${dir%/}
    [ "$(rank "$dir")" -ge 0 ] || { echo "host/$dir: a folder that is not a layer"; bad=$((bad + 1)); continue; }
done
for f in $(find . -name '*.[ch]' | sort); do
    f=${f#./}
    case "$f" in */*) ;; *) echo "host/$f: a source file outside the layer folders"; bad=$((bad + 1)); continue ;; esac
    own=${f%%/*}
    r_own=$(rank "$own")
    while IFS= read -r line; do
        n=${line%%:*}
        inc=$(sed -E 's/^[^"]*"([^"]+)".*/\1/' <<<"${line#*:}")
        checked=$((checked + 1))
        case "$inc" in
        peft/*) continue ;; # the SDK's headers (sdk/include)
        */*/* | ../* | */../*) echo "host/$f:$n: \"$inc\": include a layer's face as FOLDER/FOLDER.h"; bad=$((bad + 1)) ;;
        */*)
            layer=${inc%%/*}
            r=$(rank "$layer")
            if [ "$r" -lt 0 ]; then
                echo "host/$f:$n: \"$inc\": no layer '$layer'"; bad=$((bad + 1))
            elif [ "$inc" != "$layer/$layer.h" ]; then
                echo "host/$f:$n: \"$inc\": only $layer's face, $layer/$layer.h, may be included from $own"; bad=$((bad + 1))
            elif [ "$r" -ge "$r_own" ]; then
                echo "host/$f:$n: \"$inc\": $own (layer $r_own) may not include $layer (layer $r), which is not below it"; bad=$((bad + 1))
            fi ;;
        *)
            [ -f "$own/$inc" ] || { echo "host/$f:$n: \"$inc\" is not a header of $own/"; bad=$((bad + 1)); } ;;
        esac
    done < <(grep -n '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$f")
done
echo "layers: $checked includes checked, $bad offending"
[ "$bad" -eq 0 ]
