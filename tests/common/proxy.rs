//! A TCP proxy on 127.0.0.1 that a test can close, reopen, stall and cut, to
//! make a database unreachable, unresponsive or lost without touching the
//! database server.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// Forwards every connection on its own port to `upstream`. While closed, the
/// port rejects connections, and closing drops every forwarded connection.
/// While stalled, connections stay open but no byte is delivered. Cut
/// connections are closed upstream and silent towards the client.
pub struct TcpProxy {
    address: SocketAddr,
    upstream: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
}

/// The state of a forwarded connection's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Open,
    /// Bytes wait in the proxy until the link opens again.
    Stalled,
    /// The upstream side is closed and the client side stays open and silent.
    Cut,
}

struct ProxyState {
    /// Counts the calls of `close`, so that an accept loop can tell that it
    /// belongs to an earlier opening.
    closings: u64,
    /// The accept loop and one task per forwarded connection.
    tasks: Vec<AbortHandle>,
    /// The link of the connections accepted since the last `cut_connections`.
    link: watch::Sender<Link>,
    /// The links of cut connections, kept so that those connections stay
    /// open and silent instead of closing.
    cut_links: Vec<watch::Sender<Link>>,
}

impl TcpProxy {
    /// Starts a proxy on a free port of 127.0.0.1 that forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy to a free port of 127.0.0.1");
        let state = ProxyState {
            closings: 0,
            tasks: Vec::new(),
            link: watch::Sender::new(Link::Open),
            cut_links: Vec::new(),
        };
        let proxy = TcpProxy {
            address: listener.local_addr().expect("proxy address"),
            upstream,
            state: Arc::new(Mutex::new(state)),
        };
        proxy.accept_on(listener);
        proxy
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Stops accepting, so that the port rejects connections, and drops every
    /// forwarded connection on both sides.
    pub fn close(&self) {
        let mut state = self.state.lock().unwrap();
        state.closings += 1;
        for task in state.tasks.drain(..) {
            task.abort();
        }
    }

    /// Accepts and forwards connections again, on the same port.
    ///
    /// Another socket may take the port while the proxy is closed, so the bind
    /// is retried for up to two seconds before the test fails.
    pub async fn reopen(&self) {
        let mut attempts = 0;
        let listener = loop {
            match TcpListener::bind(self.address).await {
                Ok(listener) => break listener,
                Err(_) if attempts < 20 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => panic!("cannot bind the proxy to {} again: {err}", self.address),
            }
        };
        self.accept_on(listener);
    }

    /// Delays every byte in both directions: connections stay open, and new
    /// ones are accepted but not forwarded, as with a database that stopped
    /// responding.
    pub fn stall(&self) {
        self.state.lock().unwrap().link.send_replace(Link::Stalled);
    }

    /// Delivers the delayed bytes and forwards again.
    pub fn resume(&self) {
        self.state.lock().unwrap().link.send_replace(Link::Open);
    }

    /// Closes the upstream side of every connection accepted so far, and
    /// leaves the client side open and silent for good, as when a database
    /// host disappears without sending a reset. New connections are
    /// forwarded normally.
    pub fn cut_connections(&self) {
        let mut state = self.state.lock().unwrap();
        let old = std::mem::replace(&mut state.link, watch::Sender::new(Link::Open));
        old.send_replace(Link::Cut);
        state.cut_links.push(old);
    }

    fn accept_on(&self, listener: TcpListener) {
        let upstream = self.upstream;
        let state = self.state.clone();
        let mut guard = self.state.lock().unwrap();
        let opening = guard.closings;
        let accept_loop = tokio::spawn(async move {
            loop {
                let client = match listener.accept().await {
                    Ok((client, _)) => client,
                    Err(_) => {
                        // An error such as too many open files can repeat at
                        // once, so pause instead of spinning.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let mut state = state.lock().unwrap();
                // A connection accepted just before `close` must not outlive it.
                if state.closings != opening {
                    return;
                }
                let link = state.link.subscribe();
                let forward = tokio::spawn(forward(client, upstream, link));
                state.tasks.retain(|task| !task.is_finished());
                state.tasks.push(forward.abort_handle());
            }
        });
        guard.tasks.push(accept_loop.abort_handle());
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.close();
    }
}

/// Forwards one connection until either side closes, or until its link is
/// cut. A client whose upstream connection fails is dropped, as a failed
/// connect would be.
async fn forward(mut client: TcpStream, upstream: SocketAddr, mut link: watch::Receiver<Link>) {
    match link
        .wait_for(|link| *link != Link::Stalled)
        .await
        .map(|link| *link)
    {
        Ok(Link::Open) => {}
        Ok(_) => return hold_silently(client).await,
        Err(_) => return,
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let cut = {
        let (mut client_read, mut client_write) = client.split();
        let (mut server_read, mut server_write) = server.split();
        let (link_up, link_down) = (link.clone(), link.clone());
        let pumps = async {
            tokio::join!(
                pump(&mut client_read, &mut server_write, link_up),
                pump(&mut server_read, &mut client_write, link_down),
            )
        };
        tokio::select! {
            _ = pumps => false,
            result = link.wait_for(|link| *link == Link::Cut) => result.is_ok(),
        }
    };
    if cut {
        drop(server);
        hold_silently(client).await;
    }
}

/// Keeps a connection open without sending anything, until the task is aborted.
async fn hold_silently(client: TcpStream) {
    std::future::pending::<()>().await;
    drop(client);
}

/// Copies bytes from `from` to `to`, delaying each chunk until the link is
/// open, and shuts `to` down when `from` ends.
async fn pump(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
    mut link: watch::Receiver<Link>,
) {
    let mut buffer = vec![0; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if link.wait_for(|link| *link == Link::Open).await.is_err() {
            break;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
