//! Certificates for the log's TLS tests: a throwaway CA issuing member
//! certificates with both usages (server and client auth, as a member is both on
//! its links) and IP SANs. The log's own copy, so its tests need nothing of the
//! operator; a failure here is a broken test setup, so it panics.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

use super::TlsFiles;

/// A certificate and its private key, PEM.
pub(super) struct IssuedCert {
    pub(super) cert_pem: String,
    pub(super) key_pem: String,
}

/// An ASN.1 date as rcgen takes it: (year, month, day).
pub(super) type Date = (i32, u8, u8);

/// A self-signed CA.
pub(super) struct CertAuthority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl CertAuthority {
    pub(super) fn generate(common_name: &str) -> CertAuthority {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.distinguished_name = common_name_only(common_name);
        let key = KeyPair::generate().unwrap();
        CertAuthority {
            issuer: CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    /// The CA certificate, PEM.
    pub(super) fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A member certificate for `names`, valid from rcgen's default far past to its
    /// far future.
    pub(super) fn issue(&self, names: &[String]) -> IssuedCert {
        self.issue_between(names, None)
    }

    /// As [`CertAuthority::issue`], valid only from `validity.0` to `validity.1` (a
    /// window in the past makes an expired certificate).
    pub(super) fn issue_between(
        &self,
        names: &[String],
        validity: Option<(Date, Date)>,
    ) -> IssuedCert {
        let mut params = CertificateParams::new(names.to_vec()).unwrap();
        params.distinguished_name = common_name_only(names.first().map_or("", String::as_str));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        if let Some(((y0, m0, d0), (y1, m1, d1))) = validity {
            params.not_before = rcgen::date_time_ymd(y0, m0, d0);
            params.not_after = rcgen::date_time_ymd(y1, m1, d1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

fn common_name_only(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

/// Writes `tls.crt`, `tls.key` and `ca.crt` into `dir` (created if missing), each
/// replaced by a rename: the reload tests rewrite files a loaded `PeerTls` polls,
/// and it must never read half of one.
pub(super) fn write_member_files(dir: &Path, cert: &IssuedCert, ca_bundle_pem: &str) -> TlsFiles {
    fs::create_dir_all(dir).unwrap();
    let write = |name: &str, contents: &str| -> PathBuf {
        let path = dir.join(name);
        let staging = dir.join(format!(".{name}.new"));
        fs::write(&staging, contents).unwrap();
        fs::rename(&staging, &path).unwrap();
        path
    };
    TlsFiles {
        cert: write("tls.crt", &cert.cert_pem),
        key: write("tls.key", &cert.key_pem),
        ca: write("ca.crt", ca_bundle_pem),
    }
}
