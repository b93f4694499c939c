//! [`restartable_addr`]: a loopback address to listen on that a process can listen on again
//! after it was killed. A port from the kernel's ephemeral range (what binding port 0 gives)
//! may be taken, while its process is down, as the local port of some other outgoing
//! connection, and the restart then fails with "address in use"; ports below that range
//! are never handed out that way.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The lowest port this harness hands out.
const LOWEST: u32 = 10_000;

/// Where the next search starts, offset from [`LOWEST`]; every call moves it on, so no two
/// calls in one process get the same port.
static CURSOR: AtomicU32 = AtomicU32::new(u32::MAX);

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A free loopback address below the ephemeral port range. Panics if there is none.
pub fn restartable_addr() -> SocketAddr {
    let span = ephemeral_low().saturating_sub(LOWEST).max(1);
    if CURSOR.load(Ordering::SeqCst) == u32::MAX {
        // Start somewhere different in each process, so concurrent test binaries rarely
        // try the same ports.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.subsec_nanos());
        let start = (nanos ^ std::process::id().wrapping_mul(7_919)) % span;
        let _ = CURSOR.compare_exchange(u32::MAX, start, Ordering::SeqCst, Ordering::SeqCst);
    }
    for _ in 0..span {
        let offset = CURSOR.fetch_add(1, Ordering::SeqCst) % span;
        let Ok(port) = u16::try_from(LOWEST + offset) else {
            continue;
        };
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            if let Ok(addr) = listener.local_addr() {
                return addr;
            }
        }
    }
    panic!(
        "no free loopback port between {LOWEST} and {}",
        LOWEST + span
    );
}
