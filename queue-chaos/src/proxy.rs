//! A fault-injecting TCP proxy on loopback, between the clients and a broker.
//!
//! Why our own: the maintained tool for this, Toxiproxy, is a Go program that neither
//! Debian nor the registries this project installs from (crates.io, PyPI, npm) carry, and
//! its Rust port `noxious` has had no release since 2021. What the harness needs is four
//! faults on plain TCP, which take a hundred lines of tokio:
//!
//! - **latency**: every chunk, either way, waits before it is forwarded;
//! - **reset**: every open connection is closed with a TCP RST (`SO_LINGER` 0), both ways;
//! - **blackhole**: nothing is forwarded (bytes wait in the proxy, as they would in a
//!   partition's retransmissions) and new connections are accepted but not connected on;
//!   when it ends, everything held flows again, unless a client gave up first;
//! - **slow close**: every open connection stalls, then is closed with a FIN after the
//!   delay (a peer that takes its time to hang up).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How data flows right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Forward at once.
    Pass,
    /// Forward after this delay.
    Latency(Duration),
    /// Forward nothing, connect nothing.
    Hold,
}

/// Something done to every open connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    None,
    Reset,
    SlowClose(Duration),
}

#[derive(Debug)]
struct State {
    upstream: SocketAddr,
    flow: Mutex<Flow>,
    flow_changed: watch::Sender<()>,
    actions: watch::Sender<(u64, Action)>,
}

impl State {
    fn flow(&self) -> Flow {
        *self.flow.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running proxy; dropping it stops accepting.
#[derive(Debug)]
pub struct Proxy {
    /// The port clients connect to.
    pub port: u16,
    state: Arc<State>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Proxy {
    /// Listens on a free loopback port (or `port`), forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr, port: u16) -> Result<Self, String> {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| format!("proxy bind: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let state = Arc::new(State {
            upstream,
            flow: Mutex::new(Flow::Pass),
            flow_changed: watch::channel(()).0,
            actions: watch::channel((0, Action::None)).0,
        });
        let st = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(connection(client, st.clone()));
            }
        });
        Ok(Proxy {
            port,
            state,
            accept,
        })
    }

    /// Sets how data flows from now on.
    pub fn set_flow(&self, flow: Flow) {
        *self.state.flow.lock().unwrap_or_else(|p| p.into_inner()) = flow;
        self.state.flow_changed.send_replace(());
    }

    /// Closes every open connection with a RST.
    pub fn reset_all(&self) {
        self.act(Action::Reset);
    }

    /// Stalls every open connection for `after`, then closes it with a FIN.
    pub fn slow_close_all(&self, after: Duration) {
        self.act(Action::SlowClose(after));
    }

    fn act(&self, a: Action) {
        self.state.actions.send_modify(|(gen, action)| {
            *gen += 1;
            *action = a;
        });
    }
}

async fn connection(mut client: TcpStream, st: Arc<State>) {
    let mut actions = st.actions.subscribe();
    actions.mark_unchanged();
    wait_while_held(&st).await;
    let Ok(mut upstream) = TcpStream::connect(st.upstream).await else {
        let _ = client.set_zero_linger();
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let action = {
        let (cr, cw) = client.split();
        let (ur, uw) = upstream.split();
        tokio::select! {
            _ = pump(cr, uw, &st) => Action::None,
            _ = pump(ur, cw, &st) => Action::None,
            _ = actions.changed() => actions.borrow().1,
        }
    };
    match action {
        Action::None => {}
        Action::Reset => {
            let _ = client.set_zero_linger();
            let _ = upstream.set_zero_linger();
        }
        Action::SlowClose(after) => {
            tokio::time::sleep(after).await;
            let _ = client.shutdown().await;
            let _ = upstream.shutdown().await;
        }
    }
}

async fn wait_while_held(st: &State) {
    let mut changed = st.flow_changed.subscribe();
    while st.flow() == Flow::Hold {
        let _ = changed.changed().await;
    }
}

/// Copies one direction, applying the flow to every chunk. Returns at EOF or an error.
async fn pump(mut r: impl AsyncRead + Unpin, mut w: impl AsyncWrite + Unpin, st: &State) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        wait_while_held(st).await;
        if let Flow::Latency(d) = st.flow() {
            tokio::time::sleep(d).await;
        }
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn roundtrip(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
        s.write_all(b"ping").await?;
        let mut b = [0u8; 4];
        s.read_exact(&mut b).await?;
        Ok(b.to_vec())
    }

    #[tokio::test]
    async fn faults_do_what_they_say() {
        let p = Proxy::start(echo_server().await, 0).await.unwrap();
        let mut c = TcpStream::connect(("127.0.0.1", p.port)).await.unwrap();
        assert_eq!(roundtrip(&mut c).await.unwrap(), b"ping");

        p.set_flow(Flow::Latency(Duration::from_millis(200)));
        let t = std::time::Instant::now();
        roundtrip(&mut c).await.unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(400),
            "{:?}",
            t.elapsed()
        );

        p.set_flow(Flow::Hold);
        let held = tokio::time::timeout(Duration::from_millis(300), roundtrip(&mut c)).await;
        assert!(held.is_err(), "a blackhole must forward nothing");
        p.set_flow(Flow::Pass);
        // The bytes held during the blackhole arrive after it, then the stream goes on.
        let mut b = [0u8; 4];
        c.read_exact(&mut b).await.unwrap();
        assert_eq!(roundtrip(&mut c).await.unwrap(), b"ping");

        p.reset_all();
        let mut b = [0u8; 1];
        let r = c.read(&mut b).await;
        assert!(
            matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "a reset must be a RST: {r:?}"
        );

        let mut c = TcpStream::connect(("127.0.0.1", p.port)).await.unwrap();
        assert_eq!(roundtrip(&mut c).await.unwrap(), b"ping");
        let t = std::time::Instant::now();
        p.slow_close_all(Duration::from_millis(300));
        assert_eq!(
            c.read(&mut b).await.unwrap(),
            0,
            "a slow close ends in a FIN"
        );
        assert!(t.elapsed() >= Duration::from_millis(300));
    }
}
