//! How a client checks whom it talks to and says who it is: TLS with the CA
//! that signed the nodes' certificates (and, optionally, a client
//! certificate), and a bearer token sent as `authorization` metadata.
//! Shared by the client, the CLI and `intake load`.

use std::path::Path;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::error::ClientError;

/// TLS and token settings; the default is plaintext without a token.
#[derive(Clone, Default)]
pub struct Security {
    tls: Option<ClientTlsConfig>,
    token: Option<MetadataValue<Ascii>>,
}

/// Never prints the token.
impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("tls", &self.tls.is_some())
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

fn read(what: &str, path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|e| ClientError::Config(format!("{what} {}: {e}", path.display())))
}

impl Security {
    /// TLS when `ca` is given: the nodes' certificates must chain to it.
    /// `cert` and `key` (both or neither) add a client certificate.
    pub fn from_files(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
        token: Option<&str>,
    ) -> Result<Security, ClientError> {
        let tls = match (ca, cert, key) {
            (None, None, None) => None,
            (None, _, _) => {
                return Err(ClientError::Config(
                    "--cert/--key need --ca: the CA that signed the nodes' certificates".into(),
                ));
            }
            (Some(ca), cert, key) => {
                let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("--ca", ca)?));
                match (cert, key) {
                    (Some(c), Some(k)) => {
                        tls = tls.identity(Identity::from_pem(read("--cert", c)?, read("--key", k)?));
                    }
                    (None, None) => {}
                    _ => return Err(ClientError::Config("--cert and --key go together".into())),
                }
                Some(tls)
            }
        };
        let mut out = Security { tls, token: None };
        if let Some(t) = token {
            out = out.with_token(t)?;
        }
        Ok(out)
    }

    /// Sends `token` as `authorization: Bearer <token>` on every call.
    pub fn with_token(mut self, token: &str) -> Result<Security, ClientError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(ClientError::Config("the token is empty".into()));
        }
        let value = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| ClientError::Config("the token must be printable ASCII".into()))?;
        self.token = Some(value);
        Ok(self)
    }

    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The endpoint for `addr` (`host:port`, with or without a scheme): https
    /// with these TLS settings, or plain http.
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, ClientError> {
        let bare = addr.trim_start_matches("http://").trim_start_matches("https://");
        let bad = |e: &dyn std::fmt::Display| ClientError::Config(format!("bad endpoint {addr:?}: {e}"));
        match &self.tls {
            Some(tls) => Endpoint::from_shared(format!("https://{bare}"))
                .map_err(|e| bad(&e))?
                .tls_config(tls.clone())
                .map_err(|e| bad(&e)),
            None if addr.starts_with("https://") => Err(ClientError::Config(format!(
                "{addr} is https: give --ca (the CA that signed the nodes' certificates)"
            ))),
            None => Endpoint::from_shared(format!("http://{bare}")).map_err(|e| bad(&e)),
        }
    }

    /// Adds the token, if any, to `req`.
    pub fn authorize<T>(&self, req: &mut tonic::Request<T>) {
        if let Some(t) = &self.token {
            req.metadata_mut().insert("authorization", t.clone());
        }
    }

    /// An interceptor that adds the token to every call of a client.
    pub fn interceptor(&self) -> Authorize {
        Authorize(self.clone())
    }
}

/// See [`Security::interceptor`].
#[derive(Clone, Debug)]
pub struct Authorize(Security);

impl tonic::service::Interceptor for Authorize {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        self.0.authorize(&mut req);
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_sent_and_never_printed() {
        let s = Security::default().with_token("s3cret").unwrap();
        assert!(!format!("{s:?}").contains("s3cret"));
        let mut req = tonic::Request::new(());
        s.authorize(&mut req);
        assert_eq!(req.metadata().get("authorization").unwrap(), "Bearer s3cret");
        assert!(Security::default().with_token("  ").is_err());
        assert!(Security::default().with_token("a\nb").is_err());
    }

    #[test]
    fn https_without_ca_is_a_clear_error() {
        let err = Security::default().endpoint("https://127.0.0.1:1").unwrap_err();
        assert!(err.to_string().contains("--ca"), "{err}");
        assert!(Security::default().endpoint("127.0.0.1:1").is_ok());
        assert!(Security::from_files(None, Some(Path::new("c")), None, None).is_err());
    }
}
