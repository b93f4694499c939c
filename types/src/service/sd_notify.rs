//! systemd's readiness protocol: one datagram (`READY=1`, `STOPPING=1`) to the socket named
//! by `NOTIFY_SOCKET`, which systemd sets for a `Type=notify` service.
//!
//! A few lines on a Unix datagram socket rather than a crate: the protocol is one
//! `sendto`. `NOTIFY_SOCKET` is a path, or an abstract socket when it starts with `@`.
//! Without `NOTIFY_SOCKET` (not under systemd) nothing is sent.

use std::io;
use std::os::unix::net::UnixDatagram;

/// The variable systemd sets to the socket it listens on.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Tells systemd the service is ready: it serves (recovered, listeners bound).
pub const READY: &str = "READY=1";

/// Tells systemd the service is shutting down.
pub const STOPPING: &str = "STOPPING=1";

/// Sends `state` (e.g. [`READY`]) to systemd. Returns `Ok(false)` when `NOTIFY_SOCKET` is
/// not set, `Ok(true)` once sent.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(socket) = std::env::var_os(NOTIFY_SOCKET) else {
        return Ok(false);
    };
    let socket = socket.to_string_lossy().into_owned();
    let sender = UnixDatagram::unbound()?;
    match socket.strip_prefix('@') {
        Some(name) => send_abstract(&sender, name, state)?,
        None => {
            sender.send_to(state.as_bytes(), &socket)?;
        }
    }
    Ok(true)
}

/// Sends to an abstract socket (Linux only).
#[cfg(target_os = "linux")]
fn send_abstract(sender: &UnixDatagram, name: &str, state: &str) -> io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    sender.send_to_addr(state.as_bytes(), &address)?;
    Ok(())
}

/// Abstract sockets exist only on Linux.
#[cfg(not(target_os = "linux"))]
fn send_abstract(_: &UnixDatagram, name: &str, _: &str) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        format!("NOTIFY_SOCKET @{name} is an abstract socket, which only Linux has"),
    ))
}

/// Sends `state` and logs nothing: returns a message for the caller to log when sending
/// failed, so that a binary can say why systemd may not see it ready.
pub fn notify_or_explain(state: &str) -> Option<String> {
    notify(state).err().map(|e| {
        format!(
            "cannot tell systemd {state} on NOTIFY_SOCKET={}: {e}",
            std::env::var(NOTIFY_SOCKET).unwrap_or_default()
        )
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    // checks: none (operations)
    #[test]
    fn a_state_reaches_a_path_socket_and_an_abstract_one() {
        // The only test in this crate that sets NOTIFY_SOCKET.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        std::env::set_var(NOTIFY_SOCKET, &path);
        let sent = notify(READY);
        let name = format!("fenced-test-{}", std::process::id());
        #[cfg(target_os = "linux")]
        let abstract_receiver = {
            use std::os::linux::net::SocketAddrExt;
            let address =
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
            let receiver = UnixDatagram::bind_addr(&address).unwrap();
            std::env::set_var(NOTIFY_SOCKET, format!("@{name}"));
            receiver
        };
        #[cfg(target_os = "linux")]
        let sent_abstract = notify(STOPPING);
        std::env::remove_var(NOTIFY_SOCKET);
        let not_sent = notify(READY);

        assert!(sent.unwrap());
        let mut buffer = [0u8; 64];
        let n = receiver.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"READY=1");
        #[cfg(target_os = "linux")]
        {
            assert!(sent_abstract.unwrap());
            let n = abstract_receiver.recv(&mut buffer).unwrap();
            assert_eq!(&buffer[..n], b"STOPPING=1");
        }
        assert!(!not_sent.unwrap(), "without NOTIFY_SOCKET nothing is sent");
    }
}
