//! [`Proxy`]: a TCP proxy on a free loopback port that a test drives to pass, delay, reset
//! or black-hole connections, so faults happen on a real network path.
//!
//! - [`Proxy::pass`]: bytes flow both ways.
//! - [`Proxy::delay`]: every chunk waits before it is forwarded (order is kept).
//! - [`Proxy::black_hole`]: a partition. Established connections stay open but no byte
//!   moves in either direction; new connections are accepted and go nowhere. Bytes read
//!   before or during the partition are held, not lost, and flow once it heals, as TCP's
//!   retransmissions would deliver them.
//! - [`Proxy::reset`]: every open connection is closed at once with a TCP RST on both sides
//!   (the mode stays as it was).
//! - [`Proxy::set`]: any [`Mode`] in one [`Direction`] only (a one-way partition, a slow
//!   uplink), including [`Mode::Drop`], which discards bytes instead of holding them.
//!
//! It runs on the test's tokio runtime; dropping it stops accepting and resets everything.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward at once.
    Pass,
    /// Forward each chunk after this delay.
    Delay(Duration),
    /// Forward nothing (hold it) until the mode changes.
    BlackHole,
    /// Discard every chunk read (the messages are lost; the protocol above usually fails
    /// the connection on the gap).
    Drop,
}

/// Which way bytes flow through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client to the target.
    Up,
    /// From the target to the client.
    Down,
    /// Both ways.
    Both,
}

/// A TCP proxy from a free loopback port to a target address.
pub struct Proxy {
    /// Where clients connect.
    addr: SocketAddr,
    /// Where connections go; changeable, e.g. after a server restart on another port.
    target: Arc<Mutex<SocketAddr>>,
    /// The current mode of the client-to-target direction, watched by every connection.
    mode: watch::Sender<Mode>,
    /// The current mode of the target-to-client direction.
    down: watch::Sender<Mode>,
    /// Bumped by [`Proxy::reset`]: connections from an older generation reset themselves.
    generation: watch::Sender<u64>,
    /// Connections accepted so far.
    accepted: Arc<AtomicUsize>,
    /// The accept loop.
    acceptor: JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy to `target` on `127.0.0.1:0`, passing traffic.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let target = Arc::new(Mutex::new(target));
        let (mode, _) = watch::channel(Mode::Pass);
        let (down, _) = watch::channel(Mode::Pass);
        let (generation, _) = watch::channel(0u64);
        let accepted = Arc::new(AtomicUsize::new(0));
        let acceptor = tokio::spawn(accept_loop(
            listener,
            target.clone(),
            mode.clone(),
            down.clone(),
            generation.clone(),
            accepted.clone(),
        ));
        Proxy {
            addr,
            target,
            mode,
            down,
            generation,
            accepted,
            acceptor,
        }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `http://` endpoint clients connect to.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends new connections to another target.
    pub fn set_target(&self, target: SocketAddr) {
        *self.target.lock().unwrap() = target;
    }

    /// Forwards traffic normally.
    pub fn pass(&self) {
        self.set(Direction::Both, Mode::Pass);
    }

    /// Delays every forwarded chunk by `by`.
    pub fn delay(&self, by: Duration) {
        self.set(Direction::Both, Mode::Delay(by));
    }

    /// Partitions: no byte moves until the mode changes.
    pub fn black_hole(&self) {
        self.set(Direction::Both, Mode::BlackHole);
    }

    /// Sets the mode of one direction, or of both.
    pub fn set(&self, direction: Direction, mode: Mode) {
        if direction != Direction::Down {
            self.mode.send_replace(mode);
        }
        if direction != Direction::Up {
            self.down.send_replace(mode);
        }
    }

    /// The current mode (of the client-to-target direction).
    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// Resets (TCP RST) every connection open now.
    pub fn reset(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// How many connections were accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.reset();
    }
}

/// Accepts connections and starts a forwarding task for each.
async fn accept_loop(
    listener: TcpListener,
    target: Arc<Mutex<SocketAddr>>,
    mode: watch::Sender<Mode>,
    down: watch::Sender<Mode>,
    generation: watch::Sender<u64>,
    accepted: Arc<AtomicUsize>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        accepted.fetch_add(1, Ordering::SeqCst);
        let to = *target.lock().unwrap();
        let mode = mode.subscribe();
        let down = down.subscribe();
        let generation = generation.subscribe();
        tokio::spawn(connection(client, to, mode, down, generation));
    }
}

