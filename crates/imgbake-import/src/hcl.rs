//! HCL2 templates: a directory of `*.pkr.hcl` files (one template, as in Packer) or one file;
//! `variable`, `locals`/`local`, `source`, `data`, `build` blocks. Expressions become imgbake
//! templates where one exists (`var.x`, `local.x` inlined, `timestamp()`, `formatdate`,
//! `clean_resource_name`...), else an unmapped value naming the expression.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use hcl_edit::Span;
use hcl_edit::expr::{Expression, ObjectKey, TraversalOperator};
use hcl_edit::structure::{Block, Body as HclBody, Structure};
use hcl_edit::template::{Element, Template as HclTemplate};

use crate::error::Error;
use crate::gotmpl::{self, Cx};
use crate::model::{Body, Build, Data, Lines, Loc, Node, Plugin, Source, Template, Value, Variable};

/// The `*.pkr.hcl` files of a template: the file itself, or every one in the directory.
pub fn files(path: &Path) -> Result<Vec<PathBuf>, Error> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| Error::read(path, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".pkr.hcl"))
        .collect();
    out.sort();
    if out.is_empty() {
        return Err(Error::Usage(format!(
            "{}: a directory without *.pkr.hcl files is not a Packer template",
            path.display()
        )));
    }
    Ok(out)
}

struct Parsed {
    lines: Lines,
    body: HclBody,
}

fn parse(file: &Path) -> Result<Parsed, Error> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::read(file, e))?;
    let lines = Lines::new(file, &text);
    let body = hcl_edit::parser::parse_body(&text).map_err(|e| {
        let l = e.location();
        Error::parse(Loc { file: lines.loc(0).file, line: l.line(), col: l.column() }, e.message().to_string())
    })?;
    Ok(Parsed { lines, body })
}

/// Reads a template (file or directory).
pub fn read(path: &Path) -> Result<Template, Error> {
    let dir = if path.is_dir() {
        std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
    } else {
        crate::json::template_dir(path)
    };
    let parsed: Vec<Parsed> = files(path)?.iter().map(|f| parse(f)).collect::<Result<_, _>>()?;
    let locals = locals_of(&parsed);
    let cx = Cx { template_dir: dir.display().to_string() };
    let mut t = Template::new(path, dir);
    t.auto_vars = auto_vars(path)?;
    let mut sources: Vec<(String, Source)> = Vec::new();
    let mut builds: Vec<(&Block, usize)> = Vec::new();
    for (i, p) in parsed.iter().enumerate() {
        let cv = Cv { files: &parsed, file: i, locals: &locals, cx: &cx, depth: 0 };
        for s in p.body.iter() {
            let Structure::Block(block) = s else {
                let Structure::Attribute(a) = s else { continue };
                t.dropped.push((
                    cv.loc(a.span()),
                    a.key.as_str().to_string(),
                    "an attribute outside any block; Packer ignores it too".into(),
                ));
                continue;
            };
            let loc = cv.loc(block.span());
            let label = |n: usize| block.labels.get(n).map(|l| l.as_str().to_string()).unwrap_or_default();
            match block.ident.as_str() {
                "packer" => t.dropped.push((
                    loc,
                    "packer".into(),
                    "`required_plugins` and `required_version`: imgbake's builders are built in".into(),
                )),
                "variable" => t.variables.push(cv.variable(&label(0), block, loc)),
                "variables" => {
                    for a in block.body.attributes() {
                        let default = cv.node(&a.value);
                        t.variables.push(Variable {
                            name: gotmpl::var_name(a.key.as_str()),
                            default: Some(default),
                            description: None,
                            sensitive: false,
                            loc: cv.loc(a.span()),
                        });
                    }
                }
                "locals" | "local" => {}
                "source" => {
                    let (kind, name) = (label(0), label(1));
                    let comment = cv.comment(block.span());
                    if t.comment.is_none() {
                        t.comment.clone_from(&comment);
                    }
                    sources.push((
                        format!("source.{kind}.{name}"),
                        Source { kind, name, body: cv.body(&block.body), loc, comment },
                    ));
                }
                "data" => t.data.push(Data { kind: label(0), name: label(1), body: cv.body(&block.body), loc }),
                "build" => builds.push((block, i)),
                other => t.dropped.push((loc, other.to_string(), "not a Packer HCL2 block".into())),
            }
        }
    }
    for (block, i) in builds {
        let cv = Cv { files: &parsed, file: i, locals: &locals, cx: &cx, depth: 0 };
        t.builds.push(cv.build(block, &sources)?);
    }
    unused_sources(&mut t, &sources);
    Ok(t)
}

