#!/usr/bin/env bash
# The layering of src/: every module may use only modules below it in LAYERS, never one above
# it, so there is no import circle and no stage reaches into a later one. The rooms follow the
# plate (ingest -> decode -> infer -> explain -> record -> route); below them the shared kit,
# above them the modules that gather and wire the rooms. Test code (from `#[cfg(test)]` on)
# may reach anywhere. `-v` also prints what each module uses.
set -euo pipefail
cd "$(dirname "$0")/.."

LAYERS=(
    # shared kit, used by every room
    fsutil outcome cid7011 privacy net
    # the rooms, in the order a plate passes through them
    ingest decode infer explain record route
    # around the rooms
    config metrics pipeline watch report cli
)

verbose=${1:-}
rank() {
    local i
    for i in "${!LAYERS[@]}"; do
        [ "${LAYERS[$i]}" = "$1" ] && { echo "$i"; return; }
    done
    echo -1
}

status=0
declare -A uses
for f in $(find src -name '*.rs' -not -path 'src/bin/*' -not -name main.rs -not -name lib.rs | sort); do
    rel=${f#src/}
    module=${rel%%/*}
    module=${module%.rs}
    r=$(rank "$module")
    if [ "$r" -lt 0 ]; then
        echo "check-layers: $f: module '$module' has no place in LAYERS" >&2
        status=1
        continue
    fi
    # Production code only (stop at the first test module), without comments.
    code=$(sed -e '/^#\[cfg(test)\]/,$d' -e 's://.*$::' "$f")
    if grep -q 'crate::{' <<<"$code"; then
        echo "check-layers: $f: grouped 'crate::{...}' imports cannot be checked; name each path" >&2
        status=1
    fi
    targets=$(grep -oE '(\$)?crate::[a-z_0-9]+' <<<"$code" | sed -E 's/^\$?crate:://' | sort -u || true)
    for t in $targets; do
        # `on_pool!` is exported at the crate root but belongs to record.
        [ "$t" = on_pool ] && t=record
        [ "$t" = "$module" ] && continue
        tr=$(rank "$t")
        uses[$module]="${uses[$module]:-} $t"
        if [ "$tr" -lt 0 ]; then
            echo "check-layers: $f uses crate::$t, which has no place in LAYERS" >&2
            status=1
        elif [ "$tr" -ge "$r" ]; then
            echo "check-layers: $f ($module) uses crate::$t, which is not below it" >&2
            status=1
        fi
    done
done

if [ "$verbose" = -v ]; then
    for m in "${LAYERS[@]}"; do
        u=$(tr ' ' '\n' <<<"${uses[$m]:-}" | sed '/^$/d' | sort -u | tr '\n' ' ')
        printf '%-9s uses %s\n' "$m" "${u:-(nothing)}"
    done
fi
if [ "$status" -eq 0 ]; then
    echo "check-layers: ${#LAYERS[@]} modules, no import from a module to one above it"
fi
exit "$status"
