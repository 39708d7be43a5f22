//! Client certificates (RFC 8705): what the TLS layer learned about the peer, and whether it
//! matches a Credential's binding.
//!
//! The handshake accepts any client certificate whose handshake signature verifies (self-signed
//! ones included, for `self_signed_tls_client_auth`); whether the chain leads to the configured
//! CA is decided after the handshake and carried here as `ca_verified`, which
//! `tls_client_auth` requires.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls::DigitallySignedStruct;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls_pki_types::{CertificateDer, UnixTime};
use std::sync::Arc;
use tessera_crds::credential::MtlsBinding;

/// The peer's certificate, as far as authentication needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert {
    /// `x5t#S256`: base64url SHA-256 of the DER leaf certificate.
    pub thumbprint: String,
    /// The chain leads to the configured client CA (and was valid when checked).
    pub ca_verified: bool,
    /// Subject DN in RFC 4514 order and form, e.g. `CN=app,O=Acme`.
    pub subject: String,
    /// DNS SANs.
    pub dns: Vec<String>,
    /// URI SANs.
    pub uris: Vec<String>,
    /// e-mail SANs.
    pub emails: Vec<String>,
    /// IP SANs.
    pub ips: Vec<std::net::IpAddr>,
    /// Validity, unix seconds.
    pub not_before: i64,
    /// Validity, unix seconds.
    pub not_after: i64,
    /// The chain as presented, leaf first, for policies with their own CA bundle.
    pub chain: Arc<[CertificateDer<'static>]>,
}

