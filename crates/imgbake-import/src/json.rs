//! Legacy JSON templates: `variables`, `builders`, `provisioners`, `post-processors`, with the
//! line and column of every value (jsonc-parser keeps byte ranges; comments are tolerated, as the
//! teams' own tooling sometimes leaves them).

use std::path::Path;

use jsonc_parser::ast::{self, ObjectPropName};

use crate::error::Error;
use crate::gotmpl::{self, Cx};
use crate::model::{Body, Build, Lines, Node, Plugin, Source, Template, Value, Variable, take};

pub fn read(path: &Path, text: &str) -> Result<Template, Error> {
    let lines = Lines::new(path, text);
    let parsed = jsonc_parser::parse_to_ast(text, &Default::default(), &Default::default())
        .map_err(|e| Error::parse(lines.loc(e.range().start), e.kind().to_string()))?;
    let Some(ast::Value::Object(root)) = parsed.value else {
        return Err(Error::parse(lines.loc(0), "a JSON template is an object with `builders`".into()));
    };
    let dir = template_dir(path);
    let cx = Cx { template_dir: dir.display().to_string() };
    let r = Reader { lines: &lines, cx };
    let mut t = Template::new(path, dir);
    let mut sensitive = Vec::new();
    let mut build = Build {
        name: None,
        description: None,
        dropped: Vec::new(),
        sources: Vec::new(),
        provisioners: Vec::new(),
        post: Vec::new(),
    };
    for prop in &root.properties {
        let key = prop_name(&prop.name);
        let loc = lines.loc(prop.range.start);
        match key.as_str() {
            "_comment" | "description" => append_comment(&mut t.comment, r.node(&prop.value).str()),
            "min_packer_version" => {
                t.dropped.push((loc, key, "imgbake checks its own tree files; no version pin is needed".into()))
            }
            "variables" => t.variables = r.variables(&prop.value)?,
            "sensitive-variables" => sensitive = r.node(&prop.value).strings().unwrap_or_default(),
            "builders" => build.sources = r.builders(&prop.value)?,
            "provisioners" => build.provisioners = r.plugins(&prop.value)?,
            "post-processors" => build.post = r.post(&prop.value)?,
            _ => t.dropped.push((loc, key, "not a key of a Packer template; ignored".into())),
        }
    }
    for v in &mut t.variables {
        v.sensitive |= sensitive.iter().any(|s| gotmpl::var_name(s) == v.name);
    }
    t.builds.push(build);
    Ok(t)
}

/// The directory of a template file, absolute (`{{template_dir}}`, relative paths).
pub fn template_dir(path: &Path) -> std::path::PathBuf {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf())
}

/// Variable values from a JSON var-file (`{"name": "value"}`).
pub fn var_file(path: &Path, text: &str) -> Result<Vec<(String, Node)>, Error> {
    let lines = Lines::new(path, text);
    let parsed = jsonc_parser::parse_to_ast(text, &Default::default(), &Default::default())
        .map_err(|e| Error::parse(lines.loc(e.range().start), e.kind().to_string()))?;
    let Some(ast::Value::Object(root)) = parsed.value else {
        return Err(Error::parse(lines.loc(0), "a var-file is an object of names and values".into()));
    };
    let r = Reader { lines: &lines, cx: Cx::default() };
    Ok(root.properties.iter().map(|p| (gotmpl::var_name(&prop_name(&p.name)), r.node(&p.value))).collect())
}

fn append_comment(to: &mut Option<String>, text: Option<&str>) {
    if let Some(text) = text.filter(|t| !t.trim().is_empty()) {
        match to {
            Some(c) => {
                c.push('\n');
                c.push_str(text);
            }
            None => *to = Some(text.to_string()),
        }
    }
}

fn prop_name(name: &ObjectPropName) -> String {
    match name {
        ObjectPropName::String(s) => s.value.to_string(),
        ObjectPropName::Word(w) => w.value.to_string(),
    }
}

struct Reader<'a> {
    lines: &'a Lines,
    cx: Cx,
}

