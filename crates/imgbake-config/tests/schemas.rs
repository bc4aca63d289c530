//! The generic machinery builders plug into, with a test builder (`kiln`) that knows nothing of any
//! real platform: its settings are typed and checked with the same located diagnostics as the rest of
//! the file, inherited like them, and its `source` keys are its own.

use std::collections::BTreeMap;
use std::sync::Arc;

use imgbake_config::schema::Open;
use imgbake_config::{
    BuilderSchema, Check, Diagnostic, Image, LoadOptions, Parsed, Raw, Schemas, Source, Span, Spanned, Tree,
};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct KilnSettings {
    temperature: Option<Spanned<u32>>,
    glaze: Option<String>,
    recipe: Option<Spanned<String>>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct KilnSource {
    clay: Option<Spanned<String>>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct KilnPublish {
    showroom: Option<Spanned<String>>,
}

struct Kiln;

impl BuilderSchema for Kiln {
    fn name(&self) -> &str {
        "kiln"
    }
    fn source_keys(&self) -> &[&str] {
        &["clay"]
    }
    fn parse_settings(&self, raw: Raw<'_>) -> Result<Parsed, Diagnostic> {
        raw.parse::<KilnSettings>()
    }
    fn parse_source(&self, raw: Raw<'_>) -> Result<Parsed, Diagnostic> {
        raw.parse::<KilnSource>()
    }
    fn check_source(&self, cx: &mut Check<'_>, image: &Image, source: &Spanned<Source>) {
        if source.get_ref().get::<KilnSource>("kiln").is_none_or(|s| s.clay.is_none()) {
            cx.push(Diagnostic::at(
                Span::new(source.span()),
                format!("source of image `{}` (kiln) needs `clay`", image.name),
            ));
        }
    }
    fn check(&self, cx: &mut Check<'_>, image: &Image) {
        let Some(k) = image.settings::<KilnSettings>("kiln") else { return };
        if let Some(t) = &k.temperature
            && *t.get_ref() > 1300
        {
            cx.push(Diagnostic::at(Span::new(t.span()), "temperature above 1300 cracks the kiln"));
        }
        if let Some(r) = &k.recipe {
            cx.file(r, "recipe");
        }
    }
    fn operational_keys(&self) -> &[&str] {
        &["glaze"]
    }
    fn publish_keys(&self) -> &[&str] {
        &["store", "showroom"]
    }
    fn parse_publish(&self, raw: Raw<'_>) -> Result<Parsed, Diagnostic> {
        raw.parse::<KilnPublish>()
    }
    fn local_files<'a>(&self, image: &'a Image) -> Vec<&'a Spanned<String>> {
        image.settings::<KilnSettings>("kiln").and_then(|k| k.recipe.as_ref()).into_iter().collect()
    }
    fn needs_tree_id(&self) -> bool {
        true
    }
    fn source_label(&self, source: &Source) -> Option<String> {
        source.get::<KilnSource>("kiln")?.clay.as_ref().map(|c| format!("clay {}", c.get_ref()))
    }
}

fn schemas() -> Schemas {
    Schemas::new().with(Arc::new(Kiln)).with(Open::new("oven", &["tray"]).arc()).planned(&["furnace"])
}

fn load(text: &str) -> (tempfile::TempDir, Result<Tree, String>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tree.toml"), text).unwrap();
    std::fs::write(dir.path().join("recipe.txt"), "fire slowly").unwrap();
    let opts = LoadOptions { env: BTreeMap::new(), schemas: schemas(), ..Default::default() };
    let r = Tree::load(&dir.path().join("tree.toml"), &opts)
        .map_err(|e| e.to_string().replace(&dir.path().display().to_string(), "T"));
    (dir, r)
}

const HEAD: &str =
    "[settings]\nid = \"schema-test-0001\"\n[defaults]\nbuilder = \"kiln\"\ncommunicator = { username = \"potter\" }\n";

#[test]
fn settings_are_typed_inherited_and_overridden() {
    let (_d, t) = load(&format!(
        "{HEAD}kiln = {{ temperature = 900, glaze = \"blue\" }}\n[images.bowl]\nsource = {{ clay = \"red\" }}\nkiln = {{ recipe = \"recipe.txt\" }}\n[images.cup]\nparent = \"bowl\"\nkiln = {{ temperature = 1000 }}\n"
    ));
    let t = t.unwrap();
    let cup = t.image("cup").unwrap().settings::<KilnSettings>("kiln").unwrap();
    assert_eq!(*cup.temperature.as_ref().unwrap().get_ref(), 1000, "its own value wins");
    assert_eq!(cup.recipe.as_ref().unwrap().get_ref(), "recipe.txt", "the parent's value is inherited");
    assert_eq!(cup.glaze.as_deref(), Some("blue"), "[defaults.kiln] applies");
    let bowl = t.image("bowl").unwrap();
    assert_eq!(t.local_files_for(bowl, "kiln"), vec![t.root_dir().join("recipe.txt")]);
    assert!(t.local_files_for(bowl, "oven").is_empty());
    let dot = imgbake_config::graph::render(&t, imgbake_config::graph::GraphFormat::Dot);
    assert!(dot.contains("clay red"), "{dot}");
}

