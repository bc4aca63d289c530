//! The tree being written: images with their tables, and the TOML text of it, readable as if a
//! person wrote it (comments carried over, inline tables where short, shared values in
//! `[defaults]`).

use std::fmt::Write;

use indexmap::IndexMap;
use toml::Value as T;

pub type Table = IndexMap<String, T>;

/// A variable of the tree.
#[derive(Debug, Clone, Default)]
pub struct Var {
    pub default: Option<T>,
    pub description: Option<String>,
    pub sensitive: bool,
}

/// A step: its common keys, its kind and the kind's table.
#[derive(Debug, Clone, Default)]
pub struct Step {
    pub comment: Option<String>,
    pub common: Table,
    pub kind: String,
    pub body: Table,
}

/// An image of the tree.
#[derive(Debug, Clone, Default)]
pub struct Image {
    pub name: String,
    pub comment: Option<String>,
    pub description: Option<String>,
    pub builders: Vec<String>,
    pub parent: Option<String>,
    pub source: Table,
    pub communicator: Table,
    pub tags: Table,
    /// Builder settings tables, by builder.
    pub settings: IndexMap<String, Table>,
    pub publish: Table,
    pub steps: Vec<Step>,
    /// The Packer template it came from (for `--chain`).
    pub template: std::path::PathBuf,
    /// Where the Packer source is (for the chain's report line).
    pub source_loc: Option<crate::model::Loc>,
    /// The Packer source's name (for `only`/`except`).
    pub packer_names: Vec<String>,
}

impl Image {
    /// Calls `f` on every string of the image's tables.
    pub fn map_strings(&mut self, f: &mut dyn FnMut(&mut String)) {
        fn walk(v: &mut T, f: &mut dyn FnMut(&mut String)) {
            match v {
                T::String(s) => f(s),
                T::Array(a) => a.iter_mut().for_each(|v| walk(v, f)),
                T::Table(t) => t.iter_mut().for_each(|(_, v)| walk(v, f)),
                _ => {}
            }
        }
        let tables = [&mut self.source, &mut self.communicator, &mut self.tags, &mut self.publish];
        for t in tables {
            t.values_mut().for_each(|v| walk(v, f));
        }
        for t in self.settings.values_mut() {
            t.values_mut().for_each(|v| walk(v, f));
        }
        for s in &mut self.steps {
            s.common.values_mut().chain(s.body.values_mut()).for_each(|v| walk(v, f));
        }
    }
}

/// The whole tree.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    pub header: Vec<String>,
    pub name: String,
    pub id: String,
    pub manifest: Option<String>,
    pub variables: IndexMap<String, Var>,
    pub defaults_builder: Option<String>,
    pub defaults_communicator: Table,
    pub defaults_settings: IndexMap<String, Table>,
    pub images: Vec<Image>,
}

impl Tree {
    /// Moves what every image shares into `[defaults]`: the builder, communicator keys, and the
    /// settings of a builder every image uses. Only with two images or more.
    pub fn factor_defaults(&mut self) {
        if self.images.len() < 2 {
            return;
        }
        let first = &self.images[0];
        if first.builders.len() == 1 && self.images.iter().all(|i| i.builders == first.builders) {
            self.defaults_builder = first.builders.first().cloned();
        }
        self.defaults_communicator = shared(self.images.iter().map(|i| &i.communicator));
        for i in &mut self.images {
            i.communicator.retain(|k, _| !self.defaults_communicator.contains_key(k));
        }
        let builders: Vec<String> = self.images[0].settings.keys().cloned().collect();
        for b in builders {
            if !self.images.iter().all(|i| i.builders.contains(&b) && i.settings.contains_key(&b)) {
                continue;
            }
            let common = shared(self.images.iter().filter_map(|i| i.settings.get(&b)));
            if common.is_empty() {
                continue;
            }
            for i in &mut self.images {
                if let Some(t) = i.settings.get_mut(&b) {
                    t.retain(|k, _| !common.contains_key(k));
                }
            }
            self.defaults_settings.insert(b, common);
        }
    }

