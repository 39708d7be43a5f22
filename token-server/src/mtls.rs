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
    /// Subject DN in RFC 4514 order and form (escaped), e.g. `CN=app,O=Acme`, for messages.
    pub subject: String,
    /// The subject as compared with a binding's `subjectDN`.
    pub subject_rdns: Rdns,
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

/// A DN as compared: its RDNs in X.509 order, each a sorted list of (attribute type OID,
/// value). Two DNs match when these are equal: a value that contains `,` or `+` stays one value,
/// and a multi-valued RDN stays one RDN (a string comparison confused both).
pub type Rdns = Vec<Vec<(String, String)>>;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn value_text(v: &x509_cert::der::Any) -> String {
    use x509_cert::der::Encode as _;
    use x509_cert::der::asn1::{Ia5StringRef, PrintableStringRef, TeletexStringRef, Utf8StringRef};
    use x509_cert::der::{Tag, Tagged as _};
    let text = match v.tag() {
        Tag::PrintableString => PrintableStringRef::try_from(v)
            .ok()
            .map(|s| s.as_str().to_owned()),
        Tag::Utf8String => Utf8StringRef::try_from(v)
            .ok()
            .map(|s| s.as_str().to_owned()),
        Tag::Ia5String => Ia5StringRef::try_from(v)
            .ok()
            .map(|s| s.as_str().to_owned()),
        Tag::TeletexString => TeletexStringRef::try_from(v)
            .ok()
            .map(|s| s.as_str().to_owned()),
        _ => None,
    };
    // Other string types, and `#hex` values, compare by their DER.
    text.unwrap_or_else(|| {
        let der = v.to_der().unwrap_or_default();
        format!(
            "#{}",
            der.iter().map(|b| format!("{b:02x}")).collect::<String>()
        )
    })
}

fn rdns_of(name: &x509_cert::name::RdnSequence) -> Rdns {
    name.0
        .iter()
        .map(|rdn| {
            let mut atvs: Vec<(String, String)> = rdn
                .0
                .iter()
                // The OID by its encoding: const-oid's Display panics on some OIDs its string
                // parser accepts (found by fuzzing `parse_dn`).
                .map(|atv| (hex(atv.oid.as_bytes()), value_text(&atv.value)))
                .collect();
            atvs.sort();
            atvs
        })
        .collect()
}

/// A dotted OID const-oid can hold (its string parser overflows, or accepts what its Display
/// then panics on, past these bounds: found by fuzzing), or a name.
fn attribute_type_ok(t: &str) -> bool {
    if !t.starts_with(|c: char| c.is_ascii_digit()) {
        return !t.is_empty();
    }
    let arcs: Vec<Option<u32>> = t
        .split('.')
        .map(|a| {
            (!a.is_empty() && a.len() <= 9 && a.bytes().all(|b| b.is_ascii_digit()))
                .then(|| a.parse().ok())
                .flatten()
        })
        .collect();
    arcs.len() >= 2
        && arcs.len() <= 16
        && arcs.iter().all(Option::is_some)
        && arcs[0].is_some_and(|a| a <= 2)
        && arcs[1].is_some_and(|a| a <= 39)
}

/// Parses a DN string of a binding (RFC 4514, with x509-cert's parser). Attribute types are
/// case-insensitive and spaces after a separator are allowed, as people write them
/// (`CN=app, OU=Payments, o=Acme`); escapes are honoured. `None` if it does not parse: such a
/// binding matches no certificate.
pub fn parse_dn(dn: &str) -> Option<Rdns> {
    // Lower-case each attribute type and drop spaces after unescaped `,` and `+`; values are
    // copied byte for byte (escapes included) for the real parser.
    let mut norm = String::with_capacity(dn.len());
    let (mut in_type, mut escaped, mut after_sep) = (true, false, true);
    for c in dn.trim().chars() {
        if escaped {
            escaped = false;
            norm.push(c);
            continue;
        }
        match c {
            '\\' => {
                escaped = true;
                norm.push(c);
            }
            ' ' if after_sep => {}
            ',' | '+' if !in_type => {
                in_type = true;
                after_sep = true;
                // Spaces before a separator belong to no value (RFC 4514 escapes real ones).
                while norm.ends_with(' ') && !norm.ends_with("\\ ") {
                    norm.pop();
                }
                norm.push(c);
            }
            '=' if in_type => {
                in_type = false;
                after_sep = false;
                while norm.ends_with(' ') {
                    norm.pop();
                }
                let start = norm.rfind([',', '+']).map_or(0, |i| i + 1);
                if !attribute_type_ok(&norm[start..]) {
                    return None;
                }
                norm.push(c);
            }
            _ => {
                after_sep = false;
                norm.push(if in_type { c.to_ascii_lowercase() } else { c });
            }
        }
    }
    <x509_cert::name::RdnSequence as std::str::FromStr>::from_str(&norm)
        .ok()
        .map(|n| rdns_of(&n))
}

impl PeerCert {
    /// Parses the leaf of `chain`; `ca_verified` comes from the caller's check against the global CA.
    pub fn parse(chain: &[CertificateDer<'static>], ca_verified: bool) -> Option<PeerCert> {
        let leaf = chain.first()?;
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let (_, cert) = X509Certificate::from_der(leaf.as_ref()).ok()?;
        use x509_cert::der::Decode as _;
        let subject = x509_cert::name::RdnSequence::from_der(cert.subject().as_raw()).ok()?;
        let mut pc = PeerCert {
            thumbprint: URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
                &aws_lc_rs::digest::SHA256,
                leaf.as_ref(),
            )),
            ca_verified,
            // x509-parser's rendering: x509-cert's Display shares const-oid's panic.
            subject: cert.subject().to_string(),
            subject_rdns: rdns_of(&subject),
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
            .is_none_or(|dn| parse_dn(dn).is_some_and(|want| want == self.subject_rdns));
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
            subject_rdns: parse_dn("CN=app,OU=Payments,O=Acme").expect("dn"),
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
    fn a_value_with_separators_or_a_multi_valued_rdn_is_not_another_dn() {
        let want = parse_dn("CN=settlement-bank,O=Example Bank").expect("dn");
        for spoof in [
            // One CN whose value contains `,O=Example Bank` (escaped as RFC 4514 requires).
            "CN=settlement-bank\\,O=Example Bank",
            // One multi-valued RDN with both attributes.
            "CN=settlement-bank+O=Example Bank",
            "O=Example Bank+CN=settlement-bank",
            // Quoted-looking and hex values are values, not structure.
            "CN=\\\"settlement-bank\\,O=Example Bank\\\"",
        ] {
            let got = parse_dn(spoof).expect("parses");
            assert_ne!(got, want, "{spoof}");
        }
        assert_eq!(
            parse_dn("cn=settlement-bank, o=Example Bank").expect("dn"),
            want,
            "type case and spaces after commas are folded"
        );
        assert_eq!(
            parse_dn("O=Example Bank+CN=x").expect("dn"),
            parse_dn("CN=x+O=Example Bank").expect("dn"),
            "the attributes of one RDN are a set"
        );
        assert!(parse_dn("not a dn").is_none());
        // Found by fuzzing: an OID arc too big for const-oid made its Display panic.
        assert!(parse_dn("2.0.455555555555555555555555555555555555555555555.1=\0=").is_none());
        assert_eq!(
            parse_dn("2.5.4.3=app").expect("a dotted OID"),
            parse_dn("CN=app").expect("its name")
        );
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
        assert!(
            !p.matches(&dn("CN=app,OU=Payments,O=Acme,")),
            "does not parse"
        );
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