#[test]
fn settings_errors_are_located_with_suggestions() {
    let (_d, e) =
        load(&format!("{HEAD}[images.bowl]\nsource = {{ clay = \"red\" }}\n[images.bowl.kiln]\ntemprature = 900\n"));
    let e = e.unwrap_err();
    assert!(
        e.contains("T/tree.toml:9:1: unknown key `temprature` in images.bowl.kiln (did you mean `temperature`?)"),
        "{e}"
    );
    let (_d, e) = load(&format!(
        "{HEAD}[images.bowl]\nsource = {{ clay = \"red\" }}\nkiln = {{ temperature = 1400, recipe = \"nope.txt\" }}\n"
    ));
    let e = e.unwrap_err();
    assert!(e.contains("T/tree.toml:8:24: temperature above 1300 cracks the kiln"), "{e}");
    assert!(e.contains("T/tree.toml:8:39: recipe `nope.txt` does not exist"), "{e}");
}

#[test]
fn builder_names_come_from_the_schemas() {
    let (_d, e) = load(&format!(
        "{HEAD}[images.a]\nbuilder = \"kiln2\"\nsource = {{ clay = \"red\" }}\n[images.b]\nbuilder = \"furnace\"\nsource = {{ clay = \"red\" }}\n[images.c]\nbuilder = \"pottery\"\nsource = {{ clay = \"red\" }}\n[images.d]\nsource = {{ clay = \"red\" }}\nkin = {{}}\n"
    ));
    let e = e.unwrap_err();
    assert!(e.contains("T/tree.toml:7:11: image `a`: unknown builder `kiln2` (did you mean `kiln`?"), "{e}");
    assert!(e.contains("T/tree.toml:10:11: image `b`: the `furnace` builder is not available in this version"), "{e}");
    assert!(e.contains("T/tree.toml:13:11: image `c`: unknown builder `pottery` (builders: kiln, oven)"), "{e}");
    assert!(e.contains("T/tree.toml:17:1: unknown key `kin` in images.d (did you mean `kiln`?)"), "{e}");
}

#[test]
fn source_keys_belong_to_their_builder() {
    let (_d, e) = load(&format!(
        "{HEAD}[images.a]\nsource = {{ clay = \"red\", tray = \"t\" }}\n[images.b]\nsource = {{ cley = \"red\" }}\n[images.c]\nsource = {{ tray = \"t\" }}\n"
    ));
    let e = e.unwrap_err();
    assert!(
        e.contains("T/tree.toml:7:10: source.tray is for the oven builder, but image `a` does not build with it"),
        "{e}"
    );
    assert!(e.contains("T/tree.toml:9:12: unknown key `cley` in images.b.source (did you mean `clay`?)"), "{e}");
    assert!(e.contains("T/tree.toml:11:10: source of image `c` (kiln) needs `clay`"), "{e}");
    // An image built with both builders may give both builders' keys.
    let (_d, t) = load(&format!(
        "{HEAD}[images.a]\nbuilder = [\"kiln\", \"oven\"]\nsource = {{ clay = \"red\", tray = \"t\" }}\n"
    ));
    let t = t.unwrap();
    let src = t.image("a").unwrap().source.as_ref().unwrap().get_ref();
    assert_eq!(src.json("oven").unwrap()["tray"], "t");
    assert_eq!(src.get::<KilnSource>("kiln").unwrap().clay.as_ref().unwrap().get_ref(), "red");
}

#[test]
fn a_builder_may_require_a_tree_id() {
    let text = "[defaults]\nbuilder = \"kiln\"\ncommunicator = { username = \"potter\" }\n[images.a]\nsource = { clay = \"red\" }\n";
    let (_d, e) = load(text);
    let e = e.unwrap_err();
    assert!(e.contains("T/tree.toml:4:9: this tree builds with kiln (image `a`) but has no `settings.id`"), "{e}");
    let (_d, t) = load(&text.replace("\"kiln\"", "\"oven\"").replace("clay", "tray"));
    t.unwrap();
}

#[test]
fn without_schemas_no_builder_is_known() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree.toml");
    std::fs::write(&tree, "[images.a]\nbuilder = \"kiln\"\ncommunicator = { username = \"u\" }\n").unwrap();
    let e = Tree::load(&tree, &LoadOptions::default()).unwrap_err().to_string();
    assert!(
        e.contains("tree.toml:2:11: image `a`: unknown builder `kiln` (builders: none in this build of imgbake)"),
        "{e}"
    );
    std::fs::write(
        &tree,
        "[images.a]\nbuilder = \"kiln\"\ncommunicator = { username = \"u\" }\nsource = { clay = \"red\" }\n",
    )
    .unwrap();
    let e = Tree::load(&tree, &LoadOptions::default()).unwrap_err().to_string();
    assert!(e.contains("tree.toml:4:12: unknown key `clay` in images.a.source (no builder reads source keys; builders: none in this build of imgbake)"), "{e}");
}