impl Reader<'_> {
    fn node(&self, v: &ast::Value) -> Node {
        let (value, start) = match v {
            ast::Value::StringLit(s) => (
                match gotmpl::convert(&s.value, &self.cx) {
                    Ok(t) => Value::Str(t),
                    Err(why) => Value::Unmapped { text: s.value.to_string(), why },
                },
                s.range.start,
            ),
            ast::Value::NumberLit(n) => (Value::Num(n.value.to_string()), n.range.start),
            ast::Value::BooleanLit(b) => (Value::Bool(b.value), b.range.start),
            ast::Value::NullKeyword(n) => (Value::Null, n.range.start),
            ast::Value::Array(a) => (Value::List(a.elements.iter().map(|e| self.node(e)).collect()), a.range.start),
            ast::Value::Object(o) => (
                Value::Map(o.properties.iter().map(|p| (prop_name(&p.name), self.node(&p.value))).collect()),
                o.range.start,
            ),
        };
        Node { value, loc: self.lines.loc(start) }
    }

    fn objects<'v>(&self, v: &'v ast::Value<'v>, what: &str) -> Result<Vec<&'v ast::Object<'v>>, Error> {
        let ast::Value::Array(a) = v else {
            return Err(Error::parse(self.node(v).loc, format!("`{what}` is a list of objects")));
        };
        a.elements
            .iter()
            .map(|e| match e {
                ast::Value::Object(o) => Ok(o),
                other => Err(Error::parse(self.node(other).loc, format!("an entry of `{what}` is an object"))),
            })
            .collect()
    }

    fn variables(&self, v: &ast::Value) -> Result<Vec<Variable>, Error> {
        let ast::Value::Object(o) = v else {
            return Err(Error::parse(self.node(v).loc, "`variables` is an object of names and defaults".into()));
        };
        Ok(o.properties
            .iter()
            .map(|p| {
                let default = self.node(&p.value);
                Variable {
                    name: gotmpl::var_name(&prop_name(&p.name)),
                    default: (default.value != Value::Null).then_some(default),
                    description: None,
                    sensitive: false,
                    loc: self.lines.loc(p.range.start),
                }
            })
            .collect())
    }

    /// An object's keys, without `type`, `name`, `only`, `except` and `_comment` (returned apart).
    fn body(&self, o: &ast::Object) -> (Body, Option<String>) {
        let mut body = Body::default();
        let mut comment = None;
        for p in &o.properties {
            let key = prop_name(&p.name);
            let node = self.node(&p.value);
            if key == "_comment" {
                append_comment(&mut comment, node.str());
            } else {
                body.entries.push((key, node));
            }
        }
        (body, comment)
    }

    fn builders(&self, v: &ast::Value) -> Result<Vec<Source>, Error> {
        let mut out = Vec::new();
        for o in self.objects(v, "builders")? {
            let (mut body, comment) = self.body(o);
            let loc = self.lines.loc(o.range.start);
            let kind = take_str(&mut body, "type")
                .ok_or_else(|| Error::parse(loc.clone(), "a builder without `type`".into()))?;
            let name = take_str(&mut body, "name").unwrap_or_else(|| kind.clone());
            out.push(Source { kind, name, body, loc, comment });
        }
        Ok(out)
    }

    fn plugin(&self, o: &ast::Object, what: &str) -> Result<Plugin, Error> {
        let (mut body, comment) = self.body(o);
        let loc = self.lines.loc(o.range.start);
        let kind =
            take_str(&mut body, "type").ok_or_else(|| Error::parse(loc.clone(), format!("a {what} without `type`")))?;
        let only = take(&mut body, "only").and_then(|n| n.strings()).unwrap_or_default();
        let except = take(&mut body, "except").and_then(|n| n.strings()).unwrap_or_default();
        Ok(Plugin { kind, body, only, except, loc, comment })
    }

    fn plugins(&self, v: &ast::Value) -> Result<Vec<Plugin>, Error> {
        self.objects(v, "provisioners")?.into_iter().map(|o| self.plugin(o, "provisioner")).collect()
    }

    /// `post-processors`: each entry a name, an object, or a list of them (a sequence).
    fn post(&self, v: &ast::Value) -> Result<Vec<Vec<Plugin>>, Error> {
        let ast::Value::Array(a) = v else {
            return Err(Error::parse(self.node(v).loc, "`post-processors` is a list".into()));
        };
        let one = |e: &ast::Value| -> Result<Plugin, Error> {
            match e {
                ast::Value::Object(o) => self.plugin(o, "post-processor"),
                ast::Value::StringLit(s) => Ok(Plugin {
                    kind: s.value.to_string(),
                    body: Body::default(),
                    only: Vec::new(),
                    except: Vec::new(),
                    loc: self.lines.loc(s.range.start),
                    comment: None,
                }),
                other => Err(Error::parse(self.node(other).loc, "a post-processor is a name or an object".into())),
            }
        };
        a.elements
            .iter()
            .map(|e| match e {
                ast::Value::Array(seq) => seq.elements.iter().map(one).collect(),
                e => Ok(vec![one(e)?]),
            })
            .collect()
    }
}

fn take_str(body: &mut Body, key: &str) -> Option<String> {
    take(body, key).and_then(|n| n.scalar())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_builders_provisioners_and_locations() {
        let text = r#"{
  "_comment": "the base image",
  "variables": { "vm_name": "", "region": "{{env `AWS_REGION`}}" },
  "sensitive-variables": ["vm_name"],
  "builders": [{ "type": "amazon-ebs", "region": "{{user `region`}}" }],
  "provisioners": [{ "type": "shell", "only": ["amazon-ebs"], "inline": ["true"] }],
  "post-processors": ["manifest", [{ "type": "checksum" }, { "type": "shell-local", "inline": ["x"] }]]
}"#;
        let t = read(Path::new("t.json"), text).unwrap();
        assert_eq!(t.comment.as_deref(), Some("the base image"));
        assert!(t.variables[0].sensitive && t.variables[0].default.as_ref().unwrap().str() == Some(""));
        let b = &t.builds[0];
        assert_eq!(b.sources[0].kind, "amazon-ebs");
        assert_eq!(b.sources[0].body.get("region").unwrap().str(), Some("{{ var.region }}"));
        assert_eq!(b.sources[0].loc.line, 5);
        assert_eq!(b.provisioners[0].only, vec!["amazon-ebs"]);
        assert_eq!(b.post.len(), 2);
        assert_eq!(b.post[1][1].kind, "shell-local");
    }

    #[test]
    fn a_syntax_error_has_its_line() {
        let e = read(Path::new("t.json"), "{\n  \"builders\": [\n}").unwrap_err();
        assert!(e.to_string().starts_with("t.json:3:"), "{e}");
    }
}
