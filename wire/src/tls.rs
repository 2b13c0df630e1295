//! TLS settings shared by the coordinator (server side) and its workers and
//! clients (client side). Files are read when the settings are applied, so a
//! missing or malformed one is refused at start, naming the flag and path
//! (ARCHITECTURE.md, "TLS and health").

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

use flotilla_shared::{Error, Result};

/// A certificate chain and its private key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertAndKey {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The coordinator's side: `--tls-cert`/`--tls-key`, and `--tls-client-ca`
/// to require client certificates signed by that CA (mutual TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    pub identity: CertAndKey,
    pub client_ca: Option<PathBuf>,
}

/// A worker's or client's side: `--tls-ca` (the CA that signed the
/// coordinator's certificate; without it, an `https://` address is checked
/// against the public web roots) and, for mutual TLS,
/// `--tls-client-cert`/`--tls-client-key`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    pub ca: Option<PathBuf>,
    pub identity: Option<CertAndKey>,
}

impl CertAndKey {
    /// From the two optional flags, which go together.
    pub fn from_flags(
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        cert_flag: &str,
        key_flag: &str,
    ) -> Result<Option<CertAndKey>> {
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(CertAndKey { cert, key })),
            (None, None) => Ok(None),
            (Some(_), None) => Err(Error::InvalidInput(format!(
                "{cert_flag} needs {key_flag} too: the private key of that certificate (PEM)"
            ))),
            (None, Some(_)) => Err(Error::InvalidInput(format!(
                "{key_flag} needs {cert_flag} too: the certificate chain of that key (PEM)"
            ))),
        }
    }

    /// Both files' bytes, checked to hold what their flags promise.
    pub fn read(&self, cert_flag: &str, key_flag: &str) -> Result<(Vec<u8>, Vec<u8>)> {
        let cert = read_pem(&self.cert, cert_flag, "CERTIFICATE")?;
        let key = read_pem(&self.key, key_flag, "PRIVATE KEY")?;
        Ok((cert, key))
    }

    fn identity(&self, cert_flag: &str, key_flag: &str) -> Result<Identity> {
        let (cert, key) = self.read(cert_flag, key_flag)?;
        Ok(Identity::from_pem(cert, key))
    }
}

impl ServerTls {
    /// The gRPC server's configuration.
    pub fn tonic(&self) -> Result<ServerTlsConfig> {
        let mut config =
            ServerTlsConfig::new().identity(self.identity.identity("--tls-cert", "--tls-key")?);
        if let Some(ca) = &self.client_ca {
            config = config.client_ca_root(Certificate::from_pem(read_pem(
                ca,
                "--tls-client-ca",
                "CERTIFICATE",
            )?));
        }
        Ok(config)
    }
}

impl ClientTls {
    /// Whether any TLS setting was given: then the address is reached over TLS.
    pub fn is_set(&self) -> bool {
        self.ca.is_some() || self.identity.is_some()
    }

    /// The endpoint for a coordinator address (`HOST:PORT` or a URL): over
    /// TLS when TLS is set or the address says `https://`.
    pub fn endpoint(&self, address: &str) -> Result<Endpoint> {
        let url = endpoint_url(address, self.is_set());
        let endpoint = Endpoint::from_shared(url.clone()).map_err(|e| {
            Error::InvalidInput(format!(
                "'{address}' is not a coordinator address (HOST:PORT or https://HOST:PORT): {e}"
            ))
        })?;
        if !url.starts_with("https://") {
            return Ok(endpoint);
        }
        let mut config = ClientTlsConfig::new();
        config = match &self.ca {
            Some(ca) => config.ca_certificate(Certificate::from_pem(read_pem(
                ca,
                "--tls-ca",
                "CERTIFICATE",
            )?)),
            None => config.with_webpki_roots(),
        };
        if let Some(identity) = &self.identity {
            config = config.identity(identity.identity("--tls-client-cert", "--tls-client-key")?);
        }
        endpoint.tls_config(config).map_err(|e| {
            Error::InvalidInput(format!("the TLS settings for {address} were refused: {e}"))
        })
    }
}

/// `HOST:PORT` becomes `http://HOST:PORT`, or `https://` when `tls`; a URL
/// is kept as written.
pub fn endpoint_url(address: &str, tls: bool) -> String {
    if address.starts_with("http://") || address.starts_with("https://") {
        address.to_string()
    } else if tls {
        format!("https://{address}")
    } else {
        format!("http://{address}")
    }
}

/// A PEM file that must hold at least one block whose label ends in `label`
/// (`CERTIFICATE`; `PRIVATE KEY` also matches `RSA PRIVATE KEY` and `EC PRIVATE KEY`).
fn read_pem(path: &Path, flag: &str, label: &str) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::io(format!("{flag} {}: cannot read it", path.display()), e))?;
    let text = String::from_utf8_lossy(&bytes);
    let holds = text.lines().any(|line| {
        line.strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
            .is_some_and(|found| found.ends_with(label))
    });
    if !holds {
        return Err(Error::InvalidInput(format!(
            "{flag} {}: no '-----BEGIN {label}-----' block in it; give a PEM file",
            path.display()
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_take_https_when_tls_is_set() {
        assert_eq!(endpoint_url("h:7700", false), "http://h:7700");
        assert_eq!(endpoint_url("h:7700", true), "https://h:7700");
        assert_eq!(endpoint_url("https://h:7700", false), "https://h:7700");
        assert_eq!(endpoint_url("http://h:7700", true), "http://h:7700");
    }

    #[test]
    fn a_half_pair_of_flags_is_refused() {
        let err = CertAndKey::from_flags(Some("c.pem".into()), None, "--tls-cert", "--tls-key")
            .unwrap_err();
        assert!(
            err.to_string().contains("--tls-cert needs --tls-key"),
            "{err}"
        );
        assert!(CertAndKey::from_flags(None, None, "a", "b")
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_file_without_the_block_is_refused_with_its_flag() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = read_pem(&path, "--tls-ca", "CERTIFICATE").unwrap_err();
        assert!(err.to_string().contains("--tls-ca"), "{err}");
        std::fs::write(
            &path,
            "-----BEGIN EC PRIVATE KEY-----\nx\n-----END EC PRIVATE KEY-----\n",
        )
        .unwrap();
        assert!(read_pem(&path, "--tls-key", "PRIVATE KEY").is_ok());
    }
}
