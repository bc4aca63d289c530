//! Upload/download throughput on loopback, imgbake beside the usual tools:
//! nginx WebDAV (imgbake vs `curl -T` / `curl -o`) and moto S3 (imgbake vs `aws s3 cp`).
//!
//! `cargo bench -p imgbake-store --bench throughput`; `IMGBAKE_BENCH_MB` sets the file size
//! (default 256). Each figure is the best of `IMGBAKE_BENCH_RUNS` runs (default 2). imgbake's
//! upload figures include hashing the file (sha256 + sha1) before sending; its downloads are
//! verified against the sha256. The AWS CLI (v1, PyPI) is used from PATH, else from its own
//! venv in `~/.cache/imgbake/awscli-venv`, installed there on first use.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use imgbake_store::{Client, NoProgress};
use imgbake_testbed::{ACCESS_KEY_ID, Moto, Nginx, NginxOptions, SECRET_ACCESS_KEY, cache_dir};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run())
}

struct Row {
    target: &'static str,
    tool: String,
    upload: Option<f64>,
    download: Option<f64>,
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Best (shortest) of `runs` timings of `f`.
async fn best<F, Fut>(runs: u64, mut f: F) -> Result<Duration>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut best = Duration::MAX;
    for run in 0..runs.max(1) {
        let start = Instant::now();
        f(run).await?;
        best = best.min(start.elapsed());
    }
    Ok(best)
}

fn write_data(path: &Path, len: u64) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut block = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for chunk in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        out.write_all(&block[..n])?;
        left -= n as u64;
    }
    out.flush()?;
    Ok(())
}

