//! A Google service account's JSON key (`kind: vertex`), read and checked at config load: a
//! key that cannot sign is a config error naming `service_account`, not a failure of the first
//! request.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use serde::Deserialize;

const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// The parts of a key file the JWT-bearer grant needs.
#[derive(Clone)]
pub struct ServiceAccountKey {
    pub client_email: String,
    pub private_key_id: Option<String>,
    /// The PKCS#8 DER of an RSA key that `ring` accepts.
    pub private_key_der: Arc<Vec<u8>>,
    /// Where tokens are asked for (http or https).
    pub token_uri: url::Url,
}

impl fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("private_key", &"***")
            .field("token_uri", &self.token_uri.as_str())
            .finish()
    }
}

#[derive(Deserialize)]
struct KeyFile {
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
    #[serde(default)]
    token_uri: Option<String>,
}

/// The DER bytes of a PEM block.
fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

impl ServiceAccountKey {
    /// From a key file's text; the error says what is wrong, never the key.
    pub fn parse(json: &str) -> Result<ServiceAccountKey, String> {
        let file: KeyFile = serde_json::from_str(json)
            .map_err(|e| format!("not a service-account key file ({e})"))?;
        let der = pem_to_der(&file.private_key).ok_or("private_key is not PEM")?;
        ring::signature::RsaKeyPair::from_pkcs8(&der)
            .map_err(|_| "private_key is not a PKCS#8 RSA key")?;
        let token_uri = file.token_uri.as_deref().unwrap_or(DEFAULT_TOKEN_URI);
        let token_uri = url::Url::parse(token_uri)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or("token_uri is not an http(s) URL")?;
        Ok(ServiceAccountKey {
            client_email: file.client_email,
            private_key_id: file.private_key_id,
            private_key_der: Arc::new(der),
            token_uri,
        })
    }
}
