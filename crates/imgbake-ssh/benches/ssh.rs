//! `cargo bench -p imgbake-ssh --bench ssh`: the communicator's two performance goals, on loopback.
//!
//! 1. SFTP upload throughput of a 1 GiB file: imgbake vs OpenSSH's `sftp` client, same server (the
//!    bed's sshd), same cipher (aes128-gcm@openssh.com). Goal: imgbake ≥ 100 % of OpenSSH.
//! 2. Uploading a directory of many files (10,000 of 1–64 KiB and three of 20 MiB, ~390 MB):
//!    imgbake vs OpenSSH's `scp -r` and `sftp` (`put -r`), same server and cipher. Goal: imgbake
//!    ≥ 2× faster than both.
//! 3. Reboot latency on the bed's QEMU guest: from the moment the guest's SSH server accepts again
//!    (seen by an independent prober that opens raw TCP connections and reads the banner) to the
//!    moment `imgbake_core::reboot::reboot` reports the machine settled. Goal: ≤ 1 s.
//!
//! Environment: `IMGBAKE_BENCH_RUNS` (upload rounds, default 3), `IMGBAKE_BENCH_REBOOTS` (default 3),
//! `IMGBAKE_BENCH_ARCHIVE=0` (the many-files upload over SFTP instead of a tar stream),
//! `IMGBAKE_BENCH_ONLY=upload|tree|reboot`.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use imgbake_core::communicator::Communicator;
use imgbake_core::event::{EventKind, EventSink};
use imgbake_core::reboot::{RebootOptions, reboot};
use imgbake_core::wait::Wait;
use imgbake_ssh::{Auth, HostKeyPolicy, SshCommunicator, SshConfig};
use imgbake_testbed::{GuestOptions, QemuGuest, SshTarget, Sshd};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

const CIPHER: &str = "aes128-gcm@openssh.com";
const SIZE: u64 = 1 << 30;

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn config_for(t: &impl SshTarget) -> SshConfig {
    SshConfig::new(t.host(), t.port(), t.user())
        .with_auth(Auth::key_file(t.client_key_path()))
        .with_host_key(HostKeyPolicy::Pinned(vec![t.host_public_key().to_string()]))
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

async fn upload_bench() {
    let runs = env_num("IMGBAKE_BENCH_RUNS", 3).max(1);
    let sshd = Sshd::start().await.expect("the bed's sshd (run tests/bed/install.sh)");
    let dir = tempfile::tempdir().expect("temp dir");
    let local = dir.path().join("1GiB.bin");
    {
        // Incompressible-looking content without spending the run on a CSPRNG.
        let mut f = std::io::BufWriter::new(std::fs::File::create(&local).expect("create the test file"));
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..(SIZE >> 20) {
            for chunk in block.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes());
            }
            f.write_all(&block).expect("write the test file");
        }
    }
    let remote = sshd.dir().join("upload.bin");
    let mut cfg = config_for(&sshd);
    cfg.ciphers = vec![CIPHER.to_string()];
    let c = SshCommunicator::new(cfg);
    c.connect(&Wait::new(Duration::from_secs(30))).await.expect("connect");
    // Warm the page cache and the SFTP session once, untimed.
    c.upload(&local, remote.to_str().unwrap_or_default(), &EventSink::discard()).await.expect("warm-up upload");

    let batch = dir.path().join("batch");
    std::fs::write(&batch, format!("put {} {}\n", local.display(), remote.display())).expect("batch file");
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 1..=runs {
        let t = Instant::now();
        let sent = c.upload(&local, remote.to_str().unwrap_or_default(), &EventSink::discard()).await.expect("upload");
        let d = t.elapsed();
        assert_eq!(sent, SIZE);
        assert_eq!(std::fs::metadata(&remote).map(|m| m.len()).unwrap_or(0), SIZE);
        ours.push(mb_per_s(SIZE, d));

        let t = Instant::now();
        let out = openssh("sftp", &sshd)
            .arg("-b")
            .arg(&batch)
            .arg("root@127.0.0.1")
            .output()
            .await
            .expect("run OpenSSH sftp (openssh-client)");
        let d = t.elapsed();
        assert!(out.status.success(), "sftp failed: {}", String::from_utf8_lossy(&out.stderr));
        theirs.push(mb_per_s(SIZE, d));
        println!(
            "upload round {round}: imgbake {:.0} MB/s, OpenSSH sftp {:.0} MB/s",
            ours[ours.len() - 1],
            theirs[theirs.len() - 1]
        );
    }
    c.disconnect().await;
    let (o, t) = (median(&mut ours), median(&mut theirs));
    println!(
        "SFTP upload of 1 GiB over loopback, {CIPHER}, median of {runs}: imgbake {o:.0} MB/s, OpenSSH sftp {t:.0} MB/s => {:.0} % (goal >= 100 %)",
        100.0 * o / t
    );
}

