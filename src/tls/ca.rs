//! The interception CA: generated fresh at every start, its key kept in memory only, its
//! certificate written atomically to `--ca-file-destination` for clients to trust.
//!
//! Issuing leaves with this CA and caching them is [`super::leaf`]'s job, not this file's.

use std::fmt;
use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use rustls_pki_types::CertificateDer;

use super::{fill_random, hex, random_serial, TlsError, BACKDATE};

/// Validity of the CA certificate, counted from its generation: 398 days.
///
/// The CA is regenerated on every start, so it only has to outlive one process. A year and a
/// month covers any realistic uptime, while a copy of the certificate left in some trust store
/// stops being accepted within about a year instead of lingering for decades.
pub const CA_LIFETIME: Duration = Duration::from_secs(398 * 24 * 60 * 60);

/// Organization of every certificate the proxy generates, so they are easy to recognise.
pub(crate) const ORGANIZATION: &str = "kube-audience-proxy";

/// Mode of the written CA certificate: world-readable (it is public), and owner-writable so a
/// restart by the same non-root user can replace it.
const CA_FILE_MODE: u32 = 0o644;

/// The certificate authority that signs interception leaves.
///
/// The private key exists only inside this value: it is never serialised, written or logged,
/// and [`fmt::Debug`] prints the subject and expiry only.
///
/// Limitation: a process that runs longer than [`CA_LIFETIME`] presents leaves that clients
/// reject, because no leaf outlives its CA; restarting the proxy makes a new CA.
pub struct CertAuthority {
    common_name: String,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    not_after: SystemTime,
    issuer: Issuer<'static, KeyPair>,
}

impl CertAuthority {
    /// Generates a new CA valid from `now` minus [`BACKDATE`] to `now` plus [`CA_LIFETIME`].
    ///
    /// The CA has an ECDSA P-256 key, a random serial, the subject
    /// `CN=kube-audience-proxy CA <random hex>, O=kube-audience-proxy` (unique per start, so a
    /// client holding an old CA sees a different issuer rather than a bad signature), basic
    /// constraints `CA:TRUE, pathlen:0` and key usage `keyCertSign, cRLSign` only.
    ///
    /// Fails if the system random source or key generation fails.
    pub fn generate(now: SystemTime) -> Result<CertAuthority, TlsError> {
        let key =
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(TlsError::GenerateCa)?;

        let mut id = [0u8; 8];
        fill_random(&mut id)?;
        let common_name = format!("{ORGANIZATION} CA {}", hex(&id));

        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name.as_str());
        params
            .distinguished_name
            .push(DnType::OrganizationName, ORGANIZATION);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(random_serial()?);
        let not_before = now.checked_sub(BACKDATE).unwrap_or(now);
        let not_after = now + CA_LIFETIME;
        params.not_before = not_before.into();
        params.not_after = not_after.into();

        let cert = params.self_signed(&key).map_err(TlsError::GenerateCa)?;
        Ok(CertAuthority {
            common_name,
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            not_after,
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate as one PEM block, as written by [`CertAuthority::write_cert_file`].
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate in DER, for building chains and trust stores.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA's common name, which differs on every start; safe to log.
    pub fn common_name(&self) -> &str {
        &self.common_name
    }

    /// The end of the CA's validity; leaves are never issued past it.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Writes the CA certificate (never the key) to `path`, replacing any existing file.
    ///
    /// The PEM goes to a temporary file in the same directory, which gets mode 0644 (set
    /// explicitly, whatever the umask), and is then renamed over `path`. A
    /// reader therefore sees the old file or the new one, never half of one, and a later start
    /// by the same non-root user can replace it.
    ///
    /// Fails with [`TlsError::WriteCaFile`] naming `path` if the directory is missing or not
    /// writable, or `path` names a directory.
    pub fn write_cert_file(&self, path: &Path) -> Result<(), TlsError> {
        write_atomically(path, self.cert_pem.as_bytes(), CA_FILE_MODE).map_err(|source| {
            TlsError::WriteCaFile {
                path: path.to_owned(),
                source,
            }
        })
    }

    /// Signs a leaf described by `params` for `public_key`.
    pub(super) fn sign(
        &self,
        params: &CertificateParams,
        public_key: &impl PublicKeyData,
    ) -> Result<rcgen::Certificate, rcgen::Error> {
        params.signed_by(public_key, &self.issuer)
    }
}

impl fmt::Debug for CertAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertAuthority")
            .field("common_name", &self.common_name)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Replaces `path` with `contents` through a temporary sibling and a rename.
fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let Some(file_name) = path.file_name() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "destination has no file name",
        ));
    };
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };

    let mut suffix = [0u8; 6];
    fill_random(&mut suffix).map_err(|_| io::Error::other("no random bytes for a file name"))?;
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id(),
        hex(&suffix)
    ));

    let written = write_new_file(&tmp, contents, mode).and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        // The temporary file may or may not exist at this point; either way it must not stay.
        let _ = fs::remove_file(&tmp);
        return written;
    }
    Ok(())
}

/// Creates `path` (which must not exist) and writes `contents` with `mode`.
///
/// Not synced to disk: readers need the rename to be atomic, which it is without a sync, and
/// the file only has to outlive this process, which regenerates it at every start anyway.
/// Two syncs cost about a millisecond of start-up on a virtual disk.
fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    // The mode given at creation is filtered by the umask; fchmod is not.
    file.set_permissions(Permissions::from_mode(mode))?;
    file.write_all(contents)
}

#[cfg(test)]
mod tests {
    use rustls_pki_types::pem::PemObject;

    use super::*;

    #[test]
    fn ca_pem_is_one_certificate_and_no_key() {
        let ca = CertAuthority::generate(SystemTime::now()).unwrap();
        let pem = ca.cert_pem();
        assert_eq!(pem.matches("-----BEGIN CERTIFICATE-----").count(), 1);
        assert_eq!(pem.matches("-----END CERTIFICATE-----").count(), 1);
        assert!(!pem.contains("PRIVATE KEY"));
        let parsed: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(parsed, vec![ca.cert_der().clone()]);
    }

    #[test]
    fn ca_names_differ_per_start() {
        let now = SystemTime::now();
        let a = CertAuthority::generate(now).unwrap();
        let b = CertAuthority::generate(now).unwrap();
        assert_ne!(a.common_name(), b.common_name());
        assert!(a.common_name().starts_with("kube-audience-proxy CA "));
        assert_ne!(a.cert_der(), b.cert_der());
    }

    #[test]
    fn ca_lifetime_is_bounded() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
        let ca = CertAuthority::generate(now).unwrap();
        assert_eq!(ca.not_after(), now + CA_LIFETIME);
    }

    #[test]
    fn debug_hides_the_key() {
        let ca = CertAuthority::generate(SystemTime::now()).unwrap();
        let debug = format!("{ca:?}");
        assert!(debug.contains(ca.common_name()), "{debug}");
        let key_der = ca.issuer.key().serialize_der();
        let key_hex = hex(&key_der);
        assert!(!debug.contains(&key_hex));
        assert!(!debug.to_ascii_lowercase().contains("key"), "{debug}");
    }

    #[test]
    fn write_refuses_a_missing_directory() {
        let ca = CertAuthority::generate(SystemTime::now()).unwrap();
        let path = Path::new("/nonexistent-kube-audience-proxy-dir/ca.crt");
        let err = ca.write_cert_file(path).unwrap_err();
        assert_eq!(
            err.to_string(),
            "write ca certificate to /nonexistent-kube-audience-proxy-dir/ca.crt"
        );
        assert!(std::error::Error::source(&err).is_some());
    }
}
