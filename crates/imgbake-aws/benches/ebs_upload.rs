//! The EBS direct upload of a raw disk ([`imgbake_aws::ebs_direct::upload`]) against `coldsnap
//! upload` (awslabs' CLI, 0.12), both through the moto proxy's fast mode (AWS's 524288-byte blocks;
//! the proxy checks every block's SHA256 and the LINEAR aggregate, then moto completes the snapshot).
//!
//! `cargo bench -p imgbake-aws --bench ebs_upload` (release). The disk: 2 GiB, sparse, with about
//! 300 MB of deterministic pseudo-random data in 2 MiB runs spread over it (not aligned to the
//! 512 KiB blocks), and some runs written as zeroes. Prints wall seconds, MB/s of data (the disk's
//! non-zero bytes over the wall time) and requests per tool, and what moto's own 512-byte blocks
//! would mean.
//!
//! coldsnap is looked for in `PATH`, then in `/root/.cache/imgbake/tools/bin`; install it with
//! `cargo install coldsnap --version 0.12.0 --locked --root /root/.cache/imgbake/tools` (~9 min).
//! It runs twice: with `--omit-zero-blocks` (like imgbake) and with its default (every block).
//!
//! Environment: `IMGBAKE_BENCH_DISK_MB` (default 300) sets the data size, for a quick look.
//! `cargo bench --profile dev -p imgbake-aws --bench ebs_upload` skips the long release build; the
//! hashing is ring's assembly either way. Measured so (dev profile, 2 cores, a QEMU test running):
//! imgbake 2.41 s, 125 MB/s of data, 722 requests; coldsnap 0.12 (release) `--omit-zero-blocks`
//! 3.79 s, 80 MB/s, 722 requests; coldsnap's default (every block) 8.03 s, 38 MB/s, 4,098 requests;
//! 589,966 requests with moto's 512-byte blocks.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_sdk_ec2::config::{Credentials, SharedCredentialsProvider};
use imgbake_aws::ebs_direct::{self, UploadOptions};
use imgbake_aws::{ClientCache, ClientOptions, Environment, Session};
use imgbake_core::event::EventSink;
use imgbake_moto_proxy::MotoProxy;
use imgbake_testbed::Moto;

const REGION: &str = "eu-west-1";
const MIB: u64 = 1 << 20;
const DISK: u64 = 2 << 30;
const RUN: u64 = 2 * MIB;
const AWS_BLOCK: u32 = 524_288;
const SEED: u64 = 0x5eed_1b4c_e0eb_5001;

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Write the disk; returns its non-zero bytes.
fn make_disk(path: &Path, data_mb: u64) -> u64 {
    let mut f = std::fs::File::create(path).expect("create the disk");
    f.set_len(DISK).expect("size the disk");
    let mut rng = Rng(SEED);
    // Every tenth run is written as zeroes: allocated, but nothing to send.
    let data_runs = (data_mb * 1_000_000).div_ceil(RUN);
    let runs = data_runs + data_runs / 9;
    let stride = DISK / runs;
    let mut buf = vec![0u8; RUN as usize];
    let mut data = 0;
    for i in 0..runs {
        // Somewhere in its stride, 4 KiB aligned (so runs straddle 512 KiB blocks).
        let offset = i * stride + (rng.next() % (stride - RUN)) / 4096 * 4096;
        if i % 10 == 9 {
            buf.fill(0);
        } else {
            rng.fill(&mut buf);
            data += RUN;
        }
        f.seek(SeekFrom::Start(offset)).expect("seek");
        f.write_all(&buf).expect("write");
    }
    f.sync_all().expect("sync");
    data
}

/// Non-zero blocks of `bs` bytes (what a client following that block size sends).
fn nonzero_blocks(path: &Path, bs: usize) -> u64 {
    let mut f = std::fs::File::open(path).expect("open the disk");
    let mut buf = vec![0u8; 4 * MIB as usize];
    let mut n = 0;
    loop {
        let got = f.read(&mut buf).expect("read the disk");
        if got == 0 {
            break;
        }
        n += buf[..got].chunks(bs).filter(|c| c.iter().any(|b| *b != 0)).count() as u64;
    }
    n
}

fn coldsnap() -> Option<PathBuf> {
    let in_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("coldsnap")).find(|c| c.is_file()))
        .unwrap_or_default();
    in_path.or_else(|| Some(PathBuf::from("/root/.cache/imgbake/tools/bin/coldsnap")).filter(|p| p.is_file()))
}

struct Row {
    tool: String,
    wall: Duration,
    requests: u32,
    note: String,
}

