//! Credentials from environment variables. Its own test binary with a single test: the
//! variables are set before any other thread exists (setting them is unsafe otherwise).

mod common;

use common::{data, file, store};
use imgbake_store::{Client, NoProgress, StoreError};
use imgbake_testbed::{Nginx, NginxOptions};

#[test]
fn basic_and_bearer_credentials_from_the_environment() {
    // SAFETY: the only test of this binary sets them before starting the runtime.
    unsafe {
        std::env::set_var("IMGBAKE_TEST_STORE_USER", "ci");
        std::env::set_var("IMGBAKE_TEST_STORE_PASS", "s3cret");
        std::env::set_var("IMGBAKE_TEST_STORE_BADPASS", "wrong");
        std::env::set_var("IMGBAKE_TEST_STORE_TOKEN", "not-a-basic-credential");
        std::env::set_var("IMGBAKE_TEST_STORE_EMPTY", "");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(common::within(async {
        let options = NginxOptions { basic_auth: Some(("ci".into(), "s3cret".into())), ..Default::default() };
        let nginx = Nginx::start(options).await.expect("nginx");
        let dir = tempfile::tempdir().expect("tempdir");
        let src = file(dir.path(), "f", &data(100_000, 8));
        let toml = |auth: &str| format!("type = \"http\"\nurl = \"{}\"\n{auth}", nginx.url());

        let good = store(
            "art",
            &toml("username_env = \"IMGBAKE_TEST_STORE_USER\"\npassword_env = \"IMGBAKE_TEST_STORE_PASS\""),
        );
        let client = Client::open(&good).await.expect("open");
        client.upload("f", &src, &NoProgress).await.expect("upload with credentials from the environment");
        assert!(nginx.access_log().iter().any(|l| l.contains("\"PUT /f HTTP/1.1\" 201") && l.contains("user=\"ci\"")));

        let bad = store(
            "art",
            &toml("username_env = \"IMGBAKE_TEST_STORE_USER\"\npassword_env = \"IMGBAKE_TEST_STORE_BADPASS\""),
        );
        let e = Client::open(&bad).await.expect("open").head("f").await.unwrap_err();
        assert!(matches!(e, StoreError::Denied { status: 401, .. }), "{e}");
        assert!(
            e.to_string().ends_with("check the credentials in IMGBAKE_TEST_STORE_USER/IMGBAKE_TEST_STORE_BADPASS"),
            "{e}"
        );

        // nginx wants basic auth: a bearer token is refused, and the hint names its variable.
        let bearer = store("art", &toml("token_env = \"IMGBAKE_TEST_STORE_TOKEN\""));
        let e = Client::open(&bearer).await.expect("open").head("f").await.unwrap_err();
        assert!(e.to_string().ends_with("(401): check the token in IMGBAKE_TEST_STORE_TOKEN"), "{e}");

        let empty = store(
            "art",
            &toml("username_env = \"IMGBAKE_TEST_STORE_USER\"\npassword_env = \"IMGBAKE_TEST_STORE_EMPTY\""),
        );
        let e = Client::open(&empty).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "store `art`: environment variable IMGBAKE_TEST_STORE_EMPTY (`password_env`) is not set"
        );
    }));
}
