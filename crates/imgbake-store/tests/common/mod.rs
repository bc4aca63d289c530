//! Shared by the store tests: stores from TOML, test data, a hard timeout.
#![allow(dead_code)]

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Every test ends within this, whatever the servers do.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs `test` under [`TEST_TIMEOUT`].
pub async fn within<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, test).await.expect("the test did not finish in time")
}

/// A `[stores.NAME]` table, parsed like the tree file's.
pub fn store(name: &str, toml_text: &str) -> imgbake_config::Store {
    let mut store: imgbake_config::Store = toml::from_str(toml_text).expect("store TOML");
    store.name = name.to_owned();
    store
}

/// `len` pseudo-random bytes (xorshift; different per seed).
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Writes `data` to `dir/name` and returns the path.
pub fn file(dir: &Path, name: &str, data: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, data).expect("write test file");
    path
}

/// Names of the files in `dir` (not recursive), sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}
