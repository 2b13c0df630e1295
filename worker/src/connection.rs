//! How this worker reaches its coordinator: the address, the token, and
//! channel settings shared by the session stream and workdir fetches.

use std::sync::Arc;
use std::time::Duration;

use flotilla_shared::{Error, Result};
use flotilla_wire::proto::worker_service_client::WorkerServiceClient;
use flotilla_wire::tls::ClientTls;
use flotilla_wire::MAX_MESSAGE_BYTES;
use tonic::transport::{Channel, Endpoint};

#[derive(Clone)]
pub struct CoordinatorLink {
    address: Arc<str>,
    token: Arc<str>,
    /// Built once: the address checked and the TLS files read at start, so
    /// that a mistake in either stops the worker instead of retrying for ever.
    endpoint: Endpoint,
}

impl CoordinatorLink {
    pub fn new(address: &str, token: &str, tls: &ClientTls) -> Result<Self> {
        let endpoint = tls
            .endpoint(address)?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            // Notice a coordinator that vanished without closing the connection.
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        Ok(CoordinatorLink {
            address: address.into(),
            token: token.into(),
            endpoint,
        })
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    pub async fn channel(&self) -> Result<Channel> {
        self.endpoint.connect().await.map_err(|e| {
            Error::Unavailable(format!(
                "cannot reach the coordinator at {}: {}",
                self.address,
                connect_error(&e)
            ))
        })
    }

    /// A channel that connects when first used and reconnects after a
    /// break: for calls made while the session may be reconnecting.
    pub fn lazy_channel(&self) -> Channel {
        self.endpoint.connect_lazy()
    }

    pub async fn worker_client(&self) -> Result<WorkerServiceClient<Channel>> {
        Ok(WorkerServiceClient::new(self.channel().await?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }
}

/// A transport error with its causes: tonic's own message is only
/// "transport error", while the cause says "certificate not trusted" or
/// "connection refused".
pub fn connect_error(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}
