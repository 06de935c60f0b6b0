//! TLS on the one listener (`tls_cert`, `tls_key`): rustls with the ring provider.
//!
//! - The certificate is held by a [`ResolvesServerCert`] whose current `CertifiedKey` is
//!   swapped on SIGHUP or when either file changes (their size, mtime or inode, looked at every
//!   [`POLL_INTERVAL`]). Open connections keep the keys they negotiated; new handshakes get
//!   the new certificate. A new file that does not load is logged and the old one kept; at
//!   start, it stops start-up naming the file.
//! - The handshake runs on tokio-rustls under the handshake timeout, then hyper serves HTTP
//!   over it. After a WebSocket upgrade the TCP stream and the rustls connection are taken
//!   out again and driven by [`TlsSocket`], the same non-blocking reads and writes the
//!   driver does on a plain [`TcpStream`].
//! - A client that speaks plain HTTP to the TLS port gets a plain `400` saying so, and the
//!   connection is closed.

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use bytes::BytesMut;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, ServerConnection};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, error, info};

use crate::socket::Socket;

/// How often the certificate files are looked at for changes.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// Plaintext bytes read per call when the driver gives no room.
const READ_CHUNK: usize = 4096;
/// Most plaintext bytes taken per read.
const MAX_READ: usize = 64 * 1024;
/// How long a `close_notify` may wait for a socket that takes nothing.
const CLOSE_NOTIFY_TIMEOUT: Duration = Duration::from_secs(3);

/// The TLS side of the listener: the acceptor and the certificate it serves.
pub struct Tls {
    acceptor: TlsAcceptor,
    resolver: Arc<Resolver>,
    cert_path: PathBuf,
    key_path: PathBuf,
}

impl Tls {
    /// Loads the certificate chain and key; the error names the file that is wrong.
    pub fn load(cert_path: &Path, key_path: &Path) -> anyhow::Result<Tls> {
        let key = load_certified_key(cert_path, key_path)?;
        let resolver = Arc::new(Resolver {
            current: RwLock::new(Arc::new(key)),
        });
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("tls: no protocol version in common with the crypto provider")?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        // WebSockets and everything else here are HTTP/1.1.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            resolver,
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
        })
    }

    /// Reads the files again and serves the new certificate to new handshakes; on error the
    /// old one stays (and the error is returned, for the log).
    pub fn reload(&self) -> anyhow::Result<()> {
        let key = load_certified_key(&self.cert_path, &self.key_path)?;
        *self
            .resolver
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
        Ok(())
    }

    /// The files, for the log.
    fn describe(&self) -> String {
        format!(
            "cert={} key={}",
            self.cert_path.display(),
            self.key_path.display()
        )
    }

    /// Reloads the certificate on SIGHUP and when the files change, until the task is
    /// aborted.
    pub fn watch(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let mut hup = match signal(SignalKind::hangup()) {
                Ok(s) => Some(s),
                Err(e) => {
                    error!(error = %e, "tls: cannot handle SIGHUP; the certificate is reloaded only when its files change");
                    None
                }
            };
            let mut seen = self.stamps();
            let mut tick = tokio::time::interval(POLL_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let why = tokio::select! {
                    Some(()) = async {
                        match hup.as_mut() {
                            Some(h) => h.recv().await,
                            None => std::future::pending().await,
                        }
                    } => "SIGHUP",
                    _ = tick.tick() => {
                        let now = self.stamps();
                        if now == seen {
                            continue;
                        }
                        "the files changed"
                    }
                };
                // Whatever the outcome, this state of the files has been tried: a half
                // written pair is tried again when the second file lands.
                seen = self.stamps();
                match self.reload() {
                    Ok(()) => {
                        info!(reason = why, files = %self.describe(), "tls: certificate reloaded")
                    }
                    Err(e) => error!(
                        reason = why,
                        "{e:#}; still serving the previous certificate"
                    ),
                }
            }
        })
    }

    fn stamps(&self) -> [Option<Stamp>; 2] {
        [stamp(&self.cert_path), stamp(&self.key_path)]
    }

    /// The TLS handshake on an accepted connection. A client that sends plain HTTP is
    /// answered with a plain 400 and the connection closed.
    pub async fn accept(&self, stream: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        let mut first = [0u8; 1];
        let n = stream.peek(&mut first).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        // A TLS connection starts with a handshake record (22); HTTP with a method name.
        if first[0].is_ascii_alphabetic() {
            refuse_plain_http(stream).await;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "plain HTTP on the TLS port",
            ));
        }
        self.acceptor.accept(stream).await
    }
}

/// What tells a changed file: its size, mtime and inode (a renamed-in new file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    ino: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: m.len(),
        modified: m.modified().ok(),
        ino: m.ino(),
    })
}

fn load_certified_key(cert_path: &Path, key_path: &Path) -> anyhow::Result<CertifiedKey> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| anyhow::anyhow!("tls_cert {}: {e}", cert_path.display()))?;
    if certs.is_empty() {
        anyhow::bail!(
            "tls_cert {}: no CERTIFICATE in the file",
            cert_path.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| anyhow::anyhow!("tls_key {}: {e}", key_path.display()))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| {
        anyhow::anyhow!(
            "tls_key {}: not a usable private key: {e}",
            key_path.display()
        )
    })?;
    let certified = CertifiedKey::new(certs, signer);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            anyhow::bail!(
                "tls_key {} does not belong to the certificate in tls_cert {}",
                key_path.display(),
                cert_path.display()
            )
        }
        Err(e) => anyhow::bail!("tls_cert {}: {e}", cert_path.display()),
    }
    Ok(certified)
}

