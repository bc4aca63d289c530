//! `http` stores against a real nginx (WebDAV PUT) on loopback.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::{data, file, listing, sha256_hex, store, within};
use imgbake_store::{Client, NoProgress, StoreError, Tuning};
use imgbake_testbed::{Nginx, NginxOptions};

/// GET lines of nginx's access log (nginx logs a request after answering it, so a PUT just
/// answered may or may not be logged yet).
fn gets(nginx: &Nginx) -> Vec<String> {
    nginx.access_log().into_iter().filter(|l| l.contains("\"GET ")).collect()
}

async fn nginx(options: NginxOptions) -> Nginx {
    Nginx::start(options).await.expect("nginx (run tests/bed/install.sh)")
}

fn http_store(nginx: &Nginx, extra: &str) -> imgbake_config::Store {
    store("artifacts", &format!("type = \"http\"\nurl = \"{}/\"\nprefix = \"images/\"\n{extra}", nginx.url()))
}

/// Short backoff budget so failing tests fail fast.
fn quick() -> Tuning {
    Tuning { attempts: 2, stall_timeout: Duration::from_secs(10), ..Tuning::default() }
}

#[tokio::test]
async fn upload_download_round_trip_with_checksums_and_progress() {
    within(async {
        let nginx = nginx(NginxOptions::default()).await;
        let client = Client::open(&http_store(&nginx, "")).await.expect("open");
        assert_eq!(client.describe(), format!("http store `artifacts` ({}/images)", nginx.url()));
        let dir = tempfile::tempdir().expect("tempdir");
        let bytes = data(3 << 20, 1);
        let src = file(dir.path(), "base.box", &bytes);

        let calls = Mutex::new(Vec::new());
        let progress = |done: u64, total: Option<u64>| calls.lock().expect("lock").push((done, total));
        let object = client.upload("base/1.0/base.box", &src, &progress).await.expect("upload");
        assert_eq!(object.size, bytes.len() as u64);
        assert_eq!(object.sha256, sha256_hex(&bytes));
        assert_eq!(object.url, format!("{}/images/base/1.0/base.box", nginx.url()));
        assert_eq!(calls.lock().expect("lock").last(), Some(&(bytes.len() as u64, Some(bytes.len() as u64))));

        // Stored byte for byte, with a sha256sum-style sidecar.
        let stored = nginx.root().join("images/base/1.0/base.box");
        assert_eq!(std::fs::read(&stored).expect("stored file"), bytes);
        let sidecar = std::fs::read_to_string(nginx.root().join("images/base/1.0/base.box.sha256")).expect("sidecar");
        assert_eq!(sidecar, format!("{}  base.box\n", object.sha256));
        let log = nginx.access_log().join("\n");
        assert!(log.contains("\"PUT /images/base/1.0/base.box HTTP/1.1\" 201"), "{log}");

        let info = client.head("base/1.0/base.box").await.expect("head").expect("exists");
        assert_eq!(info.size, bytes.len() as u64);

        let dest = dir.path().join("out/base.box");
        let got = client.download("base/1.0/base.box", &dest, None, &NoProgress).await.expect("download");
        assert_eq!(std::fs::read(&dest).expect("dest"), bytes);
        assert_eq!((got.sha256, got.sha1), (object.sha256.clone(), object.sha1.clone()));
        assert_eq!(listing(&dir.path().join("out")), ["base.box"]);

        // With the checksum given, the sidecar is not even read.
        let before = gets(&nginx).len();
        let dest2 = dir.path().join("again.box");
        client
            .download("base/1.0/base.box", &dest2, Some(&object.sha256.to_uppercase()), &NoProgress)
            .await
            .expect("again");
        let new: Vec<String> = gets(&nginx).split_off(before);
        assert_eq!(new.len(), 1, "{new:?}");
    })
    .await;
}