/// The bench's directory: 10,000 files of 1–64 KiB in 100 directories, three of 20 MiB.
fn make_many_files(root: &std::path::Path) -> u64 {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut total = 0;
    for i in 0..10_000u64 {
        let dir = root.join(format!("mod{:02}", i % 100));
        std::fs::create_dir_all(&dir).expect("bench dir");
        let len = 1024 + (next() % (63 * 1024)) as usize;
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        std::fs::write(dir.join(format!("f{i:05}.dat")), &data).expect("bench file");
        total += len as u64;
    }
    for i in 0..3 {
        let data: Vec<u8> = (0..20usize << 20).map(|_| next() as u8).collect();
        std::fs::write(root.join(format!("big{i}.bin")), &data).expect("bench file");
        total += data.len() as u64;
    }
    total
}

/// An OpenSSH client command (`scp` or `sftp`) against the bed's sshd.
fn openssh(program: &str, sshd: &Sshd) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(program);
    c.args(["-F", "/dev/null", "-q", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", sshd.known_hosts_path().display()))
        .arg("-o")
        .arg(format!("Ciphers={CIPHER}"))
        .arg("-i")
        .arg(sshd.client_key_path())
        .arg("-P")
        .arg(sshd.port().to_string());
    c
}

async fn tree_bench() {
    let runs = env_num("IMGBAKE_BENCH_RUNS", 3).max(1);
    let sshd = Sshd::start().await.expect("the bed's sshd (run tests/bed/install.sh)");
    let dir = tempfile::tempdir().expect("temp dir");
    let local = dir.path().join("tree");
    let bytes = make_many_files(&local);
    let mut cfg = config_for(&sshd);
    cfg.ciphers = vec![CIPHER.to_string()];
    // IMGBAKE_BENCH_ARCHIVE=0 measures the SFTP path (what machines without GNU tar/bsdtar get).
    cfg.archive_uploads = env_num("IMGBAKE_BENCH_ARCHIVE", 1) != 0;
    let c = SshCommunicator::new(cfg);
    c.connect(&Wait::new(Duration::from_secs(30))).await.expect("connect");
    let (mut ours, mut scp, mut sftp) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=runs {
        // A fresh destination each time: every tool creates every file.
        let remote = sshd.dir().join(format!("ours{round}"));
        let t = Instant::now();
        let sent = c.upload(&local, remote.to_str().unwrap_or_default(), &EventSink::discard()).await.expect("upload");
        ours.push(t.elapsed().as_secs_f64());
        assert_eq!(sent, bytes);

        let remote = sshd.dir().join(format!("scp{round}"));
        let t = Instant::now();
        let out = openssh("scp", &sshd)
            .arg("-r")
            .arg(&local)
            .arg(format!("root@127.0.0.1:{}", remote.display()))
            .output()
            .await
            .expect("run OpenSSH scp");
        scp.push(t.elapsed().as_secs_f64());
        assert!(out.status.success(), "scp failed: {}", String::from_utf8_lossy(&out.stderr));

        let remote = sshd.dir().join(format!("sftp{round}"));
        let batch = dir.path().join("batch");
        std::fs::write(&batch, format!("put -r {} {}\n", local.display(), remote.display())).expect("batch file");
        let t = Instant::now();
        let out = openssh("sftp", &sshd)
            .arg("-b")
            .arg(&batch)
            .arg("root@127.0.0.1")
            .output()
            .await
            .expect("run OpenSSH sftp");
        sftp.push(t.elapsed().as_secs_f64());
        assert!(out.status.success(), "sftp failed: {}", String::from_utf8_lossy(&out.stderr));
        println!(
            "tree round {round}: imgbake {:.2} s, scp -r {:.2} s, sftp put -r {:.2} s",
            ours[ours.len() - 1],
            scp[scp.len() - 1],
            sftp[sftp.len() - 1]
        );
        for d in ["ours", "scp", "sftp"] {
            let _ = std::fs::remove_dir_all(sshd.dir().join(format!("{d}{round}")));
        }
    }
    c.disconnect().await;
    let (o, s, f) = (median(&mut ours), median(&mut scp), median(&mut sftp));
    println!(
        "upload of 10,003 files ({:.0} MB) over loopback, {CIPHER}, median of {runs}: imgbake {o:.2} s, OpenSSH scp -r {s:.2} s ({:.1}×), sftp put -r {f:.2} s ({:.1}×) (goal >= 2× both)",
        bytes as f64 / 1e6,
        s / o,
        f / o
    );
}

/// Reads the SSH banner from a fresh TCP connection; QEMU accepts TCP while the guest is down, so
/// only a banner means the guest's SSH server accepts.
async fn banner(addr: SocketAddr, timeout: Duration) -> bool {
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.ok()?;
        (&buf == b"SSH-").then_some(())
    };
    matches!(tokio::time::timeout(timeout, probe).await, Ok(Some(())))
}

