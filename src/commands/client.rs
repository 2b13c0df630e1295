//! Commands that talk to a coordinator over the control API: submit, status, ls, cancel.

use std::path::PathBuf;
use std::time::Duration;

use flotilla_shared::auth::TOKEN_METADATA_KEY;
use flotilla_shared::{Error, Result};
use flotilla_wire::proto::control_service_client::ControlServiceClient;
use flotilla_wire::tls::ClientTls;
use flotilla_wire::MAX_MESSAGE_BYTES;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub struct Target {
    pub address: String,
    pub token_file: Option<PathBuf>,
    pub root: PathBuf,
    pub tls: ClientTls,
}

#[derive(Clone)]
pub struct AddToken {
    token: MetadataValue<tonic::metadata::Ascii>,
}

impl AddToken {
    pub fn new(token: MetadataValue<tonic::metadata::Ascii>) -> Self {
        AddToken { token }
    }
}

impl tonic::service::Interceptor for AddToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert(TOKEN_METADATA_KEY, self.token.clone());
        Ok(request)
    }
}

pub type Client = ControlServiceClient<InterceptedService<Channel, AddToken>>;

pub async fn connect(address: &str, token: &str, tls: &ClientTls) -> Result<Client> {
    let channel = channel(address, tls).await?;
    let token = MetadataValue::try_from(token)
        .map_err(|_| Error::InvalidInput("the token must be printable ASCII".into()))?;
    Ok(
        ControlServiceClient::with_interceptor(channel, AddToken { token })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    )
}

pub async fn connect_target(target: &Target) -> Result<Client> {
    let token = super::client_token(target.token_file.as_deref(), &target.root)?;
    connect(&target.address, &token, &target.tls).await
}

/// A connection to the coordinator at `address`, over TLS when `tls` says so.
pub async fn channel(address: &str, tls: &ClientTls) -> Result<Channel> {
    tls.endpoint(address)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| {
            let cause = flotilla_worker::connect_error(&e);
            let hint = if cause.contains("certificate") || cause.contains("InvalidContentType") || cause.contains("tls") {
                "; check --tls-ca (the CA that signed the coordinator's certificate), and that the coordinator serves TLS"
            } else {
                "; is `flotilla coordinator start` running there?"
            };
            Error::Unavailable(format!("cannot reach the coordinator at {address}: {cause}{hint}"))
        })
}