#[tokio::test]
async fn a_flipped_byte_is_rejected_and_nothing_is_kept() {
    within(async {
        let nginx = nginx(NginxOptions::default()).await;
        let client = Client::open(&http_store(&nginx, "")).await.expect("open").with_tuning(quick());
        let dir = tempfile::tempdir().expect("tempdir");
        let bytes = data(1 << 20, 2);
        let object = client.upload("a/disk.img", &file(dir.path(), "disk.img", &bytes), &NoProgress).await.expect("up");

        let stored = nginx.root().join("images/a/disk.img");
        let mut corrupt = bytes.clone();
        corrupt[123_456] ^= 0x01;
        std::fs::write(&stored, &corrupt).expect("corrupt");

        let out = dir.path().join("out");
        for expected in [None, Some(object.sha256.as_str())] {
            let e = client.download("a/disk.img", &out.join("disk.img"), expected, &NoProgress).await.unwrap_err();
            let text = e.to_string();
            assert!(matches!(e, StoreError::Checksum { .. }), "{text}");
            assert!(text.contains(&object.sha256) && text.contains(&sha256_hex(&corrupt)), "{text}");
            assert!(text.contains("`a/disk.img`") && text.contains("http store `artifacts`"), "{text}");
            assert!(!text.contains('\n'));
            assert_eq!(listing(&out), Vec::<String>::new(), "no file, no .partial");
        }
        // get_bytes checks nothing here (nginx records no checksum header), fetch does.
        let cache = dir.path().join("cache");
        let e = imgbake_store::fetch(&object.url, &object.sha256, &cache, &NoProgress).await.unwrap_err();
        assert!(matches!(e, StoreError::Checksum { .. }), "{e}");
        assert_eq!(listing(&cache.join(&object.sha256)), Vec::<String>::new());
    })
    .await;
}

#[tokio::test]
async fn missing_objects_say_404_with_key_and_store() {
    within(async {
        let nginx = nginx(NginxOptions::default()).await;
        let client = Client::open(&http_store(&nginx, "")).await.expect("open");
        let dir = tempfile::tempdir().expect("tempdir");
        let e = client.download("base/9.9/base.box", &dir.path().join("x"), None, &NoProgress).await.unwrap_err();
        assert!(e.is_not_found(), "{e}");
        let text = e.to_string();
        assert!(text.starts_with("`base/9.9/base.box` is not in http store `artifacts` (404"), "{text}");
        assert!(text.ends_with("was it published there?"), "{text}");
        assert_eq!(listing(dir.path()), Vec::<String>::new());
        assert_eq!(client.head("base/9.9/base.box").await.expect("head"), None);
        assert_eq!(client.get_bytes("base/9.9/meta.json").await.expect("get"), None);
        client.delete("base/9.9/base.box").await.expect("deleting nothing is fine");
        let e = client.download("../etc/passwd", &dir.path().join("x"), None, &NoProgress).await.unwrap_err();
        assert!(matches!(e, StoreError::InvalidKey { .. }), "{e}");
    })
    .await;
}

#[tokio::test]
async fn wrong_or_missing_credentials_are_refused_clearly() {
    within(async {
        let options = NginxOptions { basic_auth: Some(("ci".into(), "s3cret".into())), ..Default::default() };
        let nginx = nginx(options).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let src = file(dir.path(), "f.bin", &data(2 << 20, 3));

        let right = Client::open(&http_store(&nginx, "username = \"ci\"\npassword = \"s3cret\"")).await.expect("open");
        right.upload("f.bin", &src, &NoProgress).await.expect("upload with the right password");
        assert!(!format!("{right:?}").contains("s3cret"), "Debug shows no credentials");

        let wrong = Client::open(&http_store(&nginx, "username = \"ci\"\npassword = \"nope\"")).await.expect("open");
        let e = wrong.upload("g.bin", &src, &NoProgress).await.unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, StoreError::Denied { status: 401, .. }), "{text}");
        assert_eq!(
            text,
            "http store `artifacts` refused PUT `g.bin` (401): check the credentials in `username`/`password`"
        );
        assert!(!nginx.root().join("images/g.bin").exists());
        let e = wrong.download("f.bin", &dir.path().join("f"), None, &NoProgress).await.unwrap_err();
        assert!(e.to_string().contains("refused GET `f.bin.sha256` (401)"), "{e}");

        let anonymous = Client::open(&http_store(&nginx, "")).await.expect("open");
        let e = anonymous.head("f.bin").await.unwrap_err();
        assert!(
            e.to_string()
                .ends_with("(401): the store sends no credentials: set `username_env`/`password_env` or `token_env`"),
            "{e}"
        );
    })
    .await;
}

