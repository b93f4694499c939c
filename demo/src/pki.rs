//! [`Pki`]: a throwaway certificate authority, a `localhost` server certificate it signed,
//! and client certificates it signs on demand, as PEM: what the secured story with client
//! certificates (`--secure certificates`) runs on, and what the tests that serve TLS use.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// A CA and a server certificate for `localhost` signed by it, as PEM.
pub struct Pki {
    /// The CA's certificate (what clients and servers trust).
    pub ca: String,
    /// The server's certificate.
    pub server_cert: String,
    /// The server's private key.
    pub server_key: String,
    /// The CA, to sign client certificates.
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    /// A fresh CA and server certificate (each call makes unrelated ones).
    pub fn new() -> Result<Pki, rcgen::Error> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate()?;
        let server_params = CertificateParams::new(vec!["localhost".to_string()])?;
        let server_cert = server_params.signed_by(&server_key, &issuer)?;
        Ok(Pki {
            ca: ca_cert.pem(),
            server_cert: server_cert.pem(),
            server_key: server_key.serialize_pem(),
            issuer,
        })
    }

    /// A client certificate this CA signed, whose only name is the common name `name`, and
    /// its private key, as PEM.
    pub fn client(&self, name: &str) -> Result<(String, String), rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}