async fn command(program: &Path, args: &[&str], env: &[(&str, String)]) -> Result<()> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .await?;
    if !out.status.success() {
        return Err(format!(
            "{} {} failed: {}",
            program.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(())
}

async fn works(program: &Path) -> bool {
    tokio::process::Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// The AWS CLI: on PATH, else in its own venv (installed from PyPI on first use).
async fn aws_cli() -> Option<PathBuf> {
    let on_path = PathBuf::from("aws");
    if works(&on_path).await {
        return Some(on_path);
    }
    let venv = cache_dir().join("awscli-venv");
    let aws = venv.join("bin").join("aws");
    if works(&aws).await {
        return Some(aws);
    }
    eprintln!("installing the AWS CLI into {} ...", venv.display());
    let venv_text = venv.to_string_lossy().into_owned();
    let made = command(Path::new("python3"), &["-m", "venv", &venv_text], &[]).await;
    let pip = venv.join("bin").join("pip");
    let installed = match made {
        Ok(()) => command(&pip, &["install", "--quiet", "awscli"], &[]).await,
        Err(e) => Err(e),
    };
    match installed {
        Ok(()) if works(&aws).await => Some(aws),
        _ => None,
    }
}

async fn run() -> Result<()> {
    let size = env_number("IMGBAKE_BENCH_MB", 256) << 20;
    let runs = env_number("IMGBAKE_BENCH_RUNS", 2);
    let dir = tempfile::Builder::new().prefix("imgbake-bench-").tempdir()?;
    let src = dir.path().join("artifact.bin");
    write_data(&src, size)?;
    let src_text = src.to_string_lossy().into_owned();
    let mut rows = Vec::new();

    // nginx WebDAV
    let nginx = Nginx::start(NginxOptions::default()).await?;
    let store: imgbake_config::Store = toml::from_str(&format!("type = \"http\"\nurl = \"{}/bench\"", nginx.url()))?;
    let client = Client::open(&store).await?;
    let sha = std::cell::RefCell::new(String::new());
    let sha = &sha;
    let up = best(runs, |_| {
        let (client, src) = (client.clone(), src.clone());
        async move {
            *sha.borrow_mut() = client.upload("artifact.bin", &src, &NoProgress).await?.sha256;
            Ok(())
        }
    })
    .await?;
    let down = best(runs, |run| {
        let (client, dest, sha) = (client.clone(), dir.path().join(format!("http-{run}.bin")), sha.borrow().clone());
        async move {
            client.download("artifact.bin", &dest, Some(&sha), &NoProgress).await?;
            tokio::fs::remove_file(&dest).await?;
            Ok(())
        }
    })
    .await?;
    rows.push(Row {
        target: "nginx WebDAV",
        tool: "imgbake".into(),
        upload: Some(mbps(size, up)),
        download: Some(mbps(size, down)),
    });

    let curl = PathBuf::from("curl");
    if works(&curl).await {
        let put_url = format!("{}/bench/curl.bin", nginx.url());
        let up = best(runs, |_| {
            let (curl, args) = (curl.clone(), ["-sS", "-f", "-T", src_text.as_str(), put_url.as_str()]);
            async move { command(&curl, &args, &[]).await }
        })
        .await?;
        let down = best(runs, |run| {
            let dest = dir.path().join(format!("curl-{run}.bin"));
            let curl = curl.clone();
            let url = put_url.clone();
            async move {
                let dest_text = dest.to_string_lossy().into_owned();
                command(&curl, &["-sS", "-f", "-o", &dest_text, &url], &[]).await?;
                tokio::fs::remove_file(&dest).await?;
                Ok(())
            }
        })
        .await?;
        rows.push(Row {
            target: "nginx WebDAV",
            tool: "curl -T / -o".into(),
            upload: Some(mbps(size, up)),
            download: Some(mbps(size, down)),
        });
    } else {
        rows.push(Row { target: "nginx WebDAV", tool: "curl: not installed".into(), upload: None, download: None });
    }
    drop(nginx);

    // moto S3
    let moto = Moto::start().await?;
    let sdk = moto.sdk_config("us-east-1").await;
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&sdk).force_path_style(true).build());
    s3.create_bucket().bucket("bench").send().await?;
    let store: imgbake_config::Store = toml::from_str("type = \"s3\"\nbucket = \"bench\"")?;
    let client = Client::s3_with_config(&store, &sdk)?;
    let up = best(runs, |_| {
        let (client, src) = (client.clone(), src.clone());
        async move {
            *sha.borrow_mut() = client.upload("artifact.bin", &src, &NoProgress).await?.sha256;
            Ok(())
        }
    })
    .await?;
    let down = best(runs, |run| {
        let (client, dest, sha) = (client.clone(), dir.path().join(format!("s3-{run}.bin")), sha.borrow().clone());
        async move {
            client.download("artifact.bin", &dest, Some(&sha), &NoProgress).await?;
            tokio::fs::remove_file(&dest).await?;
            Ok(())
        }
    })
    .await?;
    rows.push(Row {
        target: "moto S3",
        tool: "imgbake".into(),
        upload: Some(mbps(size, up)),
        download: Some(mbps(size, down)),
    });

    match aws_cli().await {
        Some(aws) => {
            let env = [
                ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.to_owned()),
                ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.to_owned()),
                ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
                ("AWS_CONFIG_FILE", "/dev/null".to_owned()),
                ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".to_owned()),
            ];
            let endpoint = moto.endpoint();
            let up = best(runs, |_| {
                let (aws, env, endpoint) = (aws.clone(), env.clone(), endpoint.clone());
                let src_text = src_text.clone();
                async move {
                    let args = ["--endpoint-url", &endpoint, "s3", "cp", "--quiet", &src_text, "s3://bench/cli.bin"];
                    command(&aws, &args, &env).await
                }
            })
            .await?;
            let down = best(runs, |run| {
                let (aws, env, endpoint) = (aws.clone(), env.clone(), endpoint.clone());
                let dest = dir.path().join(format!("cli-{run}.bin"));
                async move {
                    let dest_text = dest.to_string_lossy().into_owned();
                    let args = ["--endpoint-url", &endpoint, "s3", "cp", "--quiet", "s3://bench/cli.bin", &dest_text];
                    command(&aws, &args, &env).await?;
                    tokio::fs::remove_file(&dest).await?;
                    Ok(())
                }
            })
            .await?;
            rows.push(Row {
                target: "moto S3",
                tool: "aws s3 cp".into(),
                upload: Some(mbps(size, up)),
                download: Some(mbps(size, down)),
            });
        }
        None => {
            println!("aws cli: not installable here");
            rows.push(Row {
                target: "moto S3",
                tool: "aws cli: not installable here".into(),
                upload: None,
                download: None,
            });
        }
    }

    println!("\n{} MiB file on loopback, best of {runs} run(s), MB/s = MiB/s", size >> 20);
    println!("{:<14} {:<16} {:>12} {:>14}", "server", "tool", "upload MB/s", "download MB/s");
    let show = |v: Option<f64>| v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into());
    for row in rows {
        println!("{:<14} {:<16} {:>12} {:>14}", row.target, row.tool, show(row.upload), show(row.download));
    }
    Ok(())
}