#[tokio::test]
async fn settings_and_environment_errors_come_at_open() {
    within(async {
        let url = "type = \"http\"\nurl = \"http://127.0.0.1:9\"\n";
        let cases = [
            (
                format!("{url}username_env = \"IMGBAKE_TEST_UNSET_USER\"\npassword = \"x\""),
                "store `artifacts`: environment variable IMGBAKE_TEST_UNSET_USER (`username_env`) is not set",
            ),
            (
                format!("{url}username = \"u\"\npassword_env = \"IMGBAKE_TEST_UNSET_PASS\""),
                "store `artifacts`: environment variable IMGBAKE_TEST_UNSET_PASS (`password_env`) is not set",
            ),
            (
                format!("{url}token_env = \"IMGBAKE_TEST_UNSET_TOKEN\""),
                "store `artifacts`: environment variable IMGBAKE_TEST_UNSET_TOKEN (`token_env`) is not set",
            ),
            (format!("{url}username = \"u\""), "basic auth needs both"),
            (format!("{url}token = \"t\"\nusername = \"u\"\npassword = \"p\""), "not both"),
            ("type = \"http\"".to_owned(), "`type = \"http\"` needs `url`"),
            ("type = \"http\"\nurl = \"ftp://x/y\"".to_owned(), "must be http:// or https://"),
            ("type = \"webdav\"\nurl = \"http://x\"".to_owned(), "unknown type `webdav`"),
            ("type = \"s3\"\nbucket = \"b\"\nregion = \"us-east-1\"\ntoken = \"t\"".to_owned(), "for `http` stores"),
        ];
        for (toml, wanted) in cases {
            let e = Client::open(&store("artifacts", &toml)).await.unwrap_err();
            assert!(e.to_string().contains(wanted), "{toml}: {e}");
        }
        let stores: Vec<(String, imgbake_config::Store)> =
            vec![("a".into(), store("a", url)), ("b".into(), store("b", url))];
        let e = Client::open_named(stores.iter().map(|(n, s)| (n, s)), "c").await.unwrap_err();
        assert_eq!(e.to_string(), "unknown store `c` (defined: `a`, `b`)");
        let b = Client::open_named(stores.iter().map(|(n, s)| (n, s)), "b").await.expect("b");
        assert_eq!(b.name(), "b");
    })
    .await;
}

#[tokio::test]
async fn downloads_resume_a_partial_file_with_a_range_request() {
    within(async {
        let nginx = nginx(NginxOptions::default()).await;
        let client = Client::open(&http_store(&nginx, "")).await.expect("open");
        let dir = tempfile::tempdir().expect("tempdir");
        let bytes = data(4 << 20, 4);
        let object = client.upload("r/big.img", &file(dir.path(), "big.img", &bytes), &NoProgress).await.expect("up");

        // Half of it from an earlier, interrupted run.
        let dest = dir.path().join("big.img");
        std::fs::write(dir.path().join("big.img.partial"), &bytes[..2 << 20]).expect("partial");
        let before = gets(&nginx).len();
        client.download("r/big.img", &dest, Some(&object.sha256), &NoProgress).await.expect("resume");
        assert_eq!(std::fs::read(&dest).expect("dest"), bytes);
        let new = gets(&nginx).split_off(before);
        assert_eq!(new.len(), 1, "{new:?}");
        assert!(new[0].contains(" 206 ") && new[0].contains("range=\"bytes=2097152-\""), "{new:?}");
        assert_eq!(listing(dir.path()), ["big.img"]);

        // A stale partial of another object: the resumed result fails its check, so it is
        // fetched once more from scratch.
        std::fs::remove_file(&dest).expect("rm");
        std::fs::write(dir.path().join("big.img.partial"), data(1 << 20, 99)).expect("stale partial");
        client.download("r/big.img", &dest, Some(&object.sha256), &NoProgress).await.expect("clean retry");
        assert_eq!(std::fs::read(&dest).expect("dest"), bytes);

        // A partial longer than the object: 416, then from scratch.
        std::fs::remove_file(&dest).expect("rm");
        std::fs::write(dir.path().join("big.img.partial"), data(5 << 20, 5)).expect("long partial");
        client.download("r/big.img", &dest, None, &NoProgress).await.expect("after 416");
        assert_eq!(std::fs::read(&dest).expect("dest"), bytes);
        assert!(nginx.access_log().iter().any(|l| l.contains(" 416 ")));
        assert_eq!(listing(dir.path()), ["big.img"]);
    })
    .await;
}

#[tokio::test]
async fn a_connection_lost_mid_body_resumes_and_a_down_server_is_waited_for() {
    within(async {
        // 4 MiB at 2 MiB/s: the server dies mid-body.
        let options = NginxOptions { extra_server_config: vec!["limit_rate 2m;".into()], ..Default::default() };
        let mut nginx = nginx(options).await;
        let client = Client::open(&http_store(&nginx, "")).await.expect("open");
        let dir = tempfile::tempdir().expect("tempdir");
        let bytes = data(4 << 20, 6);
        let object = client.upload("m/box", &file(dir.path(), "box", &bytes), &NoProgress).await.expect("up");

        let dest = dir.path().join("out.box");
        let download = client.download("m/box", &dest, None, &NoProgress);
        let outage = async {
            let partial = dir.path().join("out.box.partial");
            // Wait until bytes arrive, then cut the server off and bring it back.
            let mut backoff = imgbake_testbed::Backoff::new(Duration::from_secs(20));
            while std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0) < (1 << 20) {
                assert!(backoff.wait().await, "the download never started");
            }
            nginx.stop();
            tokio::time::sleep(Duration::from_millis(300)).await;
            nginx.start_again().await.expect("restart");
        };
        let (got, ()) = tokio::join!(download, outage);
        let got = got.expect("download survives the outage");
        assert_eq!(got.sha256, object.sha256);
        assert_eq!(std::fs::read(&dest).expect("dest"), bytes);
        let log = nginx.access_log();
        assert!(log.iter().any(|l| l.contains("GET /images/m/box ") && l.contains(" 206 ")), "{log:?}");
    })
    .await;
}