#[test]
fn publish_keys_belong_to_the_builders_that_claim_them() {
    let stores = "[stores.shelf]\ntype = \"http\"\nurl = \"http://127.0.0.1:1/pots\"\n";
    let (_d, t) = load(&format!(
        "{HEAD}{stores}[images.bowl]\nsource = {{ clay = \"red\" }}\npublish = {{ store = \"shelf\", showroom = \"front\" }}\n"
    ));
    let t = t.unwrap();
    let p = t.image("bowl").unwrap().publish.as_ref().unwrap();
    assert_eq!(p.store().unwrap().get_ref(), "shelf");
    assert_eq!(p.get::<KilnPublish>("kiln").unwrap().showroom.as_ref().unwrap().get_ref(), "front");
    assert_eq!(t.store("shelf").unwrap().url.as_ref().unwrap().get_ref(), "http://127.0.0.1:1/pots");

    // oven claims no publish key: an oven image that asks to publish would silently not.
    let (_d, e) = load(&format!(
        "{HEAD}{stores}[images.tray]\nbuilder = \"oven\"\nsource = {{ tray = \"t\" }}\npublish = {{ store = \"shelf\" }}\n"
    ));
    let e = e.unwrap_err();
    assert!(e.contains("publish.store has no effect on image `tray`: it builds with oven"), "{e}");
    assert!(e.contains("publish.store is for images built with kiln"), "{e}");

    let (_d, e) = load(&format!(
        "{HEAD}{stores}[images.bowl]\nsource = {{ clay = \"red\" }}\npublish = {{ store = \"shelve\", shworoom = \"x\" }}\n"
    ));
    let e = e.unwrap_err();
    assert!(e.contains("unknown key `shworoom` in images.bowl.publish (did you mean `showroom`?)"), "{e}");
    let (_d, e) = load(&format!(
        "{HEAD}{stores}[images.bowl]\nsource = {{ clay = \"red\" }}\npublish = {{ store = \"shelve\" }}\n"
    ));
    let e = e.unwrap_err();
    assert!(
        e.contains(
            "tree.toml:11:21: publish.store of image `bowl` names unknown store `shelve` (did you mean `shelf`?)"
        ),
        "{e}"
    );
}

#[test]
fn stores_are_checked_offline_with_their_type_s_keys() {
    let cases = [
        ("type = \"ftp\"\n", "unknown type `ftp` of store `a`"),
        ("type = \"htp\"\nurl = \"http://x\"\n", "did you mean `http`?"),
        ("type = \"http\"\n", "store `a` (type `http`) needs `url`"),
        ("type = \"s3\"\n", "store `a` (type `s3`) needs `bucket`"),
        ("type = \"s3\"\nbucket = \"b\"\ntoken_env = \"T\"\n", "store `a` is of type `s3`, which has no `token_env`"),
        ("type = \"http\"\nurl = \"ftp://x\"\n", "the url of store `a` must start with http:// or https://"),
        ("type = \"http\"\nurl = \"https://me:pw@x/y\"\n", "the url of store `a` holds credentials (user@host)"),
        (
            "type = \"http\"\nurl = \"http://x\"\ntoken_env = \"T\"\nusername_env = \"U\"\npassword_env = \"P\"\n",
            "both basic (username/password) and bearer (token)",
        ),
        ("type = \"http\"\nurl = \"http://x\"\nusername_env = \"U\"\n", "basic auth needs a user name and a password"),
        (
            "type = \"http\"\nurl = \"http://x\"\ntoken_env = \"MY-TOKEN\"\n",
            "`MY-TOKEN` is not an environment variable name",
        ),
        (
            "type = \"http\"\nurl = \"http://x\"\nbukket = \"b\"\n",
            "unknown key `bukket` in stores.a (did you mean `bucket`?)",
        ),
    ];
    for (body, want) in cases {
        let (_d, e) = load(&format!("{HEAD}[stores.a]\n{body}[images.bowl]\nsource = {{ clay = \"red\" }}\n"));
        let e = e.expect_err(body);
        assert!(e.contains(want), "{body}: {e}");
    }
    let (_d, t) = load(&format!(
        "{HEAD}[stores.a]\ntype = \"s3\"\nbucket = \"b\"\nprefix = \"images\"\n[stores.b]\ntype = \"http\"\nurl = \"https://x/y\"\ntoken_env = \"TOKEN\"\n[images.bowl]\nsource = {{ clay = \"red\" }}\n"
    ));
    let t = t.unwrap();
    assert_eq!(t.stores().keys().collect::<Vec<_>>(), ["a", "b"]);

    // Credentials given directly never show in a Debug print of the store (or of the tree).
    let (_d, t) = load(&format!(
        "{HEAD}[stores.a]\ntype = \"http\"\nurl = \"https://x/y\"\ntoken = \"tok-12345\"\n[images.bowl]\nsource = {{ clay = \"red\" }}\n"
    ));
    let shown = format!("{:?}", t.unwrap().store("a").unwrap());
    assert!(!shown.contains("tok-12345") && shown.contains("<sensitive>"), "{shown}");
}
