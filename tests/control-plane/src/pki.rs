//! The control plane's certificates: one CA for serving and client certificates, the API
//! server's serving certificate for loopback, a client certificate per identity, and the
//! ServiceAccount token signing key.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, SanType,
};

/// A certificate (or a public key) and its private key, PEM.
pub struct Pem {
    /// The certificate, or the public key.
    pub cert: String,
    /// Its PKCS#8 private key.
    pub key: String,
}

/// The cluster CA: signs the API server's certificate and every client certificate.
pub struct Ca {
    /// The CA certificate, PEM.
    pub cert: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// A fresh CA.
    pub fn generate() -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "tessera-test-control-plane-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("CA cert").pem();
        Ca {
            cert,
            issuer: Issuer::new(params, key),
        }
    }

    /// The API server's serving certificate: 127.0.0.1, ::1 and localhost.
    pub fn server(&self) -> Pem {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer).expect("server cert");
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A client certificate: the API server reads the user from the CN and the groups from O.
    pub fn client(&self, user: &str, groups: &[&str]) -> Pem {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, user);
        for g in groups {
            params.distinguished_name.push(DnType::OrganizationName, *g);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).expect("client cert");
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// The ServiceAccount token signing key (ES256): the private key (PKCS#8) and the public key,
/// PEM.
pub fn service_account_key() -> Pem {
    let key = KeyPair::generate().expect("key");
    Pem {
        cert: key.public_key_pem(),
        key: key.serialize_pem(),
    }
}