/// The locals of every file of a template: any file's expressions may use any file's locals.
fn locals_of(parsed: &[Parsed]) -> HashMap<String, (Expression, usize)> {
    let mut locals = HashMap::new();
    for (i, p) in parsed.iter().enumerate() {
        for block in p.body.blocks() {
            match block.ident.as_str() {
                "locals" => {
                    for a in block.body.attributes() {
                        locals.insert(a.key.as_str().to_string(), (a.value.clone(), i));
                    }
                }
                "local" => {
                    if let (Some(name), Some(a)) = (block.labels.first(), block.body.get_attribute("expression")) {
                        locals.insert(name.as_str().to_string(), (a.value.clone(), i));
                    }
                }
                _ => {}
            }
        }
    }
    locals
}

/// The values of a template directory's `*.auto.pkrvars.hcl` files (Packer loads them by itself).
fn auto_vars(path: &Path) -> Result<Vec<(String, Node, PathBuf)>, Error> {
    if !path.is_dir() {
        return Ok(Vec::new());
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| Error::read(path, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".auto.pkrvars.hcl"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        out.extend(var_file(&f)?.into_iter().map(|(k, n)| (k, n, f.clone())));
    }
    Ok(out)
}

/// Sources no build names: Packer does not build them, and neither does the tree.
fn unused_sources(t: &mut Template, sources: &[(String, Source)]) {
    for (reference, src) in sources {
        if !t.builds.iter().flat_map(|b| &b.sources).any(|b| b.loc == src.loc) {
            t.dropped.push((
                src.loc.clone(),
                reference.clone(),
                "no build uses it (Packer does not build it either)".into(),
            ));
        }
    }
}

/// Variable values from a `*.pkrvars.hcl` file.
pub fn var_file(path: &Path) -> Result<Vec<(String, Node)>, Error> {
    let p = parse(path)?;
    let locals = HashMap::new();
    let cx = Cx::default();
    let files = [p];
    let cv = Cv { files: &files, file: 0, locals: &locals, cx: &cx, depth: 0 };
    Ok(files[0].body.attributes().map(|a| (gotmpl::var_name(a.key.as_str()), cv.node(&a.value))).collect())
}

/// Converts expressions of one file.
struct Cv<'a> {
    files: &'a [Parsed],
    file: usize,
    locals: &'a HashMap<String, (Expression, usize)>,
    cx: &'a Cx,
    depth: usize,
}

/// A piece of an imgbake template: a handlebars expression, or literal text (a local's value,
/// the template's directory).
enum Hbs {
    Expr(String),
    Text(String),
}

