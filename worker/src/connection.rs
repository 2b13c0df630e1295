//! How this worker reaches its coordinator: the address, the token, and
//! channel settings shared by the session stream and workdir fetches.

use std::sync::Arc;
use std::time::Duration;

use flotilla_shared::proto::worker_service_client::WorkerServiceClient;
use flotilla_shared::wire::MAX_MESSAGE_BYTES;
use flotilla_shared::{Error, Result};
use tonic::transport::{Channel, Endpoint};

#[derive(Clone)]
pub struct CoordinatorLink {
    address: Arc<str>,
    token: Arc<str>,
}

impl CoordinatorLink {
    pub fn new(address: &str, token: &str) -> Self {
        CoordinatorLink {
            address: endpoint_url(address).into(),
            token: token.into(),
        }
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    pub async fn channel(&self) -> Result<Channel> {
        Endpoint::from_shared(self.address.to_string())
            .map_err(|e| {
                Error::InvalidInput(format!(
                    "'{}' is not a coordinator address: {e}",
                    self.address
                ))
            })?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            // Notice a coordinator that vanished without closing the connection.
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true)
            .connect()
            .await
            .map_err(|e| {
                Error::Unavailable(format!(
                    "cannot reach the coordinator at {}: {e}",
                    self.address
                ))
            })
    }

    pub async fn worker_client(&self) -> Result<WorkerServiceClient<Channel>> {
        Ok(WorkerServiceClient::new(self.channel().await?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }
}

/// `HOST:PORT` or a full `http://HOST:PORT` URL.
pub fn endpoint_url(address: &str) -> String {
    if address.starts_with("http://") || address.starts_with("https://") {
        address.to_string()
    } else {
        format!("http://{address}")
    }
}
