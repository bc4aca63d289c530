//! The guest's state disk as seen from the host (format: tests/bed/guest/rootfs/bin/imgbake-guest).
//!
//! Bytes 0..512: control record, `key=value` text lines padded with NULs (`reboots`, `delay`,
//! `force`). Bytes 4096..65536: boot log, one boot id per line, appended by the guest at boot.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::error::{BedError, Result};

const SIZE: u64 = 1 << 20;
const RECORD_LEN: usize = 512;
const LOG_OFFSET: u64 = 4096;
const LOG_LEN: usize = 15 * 4096;

/// A reboot chain the guest runs by itself: `reboots` reboots in a row, each `delay_secs` after
/// SSH came up; `force` makes them `reboot -f` (sessions left hanging) instead of a clean
/// `reboot` (sessions closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RebootChain {
    pub reboots: u32,
    pub delay_secs: u32,
    pub force: bool,
}

/// Creates a fresh 1 MiB state disk holding `chain` (all zero = nothing pending).
pub(crate) fn create(path: &Path, chain: RebootChain) -> Result<()> {
    let ctx = |what: &str| format!("{what} state disk {}", path.display());
    let mut file = std::fs::File::create(path).map_err(|e| BedError::io(ctx("creating"), e))?;
    file.set_len(SIZE).map_err(|e| BedError::io(ctx("sizing"), e))?;
    if chain != RebootChain::default() {
        let text = format!("reboots={}\ndelay={}\nforce={}\n", chain.reboots, chain.delay_secs, u8::from(chain.force));
        file.write_all(text.as_bytes()).map_err(|e| BedError::io(ctx("writing"), e))?;
    }
    Ok(())
}

/// Writes `chain` into the control record of an existing state disk (from the host, while the guest
/// runs): the guest acts on it at its next boot, once SSH is up.
pub(crate) fn arm(path: &Path, chain: RebootChain) -> Result<()> {
    let ctx = || format!("writing the control record of state disk {}", path.display());
    let text = format!("reboots={}\ndelay={}\nforce={}\n", chain.reboots, chain.delay_secs, u8::from(chain.force));
    let mut record = text.into_bytes();
    record.resize(RECORD_LEN, 0);
    let mut file = std::fs::OpenOptions::new().write(true).open(path).map_err(|e| BedError::io(ctx(), e))?;
    file.write_all(&record).map_err(|e| BedError::io(ctx(), e))?;
    file.sync_all().map_err(|e| BedError::io(ctx(), e))?;
    Ok(())
}

fn read_at(path: &Path, offset: u64, len: usize) -> Result<String> {
    let ctx = || format!("reading state disk {}", path.display());
    let mut file = std::fs::File::open(path).map_err(|e| BedError::io(ctx(), e))?;
    file.seek(SeekFrom::Start(offset)).map_err(|e| BedError::io(ctx(), e))?;
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) => return Err(BedError::io(ctx(), e)),
        }
    }
    buf.truncate(filled);
    buf.retain(|&b| b != 0);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Boot ids the guest recorded, oldest first. A line the guest is writing at this very moment
/// is left out (every complete boot id has 36 characters).
pub(crate) fn boot_log(path: &Path) -> Result<Vec<String>> {
    let text = read_at(path, LOG_OFFSET, LOG_LEN)?;
    Ok(text.split_terminator('\n').filter(|line| line.len() == 36).map(str::to_owned).collect())
}

/// Reboots still pending in the control record.
pub(crate) fn pending_reboots(path: &Path) -> Result<u32> {
    let text = read_at(path, 0, RECORD_LEN)?;
    Ok(text.lines().find_map(|l| l.strip_prefix("reboots=")).and_then(|n| n.trim().parse().ok()).unwrap_or(0))
}
