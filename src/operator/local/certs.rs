//! A small certificate authority for TLS between members where no cert-manager
//! runs: `mesos-operator local --tls` and the TLS tests. Files are written as
//! cert-manager writes a Secret (`tls.crt`, `tls.key`, `ca.crt`), so the masters'
//! flags are the same everywhere.
//!
//! Member certificates carry both usages (server and client auth: a member is
//! both on its links) and the names given, IP addresses as IP SANs.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

use crate::log::tls::TlsFiles;

/// cert-manager's file names in a TLS Secret.
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";
pub const CA_FILE: &str = "ca.crt";

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("generating a certificate for {subject}: {source}")]
    Generate {
        subject: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A self-signed CA that issues member certificates.
pub struct CertAuthority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertAuthority").finish_non_exhaustive()
    }
}

/// An ASN.1 date as rcgen takes it: (year, month, day).
pub type Date = (i32, u8, u8);

impl CertAuthority {
    pub fn generate(common_name: &str) -> Result<CertAuthority, CertError> {
        let failed = |source| CertError::Generate {
            subject: common_name.to_owned(),
            source,
        };
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, common_name);
        params.distinguished_name = name;
        let key = KeyPair::generate().map_err(failed)?;
        let issuer = CertifiedIssuer::self_signed(params, key).map_err(failed)?;
        Ok(CertAuthority { issuer })
    }

    /// The CA certificate, PEM (what goes into `ca.crt`).
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A member certificate for `names` (DNS names or IP addresses), valid from
    /// rcgen's default far past to its far future.
    pub fn issue(&self, names: &[String]) -> Result<IssuedCert, CertError> {
        self.issue_between(names, None)
    }

    /// As [`CertAuthority::issue`], valid only from `validity.0` to `validity.1`
    /// (tests use a window in the past for an expired certificate).
    pub fn issue_between(
        &self,
        names: &[String],
        validity: Option<(Date, Date)>,
    ) -> Result<IssuedCert, CertError> {
        let subject = names.first().cloned().unwrap_or_default();
        let failed = |source| CertError::Generate {
            subject: subject.clone(),
            source,
        };
        let mut params = CertificateParams::new(names.to_vec()).map_err(failed)?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, subject.as_str());
        params.distinguished_name = name;
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
        let key = KeyPair::generate().map_err(failed)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(failed)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Writes `tls.crt`, `tls.key` and `ca.crt` into `dir` (created if missing), each
/// replaced atomically (written beside, then renamed) so a master polling them
/// never reads half a file. The key is private to the owner.
pub fn write_member_files(
    dir: &Path,
    cert: &IssuedCert,
    ca_bundle_pem: &str,
) -> Result<TlsFiles, CertError> {
    let write = |name: &str, contents: &str, private: bool| -> Result<PathBuf, CertError> {
        let path = dir.join(name);
        let failed = |source| CertError::Write {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(dir).map_err(failed)?;
        let staging = dir.join(format!(".{name}.new"));
        fs::write(&staging, contents).map_err(failed)?;
        #[cfg(unix)]
        if private {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&staging, fs::Permissions::from_mode(0o600)).map_err(failed)?;
        }
        #[cfg(not(unix))]
        let _ = private;
        fs::rename(&staging, &path).map_err(failed)?;
        Ok(path)
    };
    Ok(TlsFiles {
        cert: write(CERT_FILE, &cert.cert_pem, false)?,
        key: write(KEY_FILE, &cert.key_pem, true)?,
        ca: write(CA_FILE, ca_bundle_pem, false)?,
    })
}

/// Where `mesos-operator local --tls` keeps the members' files.
pub fn local_tls_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("tls")
}

/// `mesos-operator local --tls`: a CA and one member certificate for every
/// address a local member can have (127.0.0.1 to 127.0.0.9, as IP SANs), made
/// once into `<state_dir>/tls/` and kept across runs (replace the files there to
/// rotate: the masters reload them). Returns the `mesos-master` flags that use
/// them. The CA's key is not kept: without the files, everything is made anew.
pub fn local_tls_flags(state_dir: &Path) -> Result<Vec<String>, CertError> {
    let dir = local_tls_dir(state_dir);
    let files = TlsFiles {
        cert: dir.join(CERT_FILE),
        key: dir.join(KEY_FILE),
        ca: dir.join(CA_FILE),
    };
    if !(files.cert.exists() && files.key.exists() && files.ca.exists()) {
        let ca = CertAuthority::generate("mesos-operator local members CA")?;
        let names: Vec<String> = (0..crate::operator::api::MAX_REPLICAS as u32)
            .map(|ordinal| super::members::member_address(0, ordinal).ip().to_string())
            .collect();
        write_member_files(&dir, &ca.issue(&names)?, &ca.cert_pem())?;
    }
    Ok(vec![
        "--peer_tls=required".to_string(),
        format!("--peer_tls_cert_file={}", files.cert.display()),
        format!("--peer_tls_key_file={}", files.key.display()),
        format!("--peer_tls_ca_file={}", files.ca.display()),
    ])
}