/// Forwards one connection until either side closes or the proxy resets it.
async fn connection(
    mut client: TcpStream,
    to: SocketAddr,
    mut mode: watch::Receiver<Mode>,
    down: watch::Receiver<Mode>,
    mut generation: watch::Receiver<u64>,
) {
    let born = *generation.borrow_and_update();
    let reset = async {
        loop {
            if *generation.borrow_and_update() != born {
                return;
            }
            if generation.changed().await.is_err() {
                return;
            }
        }
    };
    tokio::pin!(reset);
    // In a black hole the server is unreachable: do not even connect until it heals.
    let mut server = tokio::select! {
        _ = &mut reset => { rst(&client); return; }
        _ = flowing(&mut mode) => match TcpStream::connect(to).await {
            Ok(server) => server,
            Err(_) => { rst(&client); return; }
        },
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        let up = pump(client_read, server_write, mode.clone());
        let down = pump(server_read, client_write, down);
        tokio::select! {
            _ = &mut reset => {}
            _ = async { tokio::join!(up, down) } => { return; }
        }
    }
    rst(&client);
    rst(&server);
}

/// Makes the socket's close send RST rather than FIN.
fn rst(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

/// Waits until the mode lets bytes through.
async fn flowing(mode: &mut watch::Receiver<Mode>) {
    loop {
        if *mode.borrow_and_update() != Mode::BlackHole {
            return;
        }
        if mode.changed().await.is_err() {
            return;
        }
    }
}

/// Copies one direction, obeying the mode before every read and every write.
async fn pump(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        flowing(&mut mode).await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        flowing(&mut mode).await;
        let current = *mode.borrow();
        if current == Mode::Drop {
            continue;
        }
        if let Mode::Delay(by) = current {
            tokio::time::sleep(by).await;
            // A partition that began during the delay holds the chunk too.
            flowing(&mut mode).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on a free port.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        s.write_all(msg).await?;
        let mut buf = vec![0u8; msg.len()];
        s.read_exact(&mut buf).await?;
        Ok(buf)
    }

    #[tokio::test]
    async fn passes_holds_delays_and_resets() {
        let proxy = Proxy::start(echo().await).await;
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut s, b"hello").await.unwrap(), b"hello");

        // Black hole: nothing comes back, however long we wait (well, 300 ms)...
        proxy.black_hole();
        s.write_all(b"held").await.unwrap();
        let mut buf = [0u8; 4];
        let r = tokio::time::timeout(Duration::from_millis(300), s.read_exact(&mut buf)).await;
        assert!(r.is_err(), "bytes crossed a black hole");
        // ...and after healing the held bytes arrive.
        proxy.pass();
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf, b"held");

        proxy.delay(Duration::from_millis(200));
        let start = std::time::Instant::now();
        assert_eq!(round_trip(&mut s, b"slow").await.unwrap(), b"slow");
        assert!(
            start.elapsed() >= Duration::from_millis(400),
            "two hops of 200 ms"
        );
        proxy.pass();

        proxy.reset();
        let r = tokio::time::timeout(Duration::from_secs(10), round_trip(&mut s, b"dead")).await;
        assert!(matches!(r, Ok(Err(_))), "a reset connection fails: {r:?}");
        let mut s2 = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut s2, b"again").await.unwrap(), b"again");
        assert_eq!(proxy.accepted(), 2);
    }

    #[tokio::test]
    async fn one_direction_holds_or_drops_while_the_other_flows() {
        let proxy = Proxy::start(echo().await).await;
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut s, b"hello").await.unwrap(), b"hello");

        // The answers are dropped: the request reaches the echo server, nothing comes back,
        // and nothing of it comes back after healing either.
        proxy.set(Direction::Down, Mode::Drop);
        assert_eq!(proxy.mode(), Mode::Pass, "the uplink still passes");
        s.write_all(b"gone").await.unwrap();
        let mut buf = [0u8; 4];
        let r = tokio::time::timeout(Duration::from_millis(300), s.read_exact(&mut buf)).await;
        assert!(r.is_err(), "a dropped answer arrived");
        proxy.pass();
        assert_eq!(round_trip(&mut s, b"back").await.unwrap(), b"back");

        // Only the uplink is cut: the request is held, then delivered on healing.
        proxy.set(Direction::Up, Mode::BlackHole);
        s.write_all(b"held").await.unwrap();
        let r = tokio::time::timeout(Duration::from_millis(300), s.read_exact(&mut buf)).await;
        assert!(r.is_err(), "bytes crossed a one-way black hole");
        proxy.set(Direction::Up, Mode::Pass);
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf, b"held");
    }
}
