//! PowerShell syntax checks without PowerShell: the tree-sitter PowerShell grammar (crates.io). No
//! Windows runs here, so generated scripts and the shipped `provisioners/windows/*.ps1` are at least
//! parsed by a real grammar in every crate's tests, the same way.

/// Syntax errors the grammar finds in `script`: (line, text) of each ERROR or MISSING node. Empty when
/// the script parses.
pub fn syntax_errors(script: &str) -> Vec<(usize, String)> {
    let mut parser = tree_sitter::Parser::new();
    // The grammar is compiled into this crate: loading it cannot fail short of a version mismatch.
    if parser.set_language(&tree_sitter_powershell::LANGUAGE.into()).is_err() {
        return vec![(0, "the tree-sitter PowerShell grammar does not match the tree-sitter version".into())];
    }
    let Some(tree) = parser.parse(script, None) else {
        return vec![(0, "the parser gave up".into())];
    };
    let mut errors = Vec::new();
    let mut cursor = tree.walk();
    let mut stack = vec![tree.root_node()];
    while let Some(node) = stack.pop() {
        if node.is_error() || node.is_missing() {
            let text = script.get(node.byte_range()).unwrap_or("").chars().take(80).collect();
            errors.push((node.start_position().row + 1, text));
            continue;
        }
        if node.has_error() {
            stack.extend(node.children(&mut cursor));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_check_can_fail() {
        // Without this, a grammar that accepts anything would make every check pass.
        assert!(!super::syntax_errors("if ($x {\n  Write-Output 'a'\n").is_empty());
        assert!(!super::syntax_errors("function f( { }").is_empty());
        assert!(super::syntax_errors("if ($x) { Write-Output 'a' } else { exit 1 }").is_empty());
    }
}
