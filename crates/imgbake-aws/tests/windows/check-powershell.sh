#!/usr/bin/env bash
# Syntax-checks PowerShell files with the tree-sitter PowerShell grammar (PyPI tree-sitter-powershell;
# real PowerShell is not installable from the registries imgbake may use). Installs the parser into
# its own venv on first use (idempotent, quiet). Prints every syntax error as FILE:LINE:COL and exits 1
# if there is any.
#
#   check-powershell.sh FILE...        IMGBAKE_CACHE  cache dir (default ~/.cache/imgbake)
set -euo pipefail
cache=${IMGBAKE_CACHE:-$HOME/.cache/imgbake}
venv=$cache/ps-parser
want="tree-sitter==0.26.1 tree-sitter-powershell==0.26.4"
ok() { "$venv/bin/python" -c 'import tree_sitter, tree_sitter_powershell' >/dev/null 2>&1; }
if ! ok; then
    mkdir -p "$cache"
    rm -rf "$venv"
    python3 -m venv "$venv"
    log=$(mktemp)
    # shellcheck disable=SC2086
    if ! "$venv/bin/pip" install -q --disable-pip-version-check $want >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        echo "check-powershell.sh: pip install $want into $venv failed" >&2
        exit 2
    fi
    rm -f "$log"
    ok || { echo "check-powershell.sh: the parser does not import after install" >&2; exit 2; }
fi
exec "$venv/bin/python" - "$@" <<'PY'
import sys
import tree_sitter_powershell as tsp
from tree_sitter import Language, Parser

parser = Parser(Language(tsp.language()))
errors = 0
for path in sys.argv[1:]:
    src = open(path, "rb").read()
    tree = parser.parse(src)
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            line, col = node.start_point
            what = "missing " + node.type if node.is_missing else "syntax error"
            snippet = src[node.start_byte:node.end_byte][:60].decode("utf-8", "replace").replace("\n", "\\n")
            print(f"{path}:{line + 1}:{col + 1}: {what}: {snippet}")
            errors += 1
        elif node.has_error:
            stack.extend(node.children)
    if not tree.root_node.has_error:
        print(f"{path}: ok")
sys.exit(1 if errors else 0)
PY
