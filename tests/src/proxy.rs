//! A TCP proxy for fault injection between a client (an edge) and a server (the broker): it listens on a free
//! 127.0.0.1 port, forwards every connection to a target address, and its [`Mode`] can be switched at any
//! time while connections are open:
//!
//! - [`Mode::Forward`]: bytes flow both ways as they arrive.
//! - [`Mode::BlackHole`]: nothing flows and nothing is closed, as on a path whose packets are lost. The proxy
//!   stops reading both sockets, so the peers see neither data nor FIN nor RST; what they keep sending fills
//!   the kernel buffers until their writes block, as under real TCP retransmission (the proxy's sockets
//!   have small fixed receive buffers, [`RECV_BUFFER`], so that comes soon, as on a real path where nothing
//!   is acknowledged). Bytes already read are held, not dropped, and a close by either peer is seen only
//!   when the hole ends (a FIN is retransmitted too). A connection that arrives during the hole is accepted
//!   by the kernel but held: the target is not contacted (its SYN was lost). When the hole ends it goes
//!   through if its client is still waiting, and is dropped if the client gave up meanwhile (so a stale
//!   login never reaches the target).
//! - [`Mode::Delay`]: each chunk is forwarded that long after it was read, in order, both ways.
//! - [`Mode::Reset`]: every open connection is closed with RST on both sides (`SO_LINGER` 0), and every new
//!   one is reset as soon as it is accepted, until the mode changes.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What the proxy does with the traffic of every connection, open or new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward bytes both ways as they arrive.
    Forward,
    /// Forward nothing and close nothing: neither peer sees data, FIN or RST until the mode changes.
    BlackHole,
    /// Forward each chunk this long after it was read, preserving order.
    Delay(Duration),
    /// Reset every open connection (RST both ways) and every new one, until the mode changes.
    Reset,
}

/// What the proxy has seen, as counted by the proxy itself (independent of either peer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections accepted and handled (not reset on arrival).
    pub accepted: u64,
    /// Connections reset on arrival because the mode was [`Mode::Reset`].
    pub refused: u64,
    /// Open or held connections reset by a switch to [`Mode::Reset`].
    pub reset: u64,
    /// Connections that arrived in a black hole and whose client gave up before it ended (dropped unforwarded).
    pub abandoned: u64,
    /// Connections currently open (held, forwarding or closing).
    pub open: u64,
    /// Bytes written to the target.
    pub bytes_to_target: u64,
    /// Bytes written to clients.
    pub bytes_to_client: u64,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    refused: AtomicU64,
    reset: AtomicU64,
    abandoned: AtomicU64,
    open: AtomicU64,
    bytes_to_target: AtomicU64,
    bytes_to_client: AtomicU64,
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A running proxy. Dropping it stops accepting and closes every connection.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    target: SocketAddr,
    mode: watch::Sender<Mode>,
    counters: Arc<Counters>,
    stop: CancellationToken,
}

