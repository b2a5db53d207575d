//! A TCP proxy a test controls, put between Herald's processes and PostgreSQL or RabbitMQ:
//! the test can then take the service away from those processes alone (other tests share
//! the machine's services), either as a service that is down or as a network that is cut,
//! or fail it over ([`Proxy::fail_over`]).

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
    /// How many failovers there have been: a connection made before the latest leads nowhere.
    failovers: watch::Sender<u64>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (mode, _) = watch::channel(Mode::Open);
        let (failovers, _) = watch::channel(0);
        let modes = mode.clone();
        let failed_over = failovers.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let mut watch = modes.subscribe();
                if *watch.borrow() == Mode::Down {
                    continue;
                }
                let mut failovers = failed_over.subscribe();
                let born = *failovers.borrow_and_update();
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
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let up = pump(&mut client_read, &mut server_write, watch.clone());
                    let down = pump(&mut server_read, &mut client_write, watch.clone());
                    // Either side closing (or the proxy going down) ends both.
                    let stranded = tokio::select! {
                        () = up => false,
                        () = down => false,
                        () = failed_over_since(&mut failovers, born) => true,
                    };
                    if stranded {
                        // The server's side goes; the client's stays open, unanswered,
                        // until the proxy goes down.
                        drop((server_read, server_write));
                        while *watch.borrow_and_update() != Mode::Down {
                            if watch.changed().await.is_err() {
                                break;
                            }
                        }
                    }
                });
            }
        });
        Ok(Self {
            port,
            mode,
            failovers,
            accept,
        })
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Fails the service over, as to another host its clients' kernels do not know has
    /// taken over: every connection open now leads nowhere (the service's side is closed, so
    /// its sessions end, their locks and transactions with them; the client's side stays
    /// open and never hears another byte, as until TCP gives up, about 15 minutes), and new
    /// connections get through.
    pub fn fail_over(&self) {
        self.failovers.send_modify(|n| *n += 1);
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

/// Resolves once the proxy has failed over since failover number `born`.
async fn failed_over_since(failovers: &mut watch::Receiver<u64>, born: u64) {
    while *failovers.borrow_and_update() == born {
        if failovers.changed().await.is_err() {
            // The proxy is gone: no failover will come.
            std::future::pending::<()>().await;
        }
    }
}

/// Copies `from` to `to` while the proxy is open; holds the bytes (and a close) while it is
/// cut; stops when it goes down or either side closes.
async fn pump(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
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
