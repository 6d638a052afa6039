//! Google service-account credentials → OAuth access tokens (the JWT-bearer grant), for
//! Vertex AI. A token is fetched on first use, cached, and renewed by the first request that
//! finds it within five minutes of expiry (the others keep using it meanwhile).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::HeaderValue;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use serde::Deserialize;

use crate::config::{Secret, ServiceAccountKey, Timeouts};
use crate::transport::{Endpoint, Transport, Upstream};

const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// A token this close to expiry is renewed.
const RENEW_BEFORE: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the service account JSON is not usable: {0}")]
    Account(String),
    #[error("the token endpoint failed: {0}")]
    Endpoint(String),
}

struct Token {
    value: Secret,
    expires: Instant,
}

/// Access tokens for one service account.
pub struct TokenSource {
    email: String,
    key_id: Option<String>,
    key: RsaKeyPair,
    token_uri: String,
    upstream: Upstream,
    current: ArcSwapOption<Token>,
    renewing: tokio::sync::Mutex<()>,
}

impl TokenSource {
    /// For the service account whose key the config checked.
    pub fn new(account: &ServiceAccountKey, timeouts: Timeouts) -> Result<TokenSource, TokenError> {
        let key = RsaKeyPair::from_pkcs8(&account.private_key_der)
            .map_err(|_| TokenError::Account("private_key is not a PKCS#8 RSA key".into()))?;
        let endpoint = Endpoint::from_url(&account.token_uri)
            .ok_or_else(|| TokenError::Account("token_uri is not an http(s) URL".into()))?;
        Ok(TokenSource {
            email: account.client_email.clone(),
            key_id: account.private_key_id.clone(),
            key,
            token_uri: account.token_uri.to_string(),
            upstream: Upstream::new(endpoint, timeouts),
            current: ArcSwapOption::empty(),
            renewing: tokio::sync::Mutex::new(()),
        })
    }

    /// A signed JWT asserting the service account, valid for an hour from `now`.
    fn assertion(&self, now: u64) -> Result<String, TokenError> {
        let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.key_id {
            header["kid"] = serde_json::json!(kid);
        }
        let claims = serde_json::json!({"iss": self.email, "scope": SCOPE, "aud": self.token_uri,
                                        "iat": now, "exp": now + 3600});
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| TokenError::Account("cannot sign with private_key".into()))?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }

    async fn fetch(&self, transport: &Transport) -> Result<Arc<Token>, TokenError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let body = format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={}",
            self.assertion(now)?
        );
        let path = url::Url::parse(&self.token_uri)
            .map(|u| u.path().to_string())
            .unwrap_or_else(|_| "/token".into());
        let headers = [(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        )];
        let started = Instant::now();
        // Not pooled: renewals also run in the health checks' runtime.
        let (status, answer) = transport
            .call(
                &self.upstream,
                "POST",
                &path,
                &headers,
                body.as_bytes(),
                self.upstream.timeouts.total,
            )
            .await
            .map_err(|e| TokenError::Endpoint(e.to_string()))?;
        if status != 200 {
            return Err(TokenError::Endpoint(format!("HTTP {status}")));
        }
        #[derive(Deserialize)]
        struct TokenWire {
            access_token: String,
            #[serde(default)]
            expires_in: Option<u64>,
        }
        let token: TokenWire = serde_json::from_slice(&answer)
            .map_err(|_| TokenError::Endpoint("the answer has no access_token".into()))?;
        let token = Arc::new(Token {
            value: Secret::new(token.access_token),
            expires: started + Duration::from_secs(token.expires_in.unwrap_or(3600)),
        });
        self.current.store(Some(token.clone()));
        Ok(token)
    }

    /// A valid access token.
    pub async fn token(&self, transport: &Transport) -> Result<Secret, TokenError> {
        let now = Instant::now();
        if let Some(t) = self.current.load_full() {
            if t.expires > now + RENEW_BEFORE {
                return Ok(t.value.clone());
            }
            if t.expires > now {
                // Still valid: renew it if nobody else is, else use it as it is.
                return match self.renewing.try_lock() {
                    Ok(_guard) => match self.fetch(transport).await {
                        Ok(fresh) => Ok(fresh.value.clone()),
                        Err(e) => {
                            log::warn!(
                                "renewing a Vertex AI token failed ({e}); the old one is used"
                            );
                            Ok(t.value.clone())
                        }
                    },
                    Err(_) => Ok(t.value.clone()),
                };
            }
        }
        let _guard = self.renewing.lock().await;
        if let Some(t) = self
            .current
            .load_full()
            .filter(|t| t.expires > Instant::now())
        {
            return Ok(t.value.clone());
        }
        Ok(self.fetch(transport).await?.value.clone())
    }
}

#[async_trait::async_trait]
impl super::Renewable for TokenSource {
    async fn renew(&self, transport: &Transport) -> Result<Option<Secret>, String> {
        self.token(transport)
            .await
            .map(Some)
            .map_err(|e| e.to_string())
    }
}
