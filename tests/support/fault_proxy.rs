//! A fault-injecting TCP proxy for tests: put it between a client and a
//! server, then let bytes pass, delay them, hold them (a black hole) or
//! reset every connection. It counts the connections it accepts and the
//! chunks clients send, so a test can see how often a client tries.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// What the proxy does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything at once.
    Pass,
    /// Forward every chunk this long after it was read.
    Latency(Duration),
    /// Accept connections and read what they send, but forward nothing
    /// until the fault clears (then forward what was held, as TCP does
    /// when a partition heals).
    BlackHole,
    /// Reset every open connection, and every new one at once.
    Reset,
}

/// A proxy on a free port of 127.0.0.1, forwarding to `127.0.0.1:upstream`.
/// Stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    fault: watch::Sender<Fault>,
    connections: Arc<AtomicUsize>,
    chunks: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy in front of `127.0.0.1:upstream`, passing traffic.
    pub async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (fault, rx) = watch::channel(Fault::Pass);
        let connections = Arc::new(AtomicUsize::new(0));
        let chunks = Arc::new(AtomicUsize::new(0));
        let (c, k) = (connections.clone(), chunks.clone());
        let upstream: SocketAddr = ([127, 0, 0, 1], upstream).into();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                c.fetch_add(1, Ordering::Relaxed);
                // Every close is a reset (RST), not a graceful FIN.
                #[allow(deprecated)]
                let _ = client.set_linger(Some(Duration::ZERO));
                if *rx.borrow() == Fault::Reset {
                    drop(client);
                    continue;
                }
                tokio::spawn(serve(client, upstream, rx.clone(), k.clone()));
            }
        });
        FaultProxy {
            addr,
            fault,
            connections,
            chunks,
            task,
        }
    }

    /// `redis://127.0.0.1:<port>` of the proxy.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Injects `fault` (or clears it with [`Fault::Pass`]).
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Chunks read from clients so far (about one per command when
    /// commands are sent one at a time).
    pub fn chunks(&self) -> usize {
        self.chunks.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.fault.send_replace(Fault::Reset);
    }
}

async fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    mut fault: watch::Receiver<Fault>,
    chunks: Arc<AtomicUsize>,
) {
    let server = tokio::select! {
        s = TcpStream::connect(upstream) => match s {
            Ok(s) => s,
            Err(_) => return,
        },
        _ = reset(&mut fault) => return,
    };
    #[allow(deprecated)]
    let _ = server.set_linger(Some(Duration::ZERO));
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    tokio::select! {
        _ = pump(cr, sw, fault.clone(), Some(chunks)) => {}
        _ = pump(sr, cw, fault.clone(), None) => {}
        _ = reset(&mut fault) => {}
    }
    // Dropping the halves resets both connections.
}

/// Resolves when the fault is [`Fault::Reset`].
async fn reset(fault: &mut watch::Receiver<Fault>) {
    loop {
        if *fault.borrow_and_update() == Fault::Reset {
            return;
        }
        if fault.changed().await.is_err() {
            return;
        }
    }
}

/// Copies `from` to `to` under the current fault: reads go on always
/// (counted), writes wait out a latency or a black hole.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut fault: watch::Receiver<Fault>,
    count: Option<Arc<AtomicUsize>>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Vec<u8>, Instant)>();
    let reader_fault = fault.clone();
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if let Some(c) = &count {
                c.fetch_add(1, Ordering::Relaxed);
            }
            let at = match *reader_fault.borrow() {
                Fault::Latency(d) => Instant::now() + d,
                _ => Instant::now(),
            };
            if tx.send((buf[..n].to_vec(), at)).is_err() {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((chunk, at)) = rx.recv().await {
            loop {
                let now = *fault.borrow_and_update();
                match now {
                    Fault::BlackHole => {
                        if fault.changed().await.is_err() {
                            return;
                        }
                    }
                    Fault::Reset => return,
                    Fault::Pass | Fault::Latency(_) => break,
                }
            }
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(reader, async {
        writer.await;
    });
}