/// Serves the current certificate to every handshake.
struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Resolver")
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// Answers a plain-HTTP request on the TLS port, then closes.
async fn refuse_plain_http(mut stream: TcpStream) {
    let body = serde_json::json!({
        "error": "tls_required",
        "message": "this port speaks HTTPS: use https:// or wss://",
    })
    .to_string();
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(response.as_bytes()).await.is_err() {
        return;
    }
    let _ = AsyncWriteExt::shutdown(&mut stream).await;
    // Read what the client sent before closing: closing with unread input sends RST, which
    // can destroy the answer in flight.
    let drain = async {
        let mut buf = [0u8; 1024];
        loop {
            match tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
    debug!("plain HTTP on the TLS port: answered 400");
}

/// A TLS connection after its handshake, for the WebSocket driver: the TCP stream is
/// read and written without blocking, through rustls.
///
/// Read side: rustls keeps a deframing buffer (4 KiB once used) and the decrypted bytes not
/// yet taken, which are taken whole on every read. Write side: frames go into rustls (which
/// encrypts them into records at once, many frames per record) and out to the socket; what
/// the socket does not take stays in rustls, bounded by its buffer limit, until writable.
pub struct TlsSocket {
    tcp: TcpStream,
    /// Boxed: 1.2 KiB that would otherwise widen the connection's task (and every copy of
    /// the socket its futures hold) instead of one allocation of its own.
    conn: Box<ServerConnection>,
    /// rustls may hold decrypted bytes not yet taken (the last read filled the room given,
    /// or the HTTP server left some): the next read is tried without waiting for the socket.
    plaintext_ready: bool,
    /// The TCP stream ended.
    eof: bool,
}

impl TlsSocket {
    pub fn new(tcp: TcpStream, conn: ServerConnection) -> TlsSocket {
        TlsSocket {
            tcp,
            conn: Box::new(conn),
            plaintext_ready: true,
            eof: false,
        }
    }

    /// Writes the TLS records rustls holds until none is left or the socket is full.
    fn write_pending(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            if self.conn.write_tls(&mut TryIo(&self.tcp))? == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    }

    /// Takes decrypted bytes into `buf`; `WouldBlock` when rustls holds none.
    fn take_plaintext(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        let start = buf.len();
        // At most a few records' worth at once: the room is zeroed first.
        let room = (buf.capacity() - start).min(MAX_READ);
        buf.resize(start + room, 0);
        let r = self.conn.reader().read(&mut buf[start..]);
        let n = *r.as_ref().unwrap_or(&0);
        buf.truncate(start + n);
        match r {
            Ok(n) => {
                // Room filled: there may be more.
                self.plaintext_ready = n > 0 && n == room;
                Ok(n)
            }
            // The stream ended without close_notify: the end of the stream all the same
            // (WebSocket framing tells a cut message by itself).
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                self.plaintext_ready = false;
                Ok(0)
            }
            Err(e) => {
                self.plaintext_ready = false;
                Err(e)
            }
        }
    }
}

impl Socket for TlsSocket {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.plaintext_ready || self.eof {
            return Poll::Ready(Ok(()));
        }
        self.tcp.poll_read_ready(cx)
    }

    fn poll_write_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tcp.poll_write_ready(cx)
    }

    fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            match self.take_plaintext(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return other,
            }
            if self.eof {
                return Ok(0);
            }
            // `WouldBlock` here clears the socket's readiness, as a plain read would.
            if self.conn.read_tls(&mut TryIo(&self.tcp))? == 0 {
                self.eof = true;
            }
            if let Err(e) = self.conn.process_new_packets() {
                // rustls queued an alert saying why: send it if the socket takes it now.
                let _ = self.write_pending();
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            if self.conn.wants_write() {
                // A handshake message after the handshake (a key update): answered now, or
                // when writable (the driver sees `has_pending_output`).
                match self.write_pending() {
                    Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                    _ => {}
                }
            }
        }
    }

    fn try_write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // Records from before first: a socket that took none of them takes nothing new.
        self.write_pending()?;
        let n = self.conn.writer().write_vectored(bufs)?;
        match self.write_pending() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(n),
        }
    }

    fn has_pending_output(&self) -> bool {
        self.conn.wants_write()
    }

    fn try_flush(&mut self) -> io::Result<()> {
        self.write_pending()
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.conn.send_close_notify();
        let deadline = tokio::time::Instant::now() + CLOSE_NOTIFY_TIMEOUT;
        loop {
            match self.write_pending() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let ready = std::future::poll_fn(|cx| self.tcp.poll_write_ready(cx));
                    if tokio::time::timeout_at(deadline, ready).await.is_err() {
                        break;
                    }
                }
                _ => break,
            }
        }
        AsyncWriteExt::shutdown(&mut self.tcp).await
    }
}

/// The TCP stream as `Read`/`Write` for rustls, without blocking (`WouldBlock` passes
/// through).
struct TryIo<'a>(&'a TcpStream);

impl Read for TryIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for TryIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
