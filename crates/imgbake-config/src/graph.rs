//! The tree as a graph: DOT (Graphviz) and Mermaid.

use crate::Tree;
use crate::schema::Source;

/// Output format of [`render`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraphFormat {
    /// Graphviz DOT.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
}

/// The first registered builder that recognizes the source names it.
fn source_label(tree: &Tree, s: &Source) -> String {
    tree.schemas().iter().find_map(|b| b.source_label(s)).unwrap_or_else(|| "source".into())
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn mermaid_escape(s: &str) -> String {
    s.replace('"', "#quot;")
}

/// Render the tree's images (and where chains start) as a graph.
pub fn render(tree: &Tree, format: GraphFormat) -> String {
    let mut out = String::new();
    let order = tree.order();
    match format {
        GraphFormat::Dot => {
            out.push_str("digraph imgbake {\n  rankdir=LR;\n  node [shape=box, style=rounded];\n");
            for name in &order {
                let img = &tree.images()[*name];
                let builders: Vec<&str> = img.builders.iter().map(|b| b.get_ref().as_str()).collect();
                out.push_str(&format!(
                    "  \"{}\" [label=\"{}\\n({})\"];\n",
                    dot_escape(name),
                    dot_escape(name),
                    builders.join(", ")
                ));
                if let Some(s) = &img.source {
                    out.push_str(&format!(
                        "  \"src:{n}\" [label=\"{l}\", shape=note, style=\"\"];\n  \"src:{n}\" -> \"{n}\";\n",
                        n = dot_escape(name),
                        l = dot_escape(&source_label(tree, s.get_ref()))
                    ));
                }
                if let Some(p) = &img.parent {
                    out.push_str(&format!("  \"{}\" -> \"{}\";\n", dot_escape(p.get_ref()), dot_escape(name)));
                }
            }
            out.push_str("}\n");
        }
        GraphFormat::Mermaid => {
            out.push_str("flowchart LR\n");
            let id = |n: &str| format!("img_{}", n.replace('-', "_"));
            for name in &order {
                let img = &tree.images()[*name];
                let builders: Vec<&str> = img.builders.iter().map(|b| b.get_ref().as_str()).collect();
                out.push_str(&format!("  {}[\"{}<br/>({})\"]\n", id(name), mermaid_escape(name), builders.join(", ")));
                if let Some(s) = &img.source {
                    out.push_str(&format!(
                        "  src_{0}>\"{1}\"] --> {0}\n",
                        id(name),
                        mermaid_escape(&source_label(tree, s.get_ref()))
                    ));
                }
                if let Some(p) = &img.parent {
                    out.push_str(&format!("  {} --> {}\n", id(p.get_ref()), id(name)));
                }
            }
        }
    }
    out
}
