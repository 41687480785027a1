//! A TCP proxy between a service and one of its dependencies, so a test can
//! make MariaDB (or anything) slow or unreachable for one service only.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{watch, Mutex},
    task::JoinHandle,
};

/// Forwards connections from a local port to `upstream`.
pub struct TcpProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    paused: watch::Sender<bool>,
    delay: watch::Sender<Duration>,
    cut: watch::Sender<bool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    held: Arc<std::sync::atomic::AtomicUsize>,
    accept: JoinHandle<()>,
}

impl TcpProxy {
    /// Starts forwarding to `upstream` (host:port).
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (paused, paused_rx) = watch::channel(false);
        let (delay, delay_rx) = watch::channel(Duration::ZERO);
        let (cut, cut_rx) = watch::channel(false);
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let held: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let upstream = upstream.to_owned();
        let accept = {
            let links = links.clone();
            let held = held.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        return;
                    };
                    if *cut_rx.borrow() {
                        drop(client);
                        continue;
                    }
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        continue;
                    };
                    let mut links = links.lock().await;
                    // Again under the lock `cut` drains the links with: a
                    // connection accepted while the proxy is being cut is
                    // either dropped here or aborted by `cut`, never left up.
                    if *cut_rx.borrow() {
                        continue;
                    }
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let link = |from, to| pipe(from, to, paused_rx.clone(), delay_rx.clone(), held.clone());
                    links.push(tokio::spawn(link(cr, sw)));
                    links.push(tokio::spawn(link(sr, cw)));
                }
            })
        };
        Self {
            addr,
            paused,
            delay,
            cut,
            links,
            held,
            accept,
        }
    }

    /// Holds all traffic (connections stay open) until `resume`.
    pub fn pause(&self) {
        self.paused.send_replace(true);
    }

    /// Holds every chunk for `delay` in each direction: a round trip takes
    /// 2 x `delay` longer, so transactions overlap as over a real network.
    pub fn set_delay(&self, delay: Duration) {
        self.delay.send_replace(delay);
    }

    /// Number of reads currently held back by `pause`: > 0 means a client is
    /// waiting on the dependency right now.
    pub fn held(&self) -> usize {
        self.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Lets held traffic through again.
    pub fn resume(&self) {
        self.paused.send_replace(false);
    }

    /// Drops every connection and refuses new ones until `restore`.
    pub async fn cut(&self) {
        self.cut.send_replace(true);
        for link in self.links.lock().await.drain(..) {
            link.abort();
        }
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        if let Ok(mut links) = self.links.try_lock() {
            for link in links.drain(..) {
                link.abort();
            }
        }
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut paused: watch::Receiver<bool>,
    delay: watch::Receiver<Duration>,
    held: Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::Ordering::SeqCst;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        held.fetch_add(1, SeqCst);
        let released = paused.wait_for(|p| !*p).await.is_ok();
        held.fetch_sub(1, SeqCst);
        if !released {
            return;
        }
        let delay = *delay.borrow();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