/// Starts a probe every 100 ms (each waits up to 2 s for the banner: a freshly booted TCG guest can
/// be slow to answer) and records when SSH went down, then when the first banner after that arrived.
async fn prober(addr: SocketAddr, down_at: Arc<Mutex<Option<Instant>>>, up_at: Arc<Mutex<Option<Instant>>>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let (down_at, up_at) = (down_at.clone(), up_at.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let ok = banner(addr, Duration::from_secs(2)).await;
            let now = Instant::now();
            let mut down = down_at.lock().unwrap_or_else(|p| p.into_inner());
            if !ok {
                // Down from the first failed probe's start.
                if down.is_none() {
                    *down = Some(started);
                }
            } else if down.is_some_and(|d| started > d) {
                let mut up = up_at.lock().unwrap_or_else(|p| p.into_inner());
                if up.is_none_or(|u| now < u) {
                    *up = Some(now);
                }
            }
        });
    }
}

async fn reboot_bench() {
    let rounds = env_num("IMGBAKE_BENCH_REBOOTS", 3).max(1);
    let guest =
        QemuGuest::start(GuestOptions::default()).await.expect("the bed's QEMU guest (run tests/bed/install.sh)");
    guest.wait_ssh_banner(Duration::from_secs(120)).await.expect("guest SSH");
    let c = SshCommunicator::new(config_for(&guest));
    c.connect(&Wait::new(Duration::from_secs(60))).await.expect("connect to the guest");
    let addr = SocketAddr::from(([127, 0, 0, 1], guest.port()));
    let opts = RebootOptions { timeout: Duration::from_secs(180), ..RebootOptions::default() };
    let mut latencies = Vec::new();
    for round in 1..=rounds {
        let down_at = Arc::new(Mutex::new(None));
        let up_at = Arc::new(Mutex::new(None));
        let settled_at = Arc::new(Mutex::new(None));
        let keep = settled_at.clone();
        let events = EventSink::callback(move |e| {
            if matches!(e.kind, EventKind::Settled { .. }) {
                *keep.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            }
        });
        let probe = tokio::spawn(prober(addr, down_at.clone(), up_at.clone()));
        let report = reboot(&c, &opts, &events).await.unwrap_or_else(|e| panic!("reboot: {e}"));
        probe.abort();
        let settled = settled_at.lock().unwrap_or_else(|p| p.into_inner()).expect("a settled event");
        let up = up_at.lock().unwrap_or_else(|p| p.into_inner()).expect("the prober saw SSH come back");
        let latency = settled.saturating_duration_since(up);
        latencies.push(latency.as_secs_f64());
        println!(
            "reboot round {round}: {} -> {} in {:.1} s; SSH accepting -> settled: {:.0} ms",
            report.before,
            report.after,
            report.waited.as_secs_f64(),
            latency.as_secs_f64() * 1000.0
        );
    }
    c.disconnect().await;
    println!(
        "reboot latency (guest SSH accepting again -> communicator settled), median of {rounds}: {:.0} ms (goal <= 1000 ms; default Linux settle window {:?})",
        median(&mut latencies) * 1000.0,
        imgbake_core::reboot::default_settle(imgbake_config::Os::Linux)
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let only = std::env::var("IMGBAKE_BENCH_ONLY").unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(async {
        if only.is_empty() || only == "upload" {
            upload_bench().await;
        }
        if only.is_empty() || only == "tree" {
            tree_bench().await;
        }
        if only.is_empty() || only == "reboot" {
            reboot_bench().await;
        }
    });
}
