//! TLS for mock upstreams: a throw-away CA whose file the gateway is told to trust.

use std::path::PathBuf;
use std::sync::Arc;

/// A throw-away certificate authority and a `localhost` certificate it signed.
pub struct TestCa {
    dir: tempfile::TempDir,
    leaf_der: Vec<u8>,
    leaf_key_der: Vec<u8>,
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    pub fn new() -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().expect("generate the test CA key");
        let mut ca_params =
            CertificateParams::new(Vec::<String>::new()).expect("test CA certificate params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Switchyard test CA");
        let ca = ca_params
            .self_signed(&ca_key)
            .expect("self-sign the test CA");
        let leaf_key = KeyPair::generate().expect("generate the localhost key");
        let leaf = CertificateParams::new(vec!["localhost".to_string()])
            .expect("localhost certificate params")
            .signed_by(&leaf_key, &ca, &ca_key)
            .expect("sign the localhost certificate");
        let dir = tempfile::tempdir().expect("temp dir for the test CA");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write ca.pem");
        TestCa {
            dir,
            leaf_der: leaf.der().to_vec(),
            leaf_key_der: leaf_key.serialize_der(),
        }
    }

    /// A PEM bundle holding only this CA: pass it to the gateway as `SSL_CERT_FILE`.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub(super) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS protocol versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(self.leaf_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key_der.clone())),
            )
            .expect("TLS server config for the mock upstream");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}
