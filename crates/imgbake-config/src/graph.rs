//! The tree as a graph: DOT (Graphviz) and Mermaid.

use crate::Tree;
use crate::model::Source;

/// Output format of [`render`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraphFormat {
    /// Graphviz DOT.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
}

fn source_label(s: &Source) -> String {
    if let Some(a) = &s.ami {
        return format!("ami {}", a.get_ref());
    }
    if let Some(f) = &s.ami_filter {
        let f = f.get_ref();
        return format!("ami_filter {}", f.name.clone().unwrap_or_else(|| "(tags)".into()));
    }
    if let Some(p) = &s.ssm_parameter {
        return format!("ssm {}", p.get_ref());
    }
    if let Some(d) = &s.disk {
        return format!("disk {}", d.get_ref());
    }
    "source".into()
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
                        l = dot_escape(&source_label(s.get_ref()))
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
                        mermaid_escape(&source_label(s.get_ref()))
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