/// Kernel receive buffer of the proxy's sockets (Linux doubles it), fixed so it does not grow by autotuning:
/// in a black hole a peer's writes then block after about this much plus its own send buffer.
pub const RECV_BUFFER: u32 = 64 << 10;
/// Most bytes read and not yet written, per direction of a connection; beyond it the proxy stops reading.
const MAX_QUEUED: usize = 4 << 20;
/// Size of one read.
const CHUNK: usize = 64 << 10;
/// How long connecting to the target may take before the client is reset.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Proxy {
    /// Starts a proxy in [`Mode::Forward`] on a free 127.0.0.1 port, forwarding to `target`. Must be called
    /// within a tokio runtime.
    pub async fn start(target: SocketAddr) -> io::Result<Self> {
        let socket = TcpSocket::new_v4()?;
        socket.set_recv_buffer_size(RECV_BUFFER)?;
        socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let listener = socket.listen(1024)?;
        let addr = listener.local_addr()?;
        let (mode, _) = watch::channel(Mode::Forward);
        let counters = Arc::new(Counters::default());
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(
            listener,
            target,
            mode.subscribe(),
            counters.clone(),
            stop.clone(),
        ));
        Ok(Self {
            addr,
            target,
            mode,
            counters,
            stop,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Where it forwards to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Switches the mode; open connections follow at once.
    pub fn set_mode(&self, mode: Mode) {
        tracing::debug!(proxy = %self.addr, ?mode, "Proxy mode.");
        self.mode.send_replace(mode);
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// Its counters now.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ProxyStats {
            accepted: get(&c.accepted),
            refused: get(&c.refused),
            reset: get(&c.reset),
            abandoned: get(&c.abandoned),
            open: get(&c.open),
            bytes_to_target: get(&c.bytes_to_target),
            bytes_to_client: get(&c.bytes_to_client),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Closes a socket with RST instead of FIN.
fn abort(s: TcpStream) {
    if let Err(e) = s.set_zero_linger() {
        tracing::debug!(error = %e, "Proxy: SO_LINGER 0 failed; closing normally.");
    }
    drop(s);
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    mode: watch::Receiver<Mode>,
    counters: Arc<Counters>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let client = match accepted {
            Ok((client, _)) => client,
            Err(e) => {
                // Out of descriptors and the like: try again shortly rather than end the proxy.
                tracing::warn!(error = %e, "Proxy: accept failed.");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if *mode.borrow() == Mode::Reset {
            inc(&counters.refused);
            abort(client);
            continue;
        }
        inc(&counters.accepted);
        let (mode, counters, stop) = (mode.clone(), counters.clone(), stop.clone());
        tokio::spawn(async move {
            counters.open.fetch_add(1, Ordering::Relaxed);
            connection(client, target, mode, &counters, stop).await;
            counters.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// One direction of a connection: chunks read from its source and not yet written to its destination.
#[derive(Default)]
struct Pipe {
    /// Chunks and the instant each may be written.
    queue: VecDeque<(Instant, Vec<u8>)>,
    /// Bytes in `queue`, less what was written of the front chunk.
    queued: usize,
    /// Bytes of the front chunk already written.
    offset: usize,
    /// The source closed its sending side (read returned 0).
    eof: bool,
    /// The destination's sending side was shut down in turn.
    shut: bool,
}

/// A read or write failed: the connection is reset.
struct Broken;

impl Pipe {
    fn can_read(&self) -> bool {
        !self.eof && self.queued < MAX_QUEUED
    }

    /// The front chunk may be written now.
    fn due(&self, now: Instant) -> bool {
        self.queue.front().is_some_and(|(t, _)| *t <= now)
    }

    /// When the front chunk may be written, if later than `now`.
    fn later(&self, now: Instant) -> Option<Instant> {
        self.queue.front().map(|(t, _)| *t).filter(|t| *t > now)
    }

    /// Reads what `src` has now (one chunk) without waiting; it may be written `delay` from now.
    fn read(&mut self, src: &TcpStream, delay: Duration) -> Result<(), Broken> {
        let mut buf = vec![0; CHUNK];
        match src.try_read(&mut buf) {
            Ok(0) => self.eof = true,
            Ok(n) => {
                buf.truncate(n);
                self.queued += n;
                self.queue.push_back((Instant::now() + delay, buf));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return Err(Broken),
        }
        Ok(())
    }

    /// Writes the due chunks to `dst` as far as it takes them without waiting.
    fn write(&mut self, dst: &TcpStream, written: &AtomicU64) -> Result<(), Broken> {
        let now = Instant::now();
        while self.due(now) {
            let Some((_, chunk)) = self.queue.front() else {
                break;
            };
            match dst.try_write(&chunk[self.offset..]) {
                Ok(n) => {
                    written.fetch_add(n as u64, Ordering::Relaxed);
                    self.queued -= n;
                    self.offset += n;
                    if self.offset == chunk.len() {
                        self.queue.pop_front();
                        self.offset = 0;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return Err(Broken),
            }
        }
        Ok(())
    }

    /// Whether the destination's sending side should now be shut down: the source closed and all is written.
    fn should_shut(&self) -> bool {
        self.eof && !self.shut && self.queue.is_empty()
    }
}

/// What woke a connection.
enum Wake {
    Mode,
    ReadUp(io::Result<()>),
    ReadDown(io::Result<()>),
    WriteUp(io::Result<()>),
    WriteDown(io::Result<()>),
    Timer,
}

/// Waits while the mode is a black hole. Returns the mode after it, or `None` when the proxy stops.
async fn leave_black_hole(
    mode: &mut watch::Receiver<Mode>,
    stop: &CancellationToken,
) -> Option<Mode> {
    loop {
        let m = *mode.borrow_and_update();
        if m != Mode::BlackHole {
            return Some(m);
        }
        tokio::select! {
            _ = stop.cancelled() => return None,
            changed = mode.changed() => if changed.is_err() { return None },
        }
    }
}

/// Whether the client of a connection held in a black hole is still waiting for its answer; what it sent is
/// queued in `up`.
async fn still_waiting(client: &TcpStream, up: &mut Pipe) -> bool {
    loop {
        match tokio::time::timeout(Duration::from_millis(5), client.readable()).await {
            Err(_) => return true,
            Ok(Err(_)) => return false,
            Ok(Ok(())) => {
                if up.read(client, Duration::ZERO).is_err() || up.eof {
                    return false;
                }
                if !up.can_read() {
                    return true;
                }
            }
        }
    }
}

/// Connects to the target with the proxy's receive buffer (accepted sockets inherit the listener's).
async fn connect(target: SocketAddr) -> io::Result<TcpStream> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_recv_buffer_size(RECV_BUFFER)?;
    socket.connect(target).await
}

async fn connection(
    client: TcpStream,
    target: SocketAddr,
    mut mode: watch::Receiver<Mode>,
    counters: &Counters,
    stop: CancellationToken,
) {
    let _ = client.set_nodelay(true);
    let mut up = Pipe::default();
    let mut down = Pipe::default();
    if *mode.borrow_and_update() == Mode::BlackHole {
        match leave_black_hole(&mut mode, &stop).await {
            None => return,
            Some(Mode::Reset) => {
                inc(&counters.reset);
                return abort(client);
            }
            Some(_) => {
                if !still_waiting(&client, &mut up).await {
                    inc(&counters.abandoned);
                    return abort(client);
                }
            }
        }
    }
    let mut server = match tokio::time::timeout(CONNECT_TIMEOUT, connect(target)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%target, error = %e, "Proxy: target refused; resetting the client.");
            return abort(client);
        }
        Err(_) => return abort(client),
    };
    let _ = server.set_nodelay(true);
    let mut client = client;
    loop {
        let m = *mode.borrow_and_update();
        if m == Mode::Reset {
            inc(&counters.reset);
            abort(client);
            return abort(server);
        }
        let flowing = m != Mode::BlackHole;
        if flowing {
            if up.should_shut() {
                let _ = server.shutdown().await;
                up.shut = true;
            }
            if down.should_shut() {
                let _ = client.shutdown().await;
                down.shut = true;
            }
        }
        if up.shut && down.shut {
            return;
        }
        let delay = match m {
            Mode::Delay(d) => d,
            _ => Duration::ZERO,
        };
        let now = Instant::now();
        let timer = [up.later(now), down.later(now)]
            .into_iter()
            .flatten()
            .min()
            .filter(|_| flowing);
        let wake = tokio::select! {
            _ = stop.cancelled() => return,
            changed = mode.changed() => match changed {
                Ok(()) => Wake::Mode,
                Err(_) => return,
            },
            r = client.readable(), if flowing && up.can_read() => Wake::ReadUp(r),
            r = server.readable(), if flowing && down.can_read() => Wake::ReadDown(r),
            r = server.writable(), if flowing && up.due(now) => Wake::WriteUp(r),
            r = client.writable(), if flowing && down.due(now) => Wake::WriteDown(r),
            _ = tokio::time::sleep_until(timer.unwrap_or(now)), if timer.is_some() => Wake::Timer,
        };
        let result = match wake {
            Wake::Mode | Wake::Timer => Ok(()),
            Wake::ReadUp(r) => r.map_err(|_| Broken).and_then(|()| up.read(&client, delay)),
            Wake::ReadDown(r) => r
                .map_err(|_| Broken)
                .and_then(|()| down.read(&server, delay)),
            Wake::WriteUp(r) => r
                .map_err(|_| Broken)
                .and_then(|()| up.write(&server, &counters.bytes_to_target)),
            Wake::WriteDown(r) => r
                .map_err(|_| Broken)
                .and_then(|()| down.write(&client, &counters.bytes_to_client)),
        };
        if result.is_err() {
            // One peer reset or vanished: pass the reset on, as a router between them would let it through.
            abort(client);
            return abort(server);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    const QUIET: Duration = Duration::from_millis(300);

    /// A proxy to a fresh listener, a client through it, and the server's side of that connection.
    async fn pair() -> (Proxy, TcpListener, TcpStream, TcpStream) {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Proxy::start(server.local_addr().unwrap()).await.unwrap();
        let client = TcpStream::connect(proxy.addr()).await.unwrap();
        let (accepted, _) = server.accept().await.unwrap();
        (proxy, server, client, accepted)
    }

    async fn read_exact(s: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
            .await
            .expect("read in time")
            .unwrap();
        buf
    }

    /// Nothing arrives, not even EOF, for a while.
    async fn silent(s: &mut TcpStream) {
        let mut buf = [0; 16];
        let r = tokio::time::timeout(QUIET, s.read(&mut buf)).await;
        assert!(r.is_err(), "expected silence, got {r:?}");
    }

    #[tokio::test]
    async fn forwards_both_ways_and_passes_close_on() {
        let (_proxy, _l, mut client, mut server) = pair().await;
        client.write_all(b"ping").await.unwrap();
        assert_eq!(read_exact(&mut server, 4).await, b"ping");
        server.write_all(b"pong").await.unwrap();
        assert_eq!(read_exact(&mut client, 4).await, b"pong");
        server.shutdown().await.unwrap();
        let mut buf = [0; 4];
        assert_eq!(client.read(&mut buf).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn black_hole_forwards_nothing_and_closes_nothing_until_it_ends() {
        let (proxy, _l, mut client, mut server) = pair().await;
        proxy.set_mode(Mode::BlackHole);
        client.write_all(b"lost?").await.unwrap();
        server.write_all(b"back").await.unwrap();
        server.shutdown().await.unwrap();
        silent(&mut server).await;
        silent(&mut client).await;
        proxy.set_mode(Mode::Forward);
        assert_eq!(read_exact(&mut server, 5).await, b"lost?");
        assert_eq!(read_exact(&mut client, 4).await, b"back");
        let mut buf = [0; 4];
        assert_eq!(
            client.read(&mut buf).await.unwrap(),
            0,
            "FIN after the hole"
        );
    }

    #[tokio::test]
    async fn a_writer_into_a_black_hole_blocks_soon_and_loses_nothing() {
        let (proxy, _l, mut client, mut server) = pair().await;
        proxy.set_mode(Mode::BlackHole);
        let chunk = vec![7u8; 64 << 10];
        let mut sent = 0;
        while sent < 64 << 20 {
            let write = tokio::time::timeout(QUIET, client.write_all(&chunk)).await;
            if write.is_err() {
                break;
            }
            sent += chunk.len();
        }
        assert!(sent < 16 << 20, "{sent} bytes went into the hole unblocked");
        silent(&mut server).await;
        proxy.set_mode(Mode::Forward);
        assert_eq!(read_exact(&mut server, sent).await, vec![7u8; sent]);
    }

    #[tokio::test]
    async fn a_connection_made_in_a_black_hole_goes_through_only_if_its_client_still_waits() {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Proxy::start(server.local_addr().unwrap()).await.unwrap();
        proxy.set_mode(Mode::BlackHole);
        let mut waiting = TcpStream::connect(proxy.addr()).await.unwrap();
        waiting.write_all(b"hello").await.unwrap();
        let mut gave_up = TcpStream::connect(proxy.addr()).await.unwrap();
        gave_up.write_all(b"stale").await.unwrap();
        drop(gave_up);
        assert!(
            tokio::time::timeout(QUIET, server.accept()).await.is_err(),
            "the target is not contacted in a black hole"
        );
        proxy.set_mode(Mode::Forward);
        let (mut s, _) = server.accept().await.unwrap();
        assert_eq!(read_exact(&mut s, 5).await, b"hello");
        assert!(
            tokio::time::timeout(QUIET, server.accept()).await.is_err(),
            "an abandoned connection never reaches the target"
        );
        assert_eq!(proxy.stats().abandoned, 1);
    }

    #[tokio::test]
    async fn delay_holds_each_chunk_and_keeps_order() {
        let (proxy, _l, mut client, mut server) = pair().await;
        let delay = Duration::from_millis(200);
        proxy.set_mode(Mode::Delay(delay));
        let started = std::time::Instant::now();
        for part in [&b"one,"[..], b"two,", b"three"] {
            client.write_all(part).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let first = read_exact(&mut server, 4).await;
        assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
        let rest = read_exact(&mut server, 9).await;
        assert_eq!([first, rest].concat(), b"one,two,three");
        proxy.set_mode(Mode::Forward);
        let started = std::time::Instant::now();
        server.write_all(b"fast").await.unwrap();
        assert_eq!(read_exact(&mut client, 4).await, b"fast");
        assert!(started.elapsed() < delay);
    }

    #[tokio::test]
    async fn reset_resets_open_and_new_connections_until_it_ends() {
        let (proxy, server, mut client, mut accepted) = pair().await;
        proxy.set_mode(Mode::Reset);
        let mut buf = [0; 4];
        let e = client.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
        let e = accepted.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
        let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
        let e = refused.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
        proxy.set_mode(Mode::Forward);
        let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
        let (mut accepted, _) = server.accept().await.unwrap();
        client.write_all(b"back").await.unwrap();
        assert_eq!(read_exact(&mut accepted, 4).await, b"back");
        let s = proxy.stats();
        assert_eq!((s.reset, s.refused), (1, 1), "{s:?}");
    }
}
