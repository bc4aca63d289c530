//! The corpus (tests/corpus/NN-*/): Packer templates in the shapes teams write, each with a
//! `case.toml` saying how Packer was run. Every one must import to a tree that validates (with the
//! case's `vars`), and its report must name exactly the keys listed in the case's `unmapped.txt`
//! (`file:line key`, relative to the case directory). `IMGBAKE_BLESS=1` rewrites those lists.

use std::path::{Path, PathBuf};

use imgbake_import::{ImportParams, Imported, Outcome, import};

fn tree_home(case: &Case) -> String {
    case.dir.join("home").display().to_string()
}

#[derive(serde::Deserialize)]
struct Case {
    #[serde(skip)]
    dir: PathBuf,
    #[allow(dead_code)]
    note: String,
    inputs: Vec<PathBuf>,
    #[serde(default)]
    var_files: Vec<PathBuf>,
    #[serde(default)]
    vars: toml::Table,
    #[serde(default)]
    chain: Vec<String>,
    /// Chains the import must find: image → its parent.
    #[serde(default)]
    parents: std::collections::BTreeMap<String, String>,
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn run(dir: &Path, out: &Path) -> (Case, Imported) {
    let mut case: Case = toml::from_str(&std::fs::read_to_string(dir.join("case.toml")).unwrap()).unwrap();
    case.dir = dir.to_path_buf();
    let params = ImportParams {
        inputs: case.inputs.iter().map(|p| dir.join(p)).collect(),
        var_files: case.var_files.iter().map(|p| dir.join(p)).collect(),
        chains: case
            .chain
            .iter()
            .map(|c| {
                let (p, ch) = c.split_once('=').unwrap();
                (dir.join(p), dir.join(ch))
            })
            .collect(),
        output: out.to_path_buf(),
        name: None,
    };
    let imported = import(&params).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    (case, imported)
}

/// Validates as CI would run it: with the case's `-var`s (those the tree still declares) and the
/// environment a build job has.
fn validate(tree: &Path, text: &str, case: &Case) -> Result<imgbake::config::Tree, String> {
    let declared: toml::Table = text
        .parse::<toml::Table>()
        .ok()
        .and_then(|t| t.get("variables").cloned())
        .and_then(|v| v.as_table().cloned())
        .unwrap_or_default();
    let vars = case
        .vars
        .iter()
        .map(|(k, v)| (k.replace('-', "_"), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
        .filter(|(k, _)| declared.contains_key(k))
        .collect();
    // A case's `home/` is the build job's home directory (keys the template reads from it).
    let home = tree_home(case);
    let env = [
        ("AWS_DEFAULT_REGION", "eu-west-1"),
        ("AWS_REGION", "eu-west-1"),
        ("HOME", home.as_str()),
        ("USER", "ci"),
        ("CI_PIPELINE_ID", "1187"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let opts = imgbake::config::LoadOptions { vars, env, ..imgbake::load_options() };
    imgbake::config::Tree::load(tree, &opts).map_err(|d| d.render(false))
}

fn unmapped_lines(dir: &Path, imported: &Imported) -> Vec<String> {
    let mut lines: Vec<String> = imported
        .report
        .unmapped()
        .map(|e| {
            let file = e.loc.file.strip_prefix(dir).unwrap_or(&e.loc.file).display().to_string();
            format!("{file}:{} {}", e.loc.line, e.key)
        })
        .collect();
    lines.sort();
    lines.dedup();
    lines
}

#[test]
fn every_template_of_the_corpus_imports_to_a_tree_that_validates_or_names_what_is_missing() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("case.toml").exists())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 20, "the corpus has {} cases", dirs.len());
    let bless = std::env::var_os("IMGBAKE_BLESS").is_some();
    let mut failures = Vec::new();
    for dir in &dirs {
        let out = tempfile::tempdir().unwrap();
        let tree_path = out.path().join("tree.toml");
        let (case, imported) = run(dir, &tree_path);
        std::fs::write(&tree_path, &imported.tree).unwrap();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if imported.tree.contains("[images.") {
            match validate(&tree_path, &imported.tree, &case) {
                Err(d) => failures.push(format!("── {name}: the tree does not validate:\n{d}\n{}", imported.tree)),
                Ok(tree) => {
                    let parents: std::collections::BTreeMap<String, String> = tree
                        .images()
                        .iter()
                        .filter_map(|(n, i)| i.parent.as_ref().map(|p| (n.to_string(), p.get_ref().to_string())))
                        .collect();
                    if parents != case.parents {
                        failures.push(format!("── {name}: chains {parents:?}, expected {:?}", case.parents));
                    }
                }
            }
        } else if imported.report.count(Outcome::Unmapped) == 0 {
            failures.push(format!("── {name}: no image and nothing reported unmapped"));
        }
        let lines = unmapped_lines(dir, &imported);
        let expected_file = dir.join("unmapped.txt");
        if bless {
            let text = if lines.is_empty() { String::new() } else { lines.join("\n") + "\n" };
            std::fs::write(&expected_file, text).unwrap();
            continue;
        }
        let expected: Vec<String> =
            std::fs::read_to_string(&expected_file).unwrap_or_default().lines().map(str::to_string).collect();
        if lines != expected {
            failures.push(format!(
                "── {name}: unmapped keys differ\n  expected: {expected:#?}\n  got: {lines:#?}\n{}",
                imported.report
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every key of every JSON template (builders, provisioners, post-processors, variables) has a
/// line in the report: read independently of the importer, with serde_json.
#[test]
fn every_key_of_the_json_templates_is_in_the_report() {
    let mut missing = Vec::new();
    for dir in std::fs::read_dir(corpus()).unwrap().map(|e| e.unwrap().path()).filter(|p| p.join("case.toml").exists())
    {
        let out = tempfile::tempdir().unwrap();
        let (case, imported) = run(&dir, &out.path().join("tree.toml"));
        let keys: std::collections::HashSet<&str> = imported.report.entries.iter().map(|e| e.key.as_str()).collect();
        for input in case.inputs.iter().filter(|p| p.extension().is_some_and(|e| e == "json")) {
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join(input)).unwrap()).unwrap();
            let mut expect = |prefix: String, obj: &serde_json::Value| {
                for k in obj.as_object().into_iter().flat_map(|o| o.keys()) {
                    if !["type", "name", "_comment", "only", "except"].contains(&k.as_str())
                        && !keys.contains(format!("{prefix}.{k}").as_str())
                    {
                        missing.push(format!("{}: {prefix}.{k}", dir.join(input).display()));
                    }
                }
            };
            for b in v["builders"].as_array().into_iter().flatten() {
                expect(b["type"].as_str().unwrap().to_string(), b);
            }
            for p in v["provisioners"].as_array().into_iter().flatten() {
                expect(format!("provisioner {}", p["type"].as_str().unwrap()), p);
            }
            for p in v["post-processors"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|p| p.as_array().cloned().unwrap_or_else(|| vec![p.clone()]))
            {
                if let Some(t) = p["type"].as_str() {
                    expect(format!("post-processor {t}"), &p);
                }
            }
            for name in v["variables"].as_object().into_iter().flat_map(|o| o.keys()) {
                if !keys.contains(format!("variable {}", name.replace('-', "_")).as_str()) {
                    missing.push(format!("{}: variable {name}", dir.join(input).display()));
                }
            }
        }
    }
    assert!(missing.is_empty(), "keys without a report line:\n{}", missing.join("\n"));
}
