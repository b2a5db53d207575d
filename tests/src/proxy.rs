//! A TCP proxy a test controls, put between Herald's processes and PostgreSQL or RabbitMQ:
//! the test can then take the service away from those processes alone (other tests share
//! the machine's services), either as a service that is down or as a network that is cut.

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bytes flow both ways.
    Open,
    /// Every connection is closed and new ones are closed as they come: the service is down.
    Down,
    /// Connections stay open but no byte gets through either way, and new ones hang: the
    /// network is cut (heartbeats time out rather than connections failing fast).
    Cut,
}

pub struct Proxy {
    pub port: u16,
    mode: watch::Sender<Mode>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (mode, _) = watch::channel(Mode::Open);
        let modes = mode.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let mut watch = modes.subscribe();
                if *watch.borrow() == Mode::Down {
                    continue;
                }
                tokio::spawn(async move {
                    // A cut network: hold the connection until it opens again.
                    if !wait_open(&mut watch).await {
                        return;
                    }
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let up = pump(client_read, server_write, watch.clone());
                    let down = pump(server_read, client_write, watch);
                    // Either side closing (or the proxy going down) ends both.
                    tokio::select! {
                        () = up => {}
                        () = down => {}
                    }
                });
            }
        });
        Ok(Self { port, mode, accept })
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// `url` (a PostgreSQL or AMQP URL) with its port replaced by the proxy's.
    pub fn url(&self, url: &str) -> String {
        let mut parsed = url::Url::parse(url).expect("a valid service URL");
        parsed.set_port(Some(self.port)).expect("URL takes a port");
        parsed.to_string()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.set(Mode::Down);
        self.accept.abort();
    }
}

/// Waits while the network is cut; `false` once the service is down.
async fn wait_open(watch: &mut watch::Receiver<Mode>) -> bool {
    loop {
        match *watch.borrow_and_update() {
            Mode::Open => return true,
            Mode::Down => return false,
            Mode::Cut => {}
        }
        if watch.changed().await.is_err() {
            return false;
        }
    }
}

/// Copies `from` to `to` while the proxy is open; holds the bytes (and a close) while it is
/// cut; stops when it goes down or either side closes.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut watch: watch::Receiver<Mode>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            changed = watch.changed() => {
                if changed.is_err() || *watch.borrow() == Mode::Down {
                    return;
                }
                continue;
            }
        };
        let n = match read {
            // A cut network carries no goodbye either: the close reaches the other side only
            // once the cut ends.
            Ok(0) | Err(_) => {
                wait_open(&mut watch).await;
                return;
            }
            Ok(n) => n,
        };
        if !wait_open(&mut watch).await {
            return;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