/// Canonical form of a DN for comparison: attributes trimmed, `, ` separators folded, attribute
/// types upper-cased.
fn canonical_dn(dn: &str) -> String {
    dn.split(',')
        .map(|rdn| {
            let rdn = rdn.trim();
            match rdn.split_once('=') {
                Some((t, v)) => format!("{}={}", t.trim().to_ascii_uppercase(), v.trim()),
                None => rdn.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl PeerCert {
    /// Parses the leaf of `chain`; `ca_verified` comes from the caller's check against the global CA.
    pub fn parse(chain: &[CertificateDer<'static>], ca_verified: bool) -> Option<PeerCert> {
        let leaf = chain.first()?;
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let (_, cert) = X509Certificate::from_der(leaf.as_ref()).ok()?;
        // RFC 4514 lists RDNs most specific first; X.509 stores them the other way round.
        let mut rdns: Vec<String> = Vec::new();
        for rdn in cert.subject().iter() {
            for attr in rdn.iter() {
                let name = x509_parser::objects::oid2abbrev(
                    attr.attr_type(),
                    x509_parser::objects::oid_registry(),
                )
                .map(str::to_owned)
                .unwrap_or_else(|_| attr.attr_type().to_id_string());
                let value = attr.as_str().ok()?.to_owned();
                rdns.push(format!("{name}={value}"));
            }
        }
        rdns.reverse();
        let mut pc = PeerCert {
            thumbprint: URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
                &aws_lc_rs::digest::SHA256,
                leaf.as_ref(),
            )),
            ca_verified,
            subject: rdns.join(","),
            dns: Vec::new(),
            uris: Vec::new(),
            emails: Vec::new(),
            ips: Vec::new(),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            chain: chain.to_vec().into(),
        };
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => pc.dns.push(d.to_ascii_lowercase()),
                    GeneralName::URI(u) => pc.uris.push((*u).to_owned()),
                    GeneralName::RFC822Name(e) => pc.emails.push(e.to_ascii_lowercase()),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => pc
                            .ips
                            .push(std::net::IpAddr::from(<[u8; 4]>::try_from(*b).ok()?)),
                        16 => pc
                            .ips
                            .push(std::net::IpAddr::from(<[u8; 16]>::try_from(*b).ok()?)),
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        Some(pc)
    }

    /// The chain leads to the CA of `verifier` (a policy's own bundle).
    pub fn chains_to(&self, verifier: &dyn ClientCertVerifier) -> bool {
        match self.chain.split_first() {
            Some((leaf, rest)) => verifier
                .verify_client_cert(leaf, rest, UnixTime::now())
                .is_ok(),
            None => false,
        }
    }

    /// Within its validity period at `now` (unix seconds).
    pub fn valid_at(&self, now: i64) -> bool {
        self.not_before <= now && now <= self.not_after
    }

    /// Every binding given matches this certificate (RFC 8705 §2.1.2: one of subject DN or a SAN
    /// is configured; a thumbprint may be added).
    pub fn matches(&self, b: &MtlsBinding) -> bool {
        let dn = b
            .subject_dn
            .as_deref()
            .is_none_or(|dn| canonical_dn(dn) == canonical_dn(&self.subject));
        let san = b.san.as_ref().is_none_or(|s| {
            s.dns
                .as_deref()
                .is_none_or(|d| self.dns.iter().any(|x| x.eq_ignore_ascii_case(d)))
                && s.uri
                    .as_deref()
                    .is_none_or(|u| self.uris.iter().any(|x| x == u))
                && s.email
                    .as_deref()
                    .is_none_or(|e| self.emails.iter().any(|x| x.eq_ignore_ascii_case(e)))
                && s.ip.as_deref().is_none_or(|ip| {
                    ip.parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| self.ips.contains(&ip))
                })
        });
        let thumb = b
            .thumbprint_sha256
            .as_deref()
            .is_none_or(|t| t == self.thumbprint);
        dn && san && thumb
    }
}

/// Requests a client certificate but does not require one, and accepts any chain whose handshake
/// signature verifies: trust is decided after the handshake (see the module docs).
#[derive(Debug)]
pub struct OptionalAnyClientCert {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl OptionalAnyClientCert {
    /// With the provider whose signature algorithms check the handshake.
    pub fn new(provider: Arc<rustls::crypto::CryptoProvider>) -> Self {
        Self { provider }
    }
}

impl ClientCertVerifier for OptionalAnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_crds::credential::SanBinding;

    fn peer() -> PeerCert {
        PeerCert {
            thumbprint: "t".repeat(43),
            ca_verified: true,
            subject: "CN=app,OU=Payments,O=Acme".into(),
            dns: vec!["app.acme.example".into()],
            uris: vec!["spiffe://acme/ns/pay/sa/app".into()],
            emails: vec!["ops@acme.example".into()],
            ips: vec![
                "10.1.2.3".parse().expect("ip"),
                "2001:db8::1".parse().expect("ip"),
            ],
            not_before: 100,
            not_after: 200,
            chain: Vec::new().into(),
        }
    }

    fn san(
        dns: Option<&str>,
        uri: Option<&str>,
        email: Option<&str>,
        ip: Option<&str>,
    ) -> MtlsBinding {
        MtlsBinding {
            subject_dn: None,
            san: Some(SanBinding {
                dns: dns.map(Into::into),
                uri: uri.map(Into::into),
                email: email.map(Into::into),
                ip: ip.map(Into::into),
            }),
            thumbprint_sha256: None,
        }
    }

    #[test]
    fn every_san_kind_and_the_dn_match_and_mismatch() {
        let p = peer();
        for (b, want) in [
            (san(Some("APP.acme.example"), None, None, None), true),
            (san(Some("other.example"), None, None, None), false),
            (
                san(None, Some("spiffe://acme/ns/pay/sa/app"), None, None),
                true,
            ),
            (
                san(None, Some("spiffe://acme/ns/pay/sa/other"), None, None),
                false,
            ),
            (san(None, None, Some("OPS@acme.example"), None), true),
            (san(None, None, Some("dev@acme.example"), None), false),
            (san(None, None, None, Some("10.1.2.3")), true),
            (san(None, None, None, Some("2001:db8:0::1")), true),
            (san(None, None, None, Some("10.1.2.4")), false),
        ] {
            assert_eq!(p.matches(&b), want, "{b:?}");
        }
        let dn = |d: &str| MtlsBinding {
            subject_dn: Some(d.into()),
            san: None,
            thumbprint_sha256: None,
        };
        assert!(
            p.matches(&dn("CN=app, OU=Payments, O=Acme")),
            "spaces after commas and case of types are folded"
        );
        assert!(p.matches(&dn("cn=app,ou=Payments,o=Acme")));
        assert!(
            !p.matches(&dn("O=Acme,OU=Payments,CN=app")),
            "RDN order matters (RFC 4514)"
        );
        assert!(!p.matches(&dn("CN=app,O=Acme")));
        let thumb = MtlsBinding {
            subject_dn: Some("CN=app,OU=Payments,O=Acme".into()),
            san: None,
            thumbprint_sha256: Some("x".repeat(43)),
        };
        assert!(
            !p.matches(&thumb),
            "a thumbprint, when given, must match too"
        );
        assert!(p.valid_at(150) && !p.valid_at(99) && !p.valid_at(201));
    }
}
