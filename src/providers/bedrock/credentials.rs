//! Where Bedrock requests' signing keys come from: static keys (config or `AWS_*`), or the EC2
//! instance profile through IMDSv2 — fetched on first use, renewed five minutes before they
//! expire by the health probes in the background or by the first request that finds them old.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use aws_credential_types::Credentials;
use aws_smithy_runtime_api::client::identity::Identity;
use http::{HeaderName, HeaderValue};
use serde::Deserialize;

use crate::calendar::unix_from_rfc3339;
use crate::config::{Secret, Timeouts};
use crate::providers::{Endpoint, Renewable};
use crate::transport::{Transport, Upstream};

/// The instance metadata service, unless `AWS_EC2_METADATA_SERVICE_ENDPOINT` names another.
const IMDS: &str = "http://169.254.169.254";
const RENEW_BEFORE: Duration = Duration::from_secs(300);
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

struct Current {
    identity: Identity,
    expires: SystemTime,
}

/// Keys of the instance's IAM role.
pub struct InstanceProfile {
    imds: Upstream,
    current: ArcSwapOption<Current>,
    renewing: tokio::sync::Mutex<()>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RoleCredentials {
    access_key_id: String,
    secret_access_key: String,
    #[serde(default)]
    token: Option<String>,
    expiration: String,
}

impl InstanceProfile {
    /// `None` when `AWS_EC2_METADATA_DISABLED` is set or the endpoint is not a URL.
    pub fn from_env() -> Option<InstanceProfile> {
        if std::env::var("AWS_EC2_METADATA_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
        {
            return None;
        }
        let url = std::env::var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| IMDS.to_string());
        let endpoint = url::Url::parse(&url)
            .ok()
            .and_then(|u| Endpoint::from_url(&u))?;
        let timeouts = Timeouts {
            connect: CALL_TIMEOUT,
            first_byte: CALL_TIMEOUT,
            idle: CALL_TIMEOUT,
            total: CALL_TIMEOUT * 2,
        };
        Some(InstanceProfile {
            imds: Upstream::new(endpoint, timeouts),
            current: ArcSwapOption::empty(),
            renewing: tokio::sync::Mutex::new(()),
        })
    }

    /// The role's current keys, if they were fetched and have not expired.
    pub fn identity(&self) -> Option<Identity> {
        self.current
            .load()
            .as_ref()
            .filter(|c| c.expires > SystemTime::now())
            .map(|c| c.identity.clone())
    }

    async fn get(
        &self,
        transport: &Transport,
        method: &str,
        path: &str,
        header: (&'static str, &str),
    ) -> Result<String, String> {
        let value = HeaderValue::try_from(header.1).map_err(|_| "bad IMDS token".to_string())?;
        let headers = [(HeaderName::from_static(header.0), value)];
        let (status, body) = transport
            .call(&self.imds, method, path, &headers, &[], CALL_TIMEOUT)
            .await
            .map_err(|e| format!("instance metadata: {e}"))?;
        if status != 200 {
            return Err(format!("instance metadata {path}: HTTP {status}"));
        }
        String::from_utf8(body.to_vec()).map_err(|_| "instance metadata is not text".into())
    }

    async fn fetch(&self, transport: &Transport) -> Result<(), String> {
        let base = &self.imds.endpoint.base_path;
        let token = self
            .get(
                transport,
                "PUT",
                &format!("{base}/latest/api/token"),
                ("x-aws-ec2-metadata-token-ttl-seconds", "21600"),
            )
            .await?;
        let auth = ("x-aws-ec2-metadata-token", token.trim());
        let roles = format!("{base}/latest/meta-data/iam/security-credentials/");
        let role = self.get(transport, "GET", &roles, auth).await?;
        let role = role
            .lines()
            .next()
            .filter(|r| !r.is_empty())
            .ok_or("the instance has no IAM role")?
            .to_string();
        let text = self
            .get(transport, "GET", &format!("{roles}{role}"), auth)
            .await?;
        let keys: RoleCredentials = serde_json::from_str(&text)
            .map_err(|_| "the instance metadata's credentials are not readable".to_string())?;
        let expires = unix_from_rfc3339(&keys.expiration)
            .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
            .ok_or("the credentials' Expiration is not a date")?;
        let identity = Credentials::new(
            keys.access_key_id,
            keys.secret_access_key,
            keys.token,
            Some(expires),
            "switchyard-instance-profile",
        )
        .into();
        self.current
            .store(Some(Arc::new(Current { identity, expires })));
        Ok(())
    }
}

#[async_trait]
impl Renewable for InstanceProfile {
    async fn renew(&self, transport: &Transport) -> Result<Option<Secret>, String> {
        let fresh = |c: &Current| c.expires > SystemTime::now() + RENEW_BEFORE;
        if self.current.load().as_ref().is_some_and(|c| fresh(c)) {
            return Ok(None);
        }
        if self.identity().is_some() {
            // Still valid: renew unless someone else is, and keep using them if that fails.
            if let Ok(_guard) = self.renewing.try_lock() {
                if let Err(e) = self.fetch(transport).await {
                    log::warn!(
                        "renewing the instance profile's keys failed ({e}); the old ones are used"
                    );
                }
            }
            return Ok(None);
        }
        let _guard = self.renewing.lock().await;
        if self.identity().is_none() {
            self.fetch(transport).await?;
        }
        Ok(None)
    }
}