impl Cv<'_> {
    fn lines(&self) -> &Lines {
        &self.files[self.file].lines
    }

    fn loc(&self, span: Option<std::ops::Range<usize>>) -> Loc {
        self.lines().loc(span.map_or(0, |s| s.start))
    }

    fn comment(&self, span: Option<std::ops::Range<usize>>) -> Option<String> {
        self.lines().comment_above(span.map_or(0, |s| s.start))
    }

    fn src(&self, e: &Expression) -> String {
        e.span().and_then(|s| self.lines().text().get(s).map(str::to_string)).unwrap_or_else(|| "(expression)".into())
    }

    fn variable(&self, name: &str, block: &Block, loc: Loc) -> Variable {
        let attr = |k: &str| block.body.get_attribute(k).map(|a| self.node(&a.value));
        Variable {
            name: gotmpl::var_name(name),
            default: attr("default"),
            description: attr("description").and_then(|n| n.str().map(str::to_string)),
            sensitive: attr("sensitive").and_then(|n| n.bool()).unwrap_or(false),
            loc,
        }
    }

    /// A block's attributes and nested blocks (a nested block is a map; repeated, a list of maps).
    fn body(&self, body: &HclBody) -> Body {
        let mut out = Body::default();
        for s in body.iter() {
            match s {
                Structure::Attribute(a) => out.entries.push((a.key.as_str().to_string(), self.node(&a.value))),
                Structure::Block(b) => {
                    let inner = self.body(&b.body);
                    let node = Node { value: Value::Map(inner.entries), loc: self.loc(b.span()) };
                    let key = b.ident.as_str().to_string();
                    match out.entries.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, Node { value: Value::List(l), .. })) => l.push(node),
                        Some((_, prev)) => {
                            let first = prev.clone();
                            *prev = Node { value: Value::List(vec![first, node]), loc: prev.loc.clone() };
                        }
                        None => out.entries.push((key, node)),
                    }
                }
            }
        }
        out
    }

    fn build(&self, block: &Block, sources: &[(String, Source)]) -> Result<Build, Error> {
        let mut build = Build {
            name: None,
            description: None,
            dropped: Vec::new(),
            sources: Vec::new(),
            provisioners: Vec::new(),
            post: Vec::new(),
        };
        let find = |reference: &str, at: Loc| -> Result<Source, Error> {
            let r = reference.trim_start_matches("{{ ").trim_end_matches(" }}");
            sources
                .iter()
                .find(|(k, _)| k == r)
                .map(|(_, s)| s.clone())
                .ok_or_else(|| Error::parse(at, format!("the build names `{r}`, which no `source` block declares")))
        };
        for s in block.body.iter() {
            match s {
                Structure::Attribute(a) if a.key.as_str() == "name" => build.name = self.node(&a.value).scalar(),
                Structure::Attribute(a) if a.key.as_str() == "sources" => {
                    for e in a.value.as_array().into_iter().flat_map(|arr| arr.iter()) {
                        let name = self.traversal_path(e).unwrap_or_else(|| self.node(e).scalar().unwrap_or_default());
                        build.sources.push(find(&name, self.loc(e.span()))?);
                    }
                }
                Structure::Attribute(a) if a.key.as_str() == "description" => {
                    build.description = self.node(&a.value).scalar()
                }
                Structure::Attribute(a) => {
                    build.dropped.push((
                        self.loc(a.span()),
                        format!("build.{}", a.key.as_str()),
                        "not an attribute of a Packer build block".into(),
                    ));
                }
                Structure::Block(b) => match b.ident.as_str() {
                    "source" => {
                        let reference = b.labels.first().map(|l| l.as_str().to_string()).unwrap_or_default();
                        let mut src = find(&reference, self.loc(b.span()))?;
                        // A build's `source` block: `name` renames it, other keys override or add.
                        for (k, v) in self.body(&b.body).entries {
                            if k == "name" {
                                src.name = v.scalar().unwrap_or(src.name);
                            } else if let Some(e) = src.body.entries.iter_mut().find(|(key, _)| *key == k) {
                                e.1 = v;
                            } else {
                                src.body.entries.push((k, v));
                            }
                        }
                        build.sources.push(src);
                    }
                    "provisioner" => build.provisioners.push(self.plugin(b)),
                    "error-cleanup-provisioner" => {
                        let mut p = self.plugin(b);
                        p.kind = format!("error-cleanup-provisioner {}", p.kind);
                        build.provisioners.push(p);
                    }
                    "post-processor" => build.post.push(vec![self.plugin(b)]),
                    "post-processors" => {
                        build.post.push(
                            b.body
                                .blocks()
                                .filter(|p| p.ident.as_str() == "post-processor")
                                .map(|p| self.plugin(p))
                                .collect(),
                        );
                    }
                    "hcp_packer_registry" => build.post.push(vec![self.plugin(b)]),
                    other => {
                        return Err(Error::parse(self.loc(b.span()), format!("`{other}` is not a block of a build")));
                    }
                },
            }
        }
        Ok(build)
    }

    fn plugin(&self, b: &Block) -> Plugin {
        let kind = if b.ident.as_str() == "hcp_packer_registry" {
            "hcp_packer_registry".to_string()
        } else {
            b.labels.first().map(|l| l.as_str().to_string()).unwrap_or_default()
        };
        let mut body = self.body(&b.body);
        let mut names = |key: &str| -> Vec<String> {
            let Some(i) = body.entries.iter().position(|(k, _)| k == key) else { return Vec::new() };
            let n = body.entries.remove(i).1;
            n.strings().unwrap_or_default().into_iter().map(|s| s.trim_start_matches("source.").to_string()).collect()
        };
        let only = names("only");
        let except = names("except");
        // `only = ["amazon-ebs.base"]` names a source as `TYPE.NAME`; keep the name.
        let short = |v: Vec<String>| v.into_iter().map(|s| s.rsplit('.').next().unwrap_or(&s).to_string()).collect();
        Plugin {
            kind,
            body,
            only: short(only),
            except: short(except),
            loc: self.loc(b.span()),
            comment: self.comment(b.span()),
        }
    }

    /// `source.amazon-ebs.base` written as a traversal, as text.
    fn traversal_path(&self, e: &Expression) -> Option<String> {
        let Expression::Traversal(t) = e else { return None };
        let Expression::Variable(root) = &t.expr else { return None };
        let mut s = root.as_str().to_string();
        for op in &t.operators {
            match op.value() {
                TraversalOperator::GetAttr(id) => {
                    s.push('.');
                    s.push_str(id.as_str());
                }
                _ => return None,
            }
        }
        Some(s)
    }

    pub fn node(&self, e: &Expression) -> Node {
        let loc = self.loc(e.span());
        let value = match e {
            Expression::Null(_) => Value::Null,
            Expression::Bool(b) => Value::Bool(*b.value()),
            Expression::Number(n) => Value::Num(n.value().to_string()),
            Expression::Array(a) => Value::List(a.iter().map(|e| self.node(e)).collect()),
            Expression::Object(o) => Value::Map(
                o.iter()
                    .map(|(k, v)| {
                        let key = match k {
                            ObjectKey::Ident(i) => i.as_str().to_string(),
                            ObjectKey::Expression(e) => self.node(e).scalar().unwrap_or_else(|| self.src(e)),
                        };
                        (key, self.node(v.expr()))
                    })
                    .collect(),
            ),
            Expression::Parenthesis(p) => return self.node(p.inner()),
            Expression::Traversal(_) | Expression::Variable(_) => match self.local_ref(e) {
                // A local holding a list or map is that value, not a string.
                Some((expr, file)) if self.depth < 16 && !is_stringy(&expr) => {
                    let cv = Cv { file, depth: self.depth + 1, ..*self };
                    return Node { loc, ..cv.node(&expr) };
                }
                _ => self.template_value(e),
            },
            _ => self.template_value(e),
        };
        Node { value, loc }
    }

    fn template_value(&self, e: &Expression) -> Value {
        match self.template(e) {
            Ok(s) => Value::Str(s),
            Err(why) => Value::Unmapped { text: self.src(e), why },
        }
    }

    fn local_ref(&self, e: &Expression) -> Option<(Expression, usize)> {
        let path = self.traversal_path(e)?;
        let name = path.strip_prefix("local.")?;
        self.locals.get(name).cloned()
    }

    /// An expression as template text.
    fn template(&self, e: &Expression) -> Result<String, String> {
        match e {
            Expression::String(s) => gotmpl::convert(s.value(), self.cx),
            Expression::StringTemplate(t) => self.elements(t),
            Expression::HeredocTemplate(h) => self.elements(&h.template),
            Expression::Number(n) => Ok(n.value().to_string()),
            Expression::Bool(b) => Ok(b.value().to_string()),
            _ => Ok(match self.hbs(e)? {
                Hbs::Expr(x) => format!("{{{{ {x} }}}}"),
                Hbs::Text(t) => t,
            }),
        }
    }

    fn elements(&self, t: &HclTemplate) -> Result<String, String> {
        let mut out = String::new();
        for el in t.iter() {
            match el {
                Element::Literal(l) => out.push_str(&gotmpl::convert(l.value(), self.cx)?),
                Element::Interpolation(i) => match self.hbs(&i.expr)? {
                    Hbs::Expr(x) => out.push_str(&format!("{{{{ {x} }}}}")),
                    Hbs::Text(t) => out.push_str(&t),
                },
                Element::Directive(_) => {
                    return Err("template directives (`%{ if }`, `%{ for }`) have no imgbake counterpart".into());
                }
            }
        }
        Ok(out)
    }

    fn hbs(&self, e: &Expression) -> Result<Hbs, String> {
        match e {
            Expression::String(s) => Ok(Hbs::Expr(quote(s.value()))),
            Expression::Number(n) => Ok(Hbs::Expr(n.value().to_string())),
            Expression::Parenthesis(p) => self.hbs(p.inner()),
            Expression::StringTemplate(_) | Expression::HeredocTemplate(_) => Ok(Hbs::Text(self.template(e)?)),
            Expression::Traversal(_) | Expression::Variable(_) => self.reference(e),
            Expression::FuncCall(f) => {
                let name = f.name.name.as_str();
                let args: Vec<&Expression> = f.args.iter().collect();
                self.call(name, &args)
            }
            _ => Err(format!(
                "the expression `{}` has no imgbake counterpart; compute it outside and pass it with --var",
                self.src(e)
            )),
        }
    }

    fn reference(&self, e: &Expression) -> Result<Hbs, String> {
        let path =
            self.traversal_path(e).ok_or_else(|| format!("`{}`: only plain references carry over", self.src(e)))?;
        let mut parts = path.splitn(2, '.');
        let (root, rest) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
        match root {
            "var" => Ok(Hbs::Expr(format!("var.{}", gotmpl::var_name(rest)))),
            "local" => {
                let (expr, file) =
                    self.locals.get(rest).cloned().ok_or_else(|| format!("`local.{rest}` is not defined"))?;
                if self.depth >= 16 {
                    return Err("locals refer to each other in a loop".into());
                }
                let cv = Cv { file, depth: self.depth + 1, ..*self };
                match &expr {
                    Expression::FuncCall(_) | Expression::Traversal(_) | Expression::Variable(_) => cv.hbs(&expr),
                    _ => Ok(Hbs::Text(cv.template(&expr)?)),
                }
            }
            "path" if rest == "root" || rest == "cwd" => Ok(Hbs::Text(self.cx.template_dir.clone())),
            "source" if rest == "name" => Ok(Hbs::Expr("image.name".into())),
            "build" if rest == "name" => Ok(Hbs::Expr("image.name".into())),
            "data" => Ok(Hbs::Expr(path.clone())),
            _ => Err(format!("`{path}` is a value Packer fills in; imgbake has no such value")),
        }
    }

    fn call(&self, name: &str, args: &[&Expression]) -> Result<Hbs, String> {
        let arg = |i: usize| -> Result<String, String> {
            match self.hbs(args.get(i).ok_or_else(|| format!("`{name}` needs more arguments"))?)? {
                Hbs::Expr(x) if x.contains(' ') => Ok(format!("({x})")),
                Hbs::Expr(x) => Ok(x),
                Hbs::Text(t) => Ok(quote(&t)),
            }
        };
        let literal = |i: usize| args.get(i).and_then(|e| e.as_str().map(str::to_string));
        Ok(Hbs::Expr(match (name, args.len()) {
            ("timestamp", 0) => "timestamp".into(),
            ("uuidv4", 0) => "uuid".into(),
            ("formatdate", 2) => {
                let spec = literal(0).ok_or("`formatdate` with a computed format")?;
                if !matches!(args[1], Expression::FuncCall(f) if f.name.name.as_str() == "timestamp") {
                    return Err("`formatdate` of anything but `timestamp()` has no imgbake counterpart".into());
                }
                format!("isotime {}", quote(&gotmpl::hcl_date_spec(&spec)?))
            }
            ("clean_resource_name", 1) => format!("clean_name {}", arg(0)?),
            ("lower" | "upper", 1) => format!("{name} {}", arg(0)?),
            ("trimspace", 1) => format!("trim {}", arg(0)?),
            ("replace", 3) if !literal(1).is_some_and(|s| s.starts_with('/')) => {
                format!("replace {} {} {}", arg(0)?, arg(1)?, arg(2)?)
            }
            ("env", 1) => format!("env {} \"\"", arg(0)?),
            ("regex_replace", _) => {
                return Err(
                    "`regex_replace` has no imgbake helper; `replace` (plain text) or `clean_name` may do".into()
                );
            }
            ("vault" | "consul_key" | "aws_secretsmanager" | "aws_secretsmanager_raw", _) => {
                return Err(format!(
                    "`{name}()` reads a secret store while templating; imgbake takes secrets from sensitive variables: fetch it in CI and pass it with --var or IMGBAKE_VAR_x"
                ));
            }
            ("file", 1) => {
                return Err(
                    "`file()` inlines a file; give imgbake the path (e.g. `user_data_file`, a `file` step)".into()
                );
            }
            _ => {
                return Err(format!(
                    "the function `{name}` has no imgbake counterpart; compute the value outside and pass it with --var"
                ));
            }
        }))
    }
}

