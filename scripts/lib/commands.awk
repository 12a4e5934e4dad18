# Used by scripts/check-demo-deps.sh. Reads `bash --pretty-print` output (one command per
# line, no comments) and prints the first word of every simple command, command
# substitutions included; quoted text is not code.
function flush() {
    s = seg; seg = ""
    sub(/^[ \t!({]+/, "", s)
    if (s ~ /^[A-Za-z_][A-Za-z0-9_]*=\(/) return  # array assignment
    # Words a command may start with that are not the program: keywords, VAR=value.
    while (match(s, /^(if|then|else|elif|while|until|do|time|exec|[A-Za-z_][A-Za-z0-9_]*=[^ \t]*)[ \t]+/))
        s = substr(s, RLENGTH + 1)
    split(s, w, /[ \t]+/)
    if (w[1] != "") print w[1]
}
/^[A-Za-z_][A-Za-z0-9_]* \(\) *$/ { next }
{
    depth = 0; ctx[0] = "n"; paren[0] = 0; seg = ""
    n = length($0)
    for (i = 1; i <= n; i++) {
        c = substr($0, i, 1); c2 = substr($0, i, 2)
        if (ctx[depth] == "d") {
            if (c == "\\") { i++; continue }
            if (c == "\"") { depth--; seg = seg "\""; continue }
            if (c2 == "$(") { flush(); depth++; ctx[depth] = "n"; paren[depth] = 0; i++; continue }
            continue
        }
        if (c == "'") { j = index(substr($0, i + 1), "'"); i += (j ? j : n); seg = seg "\""; continue }
        if (c == "\\") { seg = seg substr($0, i, 2); i++; continue }
        if (c == "\"") { depth++; ctx[depth] = "d"; continue }
        if (c2 == "$(") { flush(); depth++; ctx[depth] = "n"; paren[depth] = 0; i++; continue }
        if (c == "(") { paren[depth]++; seg = seg c; continue }
        if (c == ")") {
            if (paren[depth] == 0 && depth > 0) { flush(); depth--; continue }
            paren[depth]--; seg = seg c; continue
        }
        if (c2 == "&&" || c2 == "||") { flush(); i++; continue }
        if (c == "|" || c == ";" || c == "&") { flush(); continue }
        seg = seg c
    }
    flush()
}
