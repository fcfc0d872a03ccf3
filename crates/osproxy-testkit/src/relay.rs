//! A TCP relay in front of a real server, for one fault a real server
//! cannot produce on demand: cutting one client's connections (and refusing
//! its reconnects) while the server and its other clients carry on. It also
//! records what the client sent (the first MiB), so a test can check what
//! reached the server — headers osproxy must strip or add.

use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Forwards `127.0.0.1:<port>` to a target while open; when cut, closes
/// every relayed connection and drops new ones at once.
#[derive(Debug)]
pub struct Relay {
    addr: String,
    open: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<Vec<u8>>>,
}

impl Relay {
    /// Starts relaying to `target` (`host:port`).
    pub fn start(target: &str) -> Result<Relay, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let addr = listener
            .local_addr()
            .map_err(|e| e.to_string())?
            .to_string();
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let open = Arc::new(AtomicBool::new(true));
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let sent: Arc<Mutex<Vec<u8>>> = Arc::new(Mutex::new(Vec::new()));
        let target = target.to_string();
        let (o, l, s, rec) = (open.clone(), live.clone(), stop.clone(), sent.clone());
        std::thread::Builder::new()
            .name("testkit-relay".into())
            .spawn(move || {
                while !s.load(Ordering::Acquire) {
                    let (client, _) = match listener.accept() {
                        Ok(c) => c,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        }
                        Err(_) => continue,
                    };
                    if !o.load(Ordering::Acquire) {
                        drop(client);
                        continue;
                    }
                    let _ = client.set_nonblocking(false);
                    let Ok(server) = TcpStream::connect(&target) else {
                        continue;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    if let Ok(mut live) = l.lock() {
                        for s in [&client, &server] {
                            if let Ok(c) = s.try_clone() {
                                live.push(c);
                            }
                        }
                    }
                    pipe(&client, &server, Some(rec.clone()));
                    pipe(&server, &client, None);
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(Relay {
            addr,
            open,
            live,
            stop,
            sent,
        })
    }

    /// `http://127.0.0.1:PORT`, to give a client instead of the target's.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes every relayed connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, Ordering::Release);
        if let Ok(mut live) = self.live.lock() {
            for s in live.drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }

    /// What clients sent through the relay so far (the first MiB), as text.
    pub fn sent(&self) -> String {
        self.sent
            .lock()
            .map(|s| String::from_utf8_lossy(&s).into_owned())
            .unwrap_or_default()
    }

    /// Forgets what was recorded.
    pub fn clear_sent(&self) {
        if let Ok(mut s) = self.sent.lock() {
            s.clear();
        }
    }

    /// Relays new connections again.
    pub fn restore(&self) {
        self.open.store(true, Ordering::Release);
    }
}

/// How much of what clients send is kept for [`Relay::sent`].
const RECORDED: usize = 1 << 20;

fn pipe(from: &TcpStream, to: &TcpStream, record: Option<Arc<Mutex<Vec<u8>>>>) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    let _ = std::thread::Builder::new()
        .name("testkit-relay-pipe".into())
        .spawn(move || {
            use std::io::{Read, Write};
            let mut buf = [0u8; 16 * 1024];
            loop {
                let n = match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if let Some(rec) = &record {
                    if let Ok(mut r) = rec.lock() {
                        let room = RECORDED.saturating_sub(r.len());
                        r.extend_from_slice(&buf[..n.min(room)]);
                    }
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        });
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.cut();
    }
}
