//! Free loopback ports, picked at run time.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, OnceLock};

use crate::error::{BedError, Result};

/// A loopback TCP port that was free a moment ago.
///
/// The port is released before it is returned, so another process may grab it before the
/// caller binds it: servers started by this crate retry with a new port when their bind fails.
/// Within this process the same port is never handed out twice, so concurrent tests do not
/// collide with each other.
pub fn free_port() -> Result<u16> {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(|| Mutex::new(HashSet::new()));
    for _ in 0..64 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| BedError::io("binding 127.0.0.1:0 to find a free port", e))?;
        let port = listener.local_addr().map_err(|e| BedError::io("reading the address of 127.0.0.1:0", e))?.port();
        let mut given = given.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if given.insert(port) {
            return Ok(port);
        }
    }
    Err(BedError::Invalid("no fresh free port on 127.0.0.1 after 64 tries".into()))
}