    /// The tree file's text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for h in &self.header {
            comment(&mut s, h);
        }
        s.push_str("\n[settings]\n");
        let _ = writeln!(s, "name = {}", inline(&T::String(self.name.clone())));
        s.push_str("# Unique per tree, set once: plan, prune and clean find this tree's artifacts by it.\n");
        let _ = writeln!(s, "id = {}", inline(&T::String(self.id.clone())));
        if let Some(m) = &self.manifest {
            let _ = writeln!(s, "manifest = {}", inline(&T::String(m.clone())));
        }
        if !self.variables.is_empty() {
            s.push_str("\n[variables]\n");
            for (name, v) in &self.variables {
                let mut t = Table::new();
                if let Some(d) = &v.default {
                    t.insert("default".into(), d.clone());
                }
                if let Some(d) = &v.description {
                    t.insert("description".into(), T::String(d.clone()));
                }
                if v.sensitive {
                    t.insert("sensitive".into(), T::Boolean(true));
                }
                let _ = writeln!(s, "{} = {}", key(name), inline(&T::Table(t.into_iter().collect())));
            }
        }
        let has_defaults = self.defaults_builder.is_some()
            || !self.defaults_communicator.is_empty()
            || !self.defaults_settings.is_empty();
        if has_defaults {
            s.push_str("\n[defaults]\n");
            if let Some(b) = &self.defaults_builder {
                let _ = writeln!(s, "builder = {}", inline(&T::String(b.clone())));
            }
            if !self.defaults_communicator.is_empty() {
                let _ = writeln!(s, "communicator = {}", inline(&table(&self.defaults_communicator)));
            }
            for (b, t) in &self.defaults_settings {
                let _ = writeln!(s, "\n[defaults.{b}]");
                entries(&mut s, t);
            }
        }
        for i in &self.images {
            self.image(&mut s, i);
        }
        s
    }

    fn image(&self, s: &mut String, i: &Image) {
        s.push('\n');
        if let Some(c) = &i.comment {
            comment(s, c);
        }
        let _ = writeln!(s, "[images.{}]", key(&i.name));
        if let Some(d) = &i.description {
            let _ = writeln!(s, "description = {}", inline(&T::String(d.clone())));
        }
        if self.defaults_builder.is_none() || i.builders.len() > 1 {
            let b = if i.builders.len() == 1 {
                T::String(i.builders[0].clone())
            } else {
                T::Array(i.builders.iter().cloned().map(T::String).collect())
            };
            let _ = writeln!(s, "builder = {}", inline(&b));
        }
        if let Some(p) = &i.parent {
            let _ = writeln!(s, "parent = {}", inline(&T::String(p.clone())));
        } else if !i.source.is_empty() {
            let _ = writeln!(s, "source = {}", inline(&table(&i.source)));
        }
        for (k, t) in [("communicator", &i.communicator), ("tags", &i.tags), ("publish", &i.publish)] {
            if !t.is_empty() {
                let _ = writeln!(s, "{k} = {}", inline(&table(t)));
            }
        }
        for (b, t) in &i.settings {
            if !t.is_empty() {
                let _ = writeln!(s, "\n[images.{}.{b}]", key(&i.name));
                entries(s, t);
            }
        }
        for st in &i.steps {
            s.push('\n');
            if let Some(c) = &st.comment {
                comment(s, c);
            }
            let _ = writeln!(s, "[[images.{}.steps]]", key(&i.name));
            entries(s, &st.common);
            let line = format!("{} = {}", key(&st.kind), inline(&table(&st.body)));
            if line.chars().count() <= 110 {
                let _ = writeln!(s, "{line}");
            } else {
                let _ = writeln!(s, "[images.{}.steps.{}]", key(&i.name), key(&st.kind));
                for (k, v) in &st.body {
                    match v {
                        T::Array(a) if inline(v).chars().count() > 100 => {
                            let _ = writeln!(s, "{} = [", key(k));
                            for e in a {
                                let _ = writeln!(s, "  {},", inline(e));
                            }
                            s.push_str("]\n");
                        }
                        v => {
                            let _ = writeln!(s, "{} = {}", key(k), inline(v));
                        }
                    }
                }
            }
        }
    }
}

/// The keys whose values are equal in every table (and present in all).
fn shared<'a>(mut tables: impl Iterator<Item = &'a Table>) -> Table {
    let Some(first) = tables.next() else { return Table::new() };
    let mut common = first.clone();
    for t in tables {
        common.retain(|k, v| t.get(k) == Some(v));
    }
    common
}

fn table(t: &Table) -> T {
    T::Table(t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

fn entries(s: &mut String, t: &Table) {
    for (k, v) in t {
        let _ = writeln!(s, "{} = {}", key(k), inline(v));
    }
}

fn comment(s: &mut String, text: &str) {
    // TOML comments may not hold control characters (other than tab).
    let text: String = text.chars().map(|c| if c.is_control() && c != '\n' && c != '\t' { ' ' } else { c }).collect();
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            s.push_str("#\n");
        } else {
            let _ = writeln!(s, "# {line}");
        }
    }
}

/// A bare key where TOML allows one, else quoted.
pub fn key(k: &str) -> String {
    if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        k.to_string()
    } else {
        inline(&T::String(k.to_string()))
    }
}

/// A value on one line: strings quoted and escaped, arrays and inline tables.
pub fn inline(v: &T) -> String {
    match v {
        T::Array(a) => format!("[{}]", a.iter().map(inline).collect::<Vec<_>>().join(", ")),
        T::Table(t) if t.is_empty() => "{}".into(),
        T::Table(t) => format!(
            "{{ {} }}",
            t.iter().map(|(k, v)| format!("{} = {}", key(k), inline(v))).collect::<Vec<_>>().join(", ")
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_valid_toml_with_comments_and_defaults() {
        let mut tree = Tree {
            name: "t".into(),
            id: "t-0000001".into(),
            header: vec!["made by a test".into()],
            ..Default::default()
        };
        for n in ["a", "b"] {
            let mut settings = IndexMap::new();
            settings.insert("aws".to_string(), Table::from([("region".to_string(), T::String("eu-west-1".into()))]));
            tree.images.push(Image {
                name: n.into(),
                comment: Some("from x.json".into()),
                builders: vec!["aws".into()],
                source: Table::from([("ami".to_string(), T::String("ami-12345678".into()))]),
                communicator: Table::from([("username".to_string(), T::String("admin".into()))]),
                settings,
                steps: vec![Step {
                    kind: "shell".into(),
                    body: Table::from([("inline".to_string(), T::Array(vec![T::String("x".repeat(120))]))]),
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
        tree.factor_defaults();
        let text = tree.render();
        assert!(text.contains("[defaults]\nbuilder = \"aws\"\ncommunicator = { username = \"admin\" }"), "{text}");
        assert!(text.contains("[defaults.aws]\nregion = \"eu-west-1\""), "{text}");
        assert!(text.contains("# from x.json\n[images.a]"), "{text}");
        let parsed: toml::Table = text.parse().unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(parsed["images"]["a"]["steps"][0]["shell"]["inline"][0].as_str().unwrap().len(), 120);
    }
}