#[tokio::test]
async fn small_objects_put_get_and_delete() {
    within(async {
        let nginx = nginx(NginxOptions::default()).await;
        let client = Client::open(&http_store(&nginx, "")).await.expect("open");
        let json = br#"{"name":"base","versions":[]}"#.to_vec();
        let object = client.put_bytes("base/metadata.json", json.clone(), "application/json").await.expect("put");
        assert_eq!(object.sha256, sha256_hex(&json));
        assert_eq!(client.get_bytes("base/metadata.json").await.expect("get"), Some(json.clone()));
        let json2 = br#"{"name":"base","versions":[1]}"#.to_vec();
        client.put_bytes("base/metadata.json", json2.clone(), "application/json").await.expect("overwrite");
        assert_eq!(client.get_bytes("base/metadata.json").await.expect("get"), Some(json2));
        client.delete("base/metadata.json").await.expect("delete");
        assert_eq!(client.head("base/metadata.json").await.expect("head"), None);
        assert!(!nginx.root().join("images/base/metadata.json").exists());
    })
    .await;
}

#[tokio::test]
async fn fetch_fills_a_content_addressed_cache_once() {
    within(async {
        let nginx = nginx(NginxOptions::default()).await;
        let client = Client::open(&http_store(&nginx, "")).await.expect("open");
        let dir = tempfile::tempdir().expect("tempdir");
        let bytes = data(2 << 20, 7);
        let object = client.upload("p/base.box", &file(dir.path(), "b", &bytes), &NoProgress).await.expect("up");
        let cache = dir.path().join("cache");

        let before = gets(&nginx).len();
        let path = imgbake_store::fetch(&object.url, &object.sha256, &cache, &NoProgress).await.expect("fetch");
        assert_eq!(path, cache.join(&object.sha256).join("base.box"));
        assert_eq!(std::fs::read(&path).expect("cached"), bytes);
        assert_eq!(gets(&nginx).len(), before + 1);

        let again = imgbake_store::fetch(&object.url, &object.sha256, &cache, &NoProgress).await.expect("hit");
        assert_eq!(again, path);
        assert_eq!(gets(&nginx).len(), before + 1, "a cache hit makes no request");
        assert_eq!(listing(&cache.join(&object.sha256)), ["base.box"]);

        // A cached file altered (a flipped byte) or cut short is not used: it is fetched again.
        let mut altered = bytes.clone();
        altered[1000] ^= 0x40;
        std::fs::write(&path, &altered).expect("alter the cached file");
        let again = imgbake_store::fetch(&object.url, &object.sha256, &cache, &NoProgress).await.expect("refetch");
        assert_eq!(std::fs::read(&again).expect("cached"), bytes);
        assert_eq!(gets(&nginx).len(), before + 2, "the altered copy was replaced by a download");
        std::fs::write(&path, &bytes[..1000]).expect("truncate the cached file");
        imgbake_store::fetch(&object.url, &object.sha256, &cache, &NoProgress).await.expect("refetch");
        assert_eq!(std::fs::read(&path).expect("cached"), bytes);
        assert_eq!(gets(&nginx).len(), before + 3);

        let e = imgbake_store::fetch(&object.url, "abc", &cache, &NoProgress).await.unwrap_err();
        assert!(e.to_string().contains("is not a sha256"), "{e}");
        let missing = format!("{}/images/p/nothing.box", nginx.url());
        let e = imgbake_store::fetch(&missing, &object.sha256, &cache, &NoProgress).await.unwrap_err();
        assert!(e.to_string().contains(&format!("is not in host 127.0.0.1:{} (404", nginx.port())), "{e}");
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_server_is_named_with_its_address() {
    within(async {
        let port = imgbake_testbed::free_port().expect("port");
        let client = Client::open(&store("down", &format!("type = \"http\"\nurl = \"http://127.0.0.1:{port}/repo\"")))
            .await
            .expect("open")
            .with_tuning(quick());
        let e = client.head("x").await.unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with(&format!("cannot reach http store `down` at 127.0.0.1:{port}: ")), "{text}");
        assert!(text.to_lowercase().contains("refused"), "{text}");
    })
    .await;
}
