//! [`TestPki`]: the demo's throwaway certificate authority ([`fenced_demo::pki::Pki`]), for
//! the tests that serve TLS: a `localhost` server certificate, and client certificates it
//! signs on demand. A failure to make one fails the test.

/// A CA and a server certificate for `localhost` signed by it, as PEM.
pub struct TestPki {
    /// The CA's certificate (what a client trusts).
    pub ca: String,
    /// The server's certificate.
    pub server_cert: String,
    /// The server's private key.
    pub server_key: String,
    /// The CA, to sign client certificates.
    pki: fenced_demo::pki::Pki,
}

impl TestPki {
    /// A fresh CA and server certificate (each call makes unrelated ones).
    pub fn new() -> TestPki {
        let pki = fenced_demo::pki::Pki::new().expect("a throwaway CA");
        TestPki {
            ca: pki.ca.clone(),
            server_cert: pki.server_cert.clone(),
            server_key: pki.server_key.clone(),
            pki,
        }
    }

    /// A client certificate this CA signed, whose only name is the common name `name`, and
    /// its private key, as PEM.
    pub fn client(&self, name: &str) -> (String, String) {
        self.pki.client(name).expect("a client certificate")
    }
}

impl Default for TestPki {
    fn default() -> Self {
        TestPki::new()
    }
}