#[tokio::main]
async fn main() {
    let data_mb: u64 = std::env::var("IMGBAKE_BENCH_DISK_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let dir = tempfile::tempdir().expect("temp dir");
    let disk = dir.path().join("disk.raw");
    let made = Instant::now();
    let data = make_disk(&disk, data_mb);
    println!(
        "disk: {} GiB sparse, {:.1} MB of data in {} MiB runs (written in {:.1} s)",
        DISK >> 30,
        data as f64 / 1e6,
        RUN / MIB,
        made.elapsed().as_secs_f64()
    );

    let moto = Moto::start().await.expect("moto server (run tests/bed/install.sh)");
    let proxy = MotoProxy::start(&moto.endpoint()).await.expect("proxy");
    proxy.ebs_block_size(AWS_BLOCK);
    let creds =
        Credentials::new(imgbake_testbed::ACCESS_KEY_ID, imgbake_testbed::SECRET_ACCESS_KEY, None, None, "bench");
    let cache = ClientCache::new(ClientOptions {
        credentials: Some(SharedCredentialsProvider::new(creds)),
        environment: Environment::Isolated,
        ..ClientOptions::default()
    });
    let session = Session { region: REGION.into(), profile: None, endpoint: Some(proxy.endpoint()), role: None };
    let clients = cache.get(&session).await;
    // Warm up: moto's first EC2/EBS call loads its backends.
    let _ = clients.ec2.describe_snapshots().owner_ids("self").send().await;
    proxy.reset();

    let mut rows = Vec::new();
    let begin = Instant::now();
    let up = ebs_direct::upload(&clients, &disk, &UploadOptions::default(), &|_| Ok(()), &EventSink::discard())
        .await
        .expect("imgbake's upload");
    let wall = begin.elapsed();
    let checked = proxy.ebs_snapshots();
    assert!(checked.iter().all(|s| s.completed && s.rejected == 0), "the proxy refused something: {checked:?}");
    rows.push(Row {
        tool: "imgbake".into(),
        wall,
        requests: proxy.report().total_calls,
        note: format!("{} blocks, {:.1} MB sent", up.blocks_written, up.bytes_written as f64 / 1e6),
    });

    let env = [
        ("AWS_ENDPOINT_URL", proxy.endpoint()),
        ("AWS_ACCESS_KEY_ID", imgbake_testbed::ACCESS_KEY_ID.into()),
        ("AWS_SECRET_ACCESS_KEY", imgbake_testbed::SECRET_ACCESS_KEY.into()),
        ("AWS_REGION", REGION.into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ];
    match coldsnap() {
        None => println!(
            "coldsnap: not installed (cargo install coldsnap --version 0.12.0 --locked --root /root/.cache/imgbake/tools)"
        ),
        Some(bin) => {
            for (label, extra) in [("coldsnap --omit-zero-blocks", true), ("coldsnap (all blocks)", false)] {
                proxy.reset();
                let mut cmd = tokio::process::Command::new(&bin);
                cmd.arg("upload").arg("--no-progress");
                if extra {
                    cmd.arg("--omit-zero-blocks");
                }
                cmd.arg(&disk).envs(env.iter().map(|(k, v)| (k, v.as_str())));
                let begin = Instant::now();
                let out = cmd.output().await.expect("run coldsnap");
                let wall = begin.elapsed();
                let checked = proxy.ebs_snapshots();
                let ok = out.status.success() && checked.iter().all(|s| s.completed && s.rejected == 0);
                let blocks: usize = checked.iter().map(|s| s.blocks.len()).sum();
                let note = if ok {
                    format!("{blocks} blocks, {:.1} MB sent", checked.iter().map(|s| s.bytes).sum::<u64>() as f64 / 1e6)
                } else {
                    format!("FAILED: {} {}", out.status, String::from_utf8_lossy(&out.stderr).trim())
                };
                rows.push(Row { tool: label.into(), wall, requests: proxy.report().total_calls, note });
            }
        }
    }

    println!();
    println!("{:<28} {:>8} {:>9} {:>9}  notes", "tool", "wall s", "MB/s", "requests");
    for r in &rows {
        println!(
            "{:<28} {:>8.2} {:>9.1} {:>9}  {}",
            r.tool,
            r.wall.as_secs_f64(),
            data as f64 / 1e6 / r.wall.as_secs_f64(),
            r.requests,
            r.note
        );
    }
    let native = nonzero_blocks(&disk, 512);
    println!(
        "\nmoto's own 512-byte blocks: {native} PutSnapshotBlock requests for the same disk (~{:.0} min at 500 \
         requests/s); with AWS's {AWS_BLOCK}-byte blocks: {}",
        native as f64 / 500.0 / 60.0,
        nonzero_blocks(&disk, AWS_BLOCK as usize)
    );
}
