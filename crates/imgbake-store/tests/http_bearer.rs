//! Bearer tokens (Artifactory access tokens) from the environment and from a sensitive variable of
//! the tree. Its own test binary with a single test: the variables are set before any other thread
//! exists (setting them is unsafe otherwise).

mod common;

use common::{data, file, store};
use imgbake_store::{Client, NoProgress};
use imgbake_testbed::{Nginx, NginxOptions};

/// A server that takes one bearer token (Artifactory access tokens): the token from the
/// environment and from a sensitive variable of the tree both work; the token is in no message.
#[test]
fn bearer_tokens_from_the_environment_and_from_a_sensitive_variable() {
    const TOKEN: &str = "t0ken-for-imgbake";
    // SAFETY: the only test of this binary sets them before starting the runtime.
    unsafe {
        std::env::set_var("IMGBAKE_TEST_BEARER", TOKEN);
        std::env::set_var("IMGBAKE_TEST_BEARER_WRONG", "an-old-token");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(common::within(async {
        // Everything but the bed's own readiness probe needs the token.
        let check = vec![
            "set $deny \"\";".to_string(),
            format!("if ($http_authorization != \"Bearer {TOKEN}\") {{ set $deny y; }}"),
            "if ($uri = /__imgbake_bed_ready) { set $deny \"\"; }".to_string(),
            "if ($deny) { return 401; }".to_string(),
        ];
        let nginx =
            Nginx::start(NginxOptions { extra_server_config: check, ..Default::default() }).await.expect("nginx");
        let dir = tempfile::tempdir().expect("tempdir");
        let body = data(200_000, 9);
        let src = file(dir.path(), "f", &body);
        let toml = |auth: &str| format!("type = \"http\"\nurl = \"{}\"\n{auth}", nginx.url());

        let from_env = store("art", &toml("token_env = \"IMGBAKE_TEST_BEARER\""));
        let client = Client::open(&from_env).await.expect("open");
        client.upload("f", &src, &NoProgress).await.expect("upload with a bearer token");
        assert_eq!(client.get_bytes("f").await.expect("get").as_deref(), Some(&body[..]));

        let wrong = store("art", &toml("token_env = \"IMGBAKE_TEST_BEARER_WRONG\""));
        let e = Client::open(&wrong).await.expect("open").head("f").await.unwrap_err();
        assert!(e.to_string().ends_with("(401): check the token in IMGBAKE_TEST_BEARER_WRONG"), "{e}");
        assert!(!e.to_string().contains("an-old-token"), "{e}");

        // The same token as a sensitive variable of the tree.
        let tree_file = dir.path().join("tree.toml");
        std::fs::write(
            &tree_file,
            format!(
                "[variables.store_token]\nsensitive = true\n\n[stores.art]\n{}\n[images.x]\nbuilder = \"dir\"\nsource = {{}}\ncommunicator = {{ username = \"u\" }}\n",
                toml("token = \"{{ var.store_token }}\"")
            ),
        )
        .expect("tree");
        let opts = imgbake_config::LoadOptions {
            vars: vec![("store_token".into(), TOKEN.into())],
            schemas: imgbake_config::Schemas::new().with(imgbake_config::schema::Open::new("dir", &[]).arc()),
            ..Default::default()
        };
        let tree = imgbake_config::Tree::load(&tree_file, &opts).expect("valid tree");
        let st = tree.store("art").expect("store art");
        assert!(!format!("{st:?}").contains(TOKEN), "the store's Debug hides the token");
        let client = Client::open(st).await.expect("open");
        client.upload("g", &src, &NoProgress).await.expect("upload with the variable's token");
        assert!(nginx.access_log().iter().filter(|l| l.contains("PUT /") && l.contains(" 201 ")).count() >= 2);
    }));
}
