//! HTTPS for the dashboard, `/metrics` and the API: the same certificate as
//! gRPC (and with `--tls-client-ca`, the same demand for client
//! certificates). Handshakes run in their own tasks, so a client that opens a
//! connection and says nothing holds up no one else.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use flotilla_shared::{Error, Result};
use flotilla_wire::tls::ServerTls;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A handshake not done by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Accepted connections waiting for axum to take them.
const READY_QUEUE: usize = 64;

/// The rustls configuration of the HTTP side, read from the same files as gRPC's.
pub fn tls_config(tls: &ServerTls) -> Result<Arc<ServerConfig>> {
    let (cert, key) = tls.identity.read("--tls-cert", "--tls-key")?;
    let chain = CertificateDer::pem_slice_iter(&cert)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| {
            Error::InvalidInput(format!(
                "--tls-cert {}: not a PEM certificate chain: {e}",
                tls.identity.cert.display()
            ))
        })?;
    let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| {
        Error::InvalidInput(format!(
            "--tls-key {}: not a PEM private key: {e}",
            tls.identity.key.display()
        ))
    })?;
    let builder = ServerConfig::builder();
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).map_err(|e| {
                Error::InvalidInput(format!("--tls-client-ca {}: {e}", ca.display()))
            })? {
                let cert = cert.map_err(|e| {
                    Error::InvalidInput(format!("--tls-client-ca {}: {e}", ca.display()))
                })?;
                roots.add(cert).map_err(|e| {
                    Error::InvalidInput(format!("--tls-client-ca {}: {e}", ca.display()))
                })?;
            }
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|e| {
                    Error::InvalidInput(format!("--tls-client-ca {}: {e}", ca.display()))
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        Error::InvalidInput(format!(
            "--tls-cert {} and --tls-key {} do not make a usable pair: {e}",
            tls.identity.cert.display(),
            tls.identity.key.display()
        ))
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// TCP connections accepted and handshaken, handed to axum in order of completion.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    address: SocketAddr,
}

impl TlsListener {
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>) -> Self {
        let address = listener
            .local_addr()
            .expect("a bound listener has an address");
        let (ready_tx, ready) = mpsc::channel(READY_QUEUE);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                // Stop listening as soon as the server is gone.
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = ready_tx.closed() => return,
                };
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, then go on.
                        tracing::warn!(error = %e, "HTTPS accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let ready_tx = ready_tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = ready_tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        TlsListener { ready, address }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accepting task ends only once this listener is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.address)
    }
}