/// A string, or something that renders to one (a local that is a template stays text).
fn is_stringy(e: &Expression) -> bool {
    !matches!(e, Expression::Array(_) | Expression::Object(_) | Expression::Bool(_) | Expression::Number(_))
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn reads_a_directory_as_one_template() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "variables.pkr.hcl",
            "variable \"region\" {\n  type = string\n  default = \"eu-west-1\"\n}\nvariable \"pw\" {\n  sensitive = true\n}\n",
        );
        write(
            d.path(),
            "main.pkr.hcl",
            r#"locals { stamp = formatdate("YYYYMMDD-hhmm", timestamp()) }
# The base image
source "amazon-ebs" "base" {
  region   = var.region
  ami_name = "base-${local.stamp}"
  source_ami_filter {
    filters = { name = "debian-12-*" }
    owners  = ["136693071363"]
  }
  launch_block_device_mappings { device_name = "/dev/xvda" }
  launch_block_device_mappings { device_name = "/dev/xvdb" }
}
build {
  sources = ["source.amazon-ebs.base"]
  provisioner "shell" {
    only   = ["amazon-ebs.base"]
    inline = ["echo ${upper(var.region)}"]
  }
  post-processor "manifest" {}
}
"#,
        );
        let t = read(d.path()).unwrap();
        assert_eq!(t.variables.len(), 2);
        assert!(t.variables[1].sensitive && t.variables[1].default.is_none());
        let s = &t.builds[0].sources[0];
        assert_eq!(s.comment.as_deref(), Some("The base image"));
        assert_eq!(s.body.get("region").unwrap().str(), Some("{{ var.region }}"));
        assert_eq!(s.body.get("ami_name").unwrap().str(), Some("base-{{ isotime \"%Y%m%d-%H%M\" }}"));
        assert_eq!(s.body.get("launch_block_device_mappings").unwrap().list().unwrap().len(), 2);
        let p = &t.builds[0].provisioners[0];
        assert_eq!(p.only, vec!["base"]);
        assert_eq!(p.body.get("inline").unwrap().list().unwrap()[0].str(), Some("echo {{ upper var.region }}"));
        assert_eq!(s.loc.line, 3);
    }

    #[test]
    fn what_does_not_carry_over_is_named() {
        let d = tempfile::tempdir().unwrap();
        let f = write(
            d.path(),
            "t.pkr.hcl",
            "source \"null\" \"x\" {\n  communicator = var.a ? \"ssh\" : \"none\"\n}\nbuild { sources = [\"source.null.x\"] }\n",
        );
        let t = read(&f).unwrap();
        let (text, why) = t.builds[0].sources[0].body.get("communicator").unwrap().unmapped().unwrap();
        assert_eq!(text, "var.a ? \"ssh\" : \"none\"");
        assert!(why.contains("--var"), "{why}");
    }

    #[test]
    fn a_syntax_error_has_its_place() {
        let d = tempfile::tempdir().unwrap();
        let f = write(d.path(), "t.pkr.hcl", "source \"null\" \"x\" {\n  a = \n}\n");
        let e = read(&f).unwrap_err().to_string();
        assert!(e.contains("t.pkr.hcl:"), "{e}");
    }
}
