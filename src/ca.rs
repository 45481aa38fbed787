//! The local root CA, and the leaf certificates it signs for banned hosts.
//!
//! Why this exists: nearly every visit is HTTPS, and a blocked HTTPS attempt
//! that ends in a browser error tells the person nothing. Municipal laptops
//! trust this CA (distributed by Intune or group policy), so the proxy can
//! terminate TLS for a **banned** host, and only for a banned host, and show
//! the block page. Nothing else is ever intercepted.
//!
//! With `ca.name_constraints = true` the CA carries X.509 name constraints
//! permitting only the banned and protected domains (and no IP address), so
//! a stolen `ca.key` cannot impersonate the municipality's bank: browsers
//! and rustls refuse any other leaf it signs. Protected hosts are among
//! them because flagged subjects are intercepted there for the remediation
//! page.
//!
//! The CA lives in a directory (`certs/` by default) as `ca.pem` (public,
//! distributed to laptops) and `ca.key` (private, mode 0600, never leaves the
//! server). Leaves are minted on demand by [`LeafCache`].

mod leaf;
#[cfg(test)]
mod tests;

pub use leaf::{LeafCache, DEFAULT_MAX_HOSTS};

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DistinguishedName, DnType, DnValue, GeneralSubtree, IsCa, Issuer,
    KeyIdMethod, KeyPair, KeyUsagePurpose, NameConstraints, SerialNumber,
};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::extensions::ParsedExtension;
use x509_parser::oid_registry::OID_X509_EXT_SUBJECT_KEY_IDENTIFIER;
use x509_parser::prelude::FromDer;
use x509_parser::time::ASN1Time;
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

/// File name of the CA certificate inside the CA directory.
pub const CERT_FILE: &str = "ca.pem";
/// File name of the CA private key inside the CA directory.
pub const KEY_FILE: &str = "ca.key";

/// Ten years: the CA is distributed to laptops by hand or by policy, so it
/// should outlive the hardware it is installed on. Two leap days included.
const CA_VALIDITY: Duration = Duration::from_secs((10 * 365 + 2) * 86_400);
/// Laptop clocks drift; a certificate that starts "now" on the server is not
/// yet valid on a laptop running a few minutes behind.
const BACKDATE: Duration = Duration::from_secs(3_600);
/// X.509 upper bound for a common name or organisation (RFC 5280 appendix A,
/// `ub-common-name` and `ub-organization-name`).
const MAX_NAME_CHARS: usize = 64;
/// `weerwal ca show` and `serve` warn when the CA expires within this time.
const EXPIRY_WARNING: Duration = Duration::from_secs(90 * 86_400);

/// What went wrong with the CA; every variant names the file or directory at
/// fault and, where there is one, what the administrator should do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// Reading or writing a CA file failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file or directory that could not be read or written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// `load` found no CA file.
    #[error("{} not found; create a CA with `weerwal ca init`", .path.display())]
    Missing {
        /// The missing file.
        path: PathBuf,
    },
    /// `init` without `force` found an existing CA file.
    #[error(
        "{} already exists; refusing to replace the CA without --force \
         (laptops that trust the current ca.pem will not trust a new one)",
        .path.display()
    )]
    Exists {
        /// The file that would have been overwritten.
        path: PathBuf,
    },
    /// Only one of `ca.pem` and `ca.key` exists: half a CA is not created over.
    #[error(
        "{} exists but {} does not; restore {}, or make a new CA with \
         `weerwal ca init --force` (and distribute the new ca.pem to every laptop)",
        .present.display(), .missing.display(), .missing.display()
    )]
    Incomplete {
        /// The file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },
    /// `ca.key` is readable by group or others.
    #[error(
        "{} is readable by group or others (mode {:03o}); the CA key must be \
         private to weerwal. Fix it with: chmod 600 {}",
        .path.display(), .mode & 0o777, shell_quote(.path)
    )]
    KeyPermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// `ca.pem` is not a certificate weerwal can sign with.
    #[error("{}: not a usable CA certificate: {reason}", .path.display())]
    BadCert {
        /// The certificate file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// `ca.key` is not a private key weerwal can use.
    #[error("{}: not a usable private key: {reason}", .path.display())]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// `ca.key` is the key of some other certificate.
    #[error(
        "{} does not belong to {}; restore the matching pair, or make a new CA \
         with `weerwal ca init --force`",
        .key.display(), .cert.display()
    )]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// Generating a new CA failed before anything was written.
    #[error("cannot create a CA in {}: {reason}", .dir.display())]
    Create {
        /// The CA directory.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
    /// Minting a leaf certificate for a banned host failed.
    #[error("cannot mint a certificate for {host:?} with the CA {}: {reason}", .ca.display())]
    Leaf {
        /// The host the leaf was for.
        host: String,
        /// The CA certificate file.
        ca: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The local root CA: its certificate, and the key that signs leaves.
///
/// Exists so that `serve` can intercept TLS for banned hosts with a
/// certificate the laptops trust, and so that `weerwal ca init | show |
/// export` can manage it. Cheap to share behind an `Arc`.
pub struct CertificateAuthority {
    cert_path: PathBuf,
    key_path: PathBuf,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    /// Subject, key identifier and signing key, as rcgen needs them to sign.
    issuer: Issuer<'static, KeyPair>,
    subject: String,
    not_before: SystemTime,
    not_after: SystemTime,
    fingerprint: String,
    /// The DNS names its name constraints permit (`None`: unconstrained).
    permitted: Option<Vec<String>>,
}

impl fmt::Debug for CertificateAuthority {
    // Written by hand so the signing key can never end up in a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("cert_path", &self.cert_path)
            .field("subject", &self.subject)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Creates a new CA in `dir` (created when missing). Used by `weerwal ca
    /// init`: refuses to overwrite an existing `ca.pem` or `ca.key` unless
    /// `force`, because every laptop that trusts the old CA would have to be
    /// given the new one.
    ///
    /// The key is created with mode 0600 (never written first and chmodded
    /// after), and both files are written atomically through a temporary file
    /// in `dir`.
    pub fn init(dir: &Path, organisation: &str, force: bool) -> Result<Self, CaError> {
        Self::init_constrained(dir, organisation, force, None)
    }

    /// [`Self::init`], with name constraints permitting only `permitted`
    /// (DNS names, each with its subdomains; see [`constraint_names`]) when
    /// given: `ca.name_constraints = true`.
    pub fn init_constrained(
        dir: &Path,
        organisation: &str,
        force: bool,
        permitted: Option<&[String]>,
    ) -> Result<Self, CaError> {
        let (cert_path, key_path) = paths(dir);
        if !force {
            for path in [&cert_path, &key_path] {
                if exists(path)? {
                    return Err(CaError::Exists { path: path.clone() });
                }
            }
        }
        let create = |reason: String| CaError::Create { dir: dir.to_path_buf(), reason };
        let (cert_pem, key_pem) = generate_ca(organisation, permitted).map_err(create)?;
        fs::create_dir_all(dir).map_err(|source| CaError::Io { path: dir.to_path_buf(), source })?;
        // Key first: a crash in between leaves a key without a certificate,
        // which `load` reports, rather than a certificate nobody can sign for.
        write_atomically(&key_path, key_pem.as_bytes(), 0o600)?;
        write_atomically(&cert_path, cert_pem.as_bytes(), 0o644)?;
        tracing::info!(path = %cert_path.display(), "created a new local CA");
        Self::from_pem(cert_path, key_path, cert_pem, &key_pem)
    }

    /// Loads the CA from `dir`. Used by `weerwal ca show | export` and by
    /// `serve`. Refuses a `ca.key` that group or others can read, and a key
    /// that does not belong to `ca.pem`.
    pub fn load(dir: &Path) -> Result<Self, CaError> {
        let (cert_path, key_path) = paths(dir);
        let meta = match fs::metadata(&key_path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(CaError::Missing { path: key_path }),
            Err(source) => return Err(CaError::Io { path: key_path, source }),
        };
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(CaError::KeyPermissions { path: key_path, mode });
        }
        let key_pem = read_to_string(&key_path)?;
        let cert_pem = read_to_string(&cert_path)?;
        let ca = Self::from_pem(cert_path, key_path, cert_pem, &key_pem)?;
        if let Ok(left) = ca.not_after.duration_since(SystemTime::now()) {
            if left < EXPIRY_WARNING {
                tracing::warn!(
                    path = %ca.cert_path.display(),
                    expires = %humantime::format_rfc3339_seconds(ca.not_after),
                    "the local CA expires soon; make a new one with `weerwal ca init --force` \
                     and distribute it"
                );
            }
        } else {
            tracing::warn!(
                path = %ca.cert_path.display(),
                "the local CA has expired; browsers will not accept the block page over HTTPS"
            );
        }
        Ok(ca)
    }

    /// Loads the CA from `dir`, or creates it when neither file exists; the
    /// `bool` is `true` when it was created. Used by `serve`, which creates
    /// the CA on first start. Half a CA (one file without the other) is an
    /// error, never silently replaced.
    pub fn load_or_create(dir: &Path, organisation: &str) -> Result<(Self, bool), CaError> {
        Self::load_or_create_constrained(dir, organisation, None)
    }

    /// [`Self::load_or_create`]; a CA created here carries name constraints
    /// permitting only `permitted` when given.
    pub fn load_or_create_constrained(
        dir: &Path,
        organisation: &str,
        permitted: Option<&[String]>,
    ) -> Result<(Self, bool), CaError> {
        let (cert_path, key_path) = paths(dir);
        match (exists(&cert_path)?, exists(&key_path)?) {
            (true, true) => Ok((Self::load(dir)?, false)),
            (false, false) => Ok((Self::init_constrained(dir, organisation, false, permitted)?, true)),
            (true, false) => Err(CaError::Incomplete { present: cert_path, missing: key_path }),
            (false, true) => Err(CaError::Incomplete { present: key_path, missing: cert_path }),
        }
    }

    /// The CA certificate as PEM, for `weerwal ca export` and distribution.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate as DER, for `weerwal ca export --der` (Windows and
    /// Intune prefer `.cer` files) and for the chain sent with every leaf.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// SHA-256 fingerprint of the certificate, `AB:CD:...` like `openssl x509
    /// -fingerprint -sha256`, so an administrator can compare what a laptop
    /// trusts with what the server uses.
    pub fn fingerprint_sha256(&self) -> String {
        self.fingerprint.clone()
    }

    /// Subject, validity and fingerprint; its `Display` is the text of
    /// `weerwal ca show`.
    pub fn summary(&self) -> CaSummary {
        CaSummary {
            cert_path: self.cert_path.clone(),
            subject: self.subject.clone(),
            not_before: self.not_before,
            not_after: self.not_after,
            fingerprint_sha256: self.fingerprint.clone(),
            permitted: self.permitted.clone(),
        }
    }

    /// The DNS names the CA's name constraints permit (each with its
    /// subdomains); `None` when it may sign any name.
    pub fn permitted_names(&self) -> Option<&[String]> {
        self.permitted.as_deref()
    }

    /// Whether a leaf this CA signs for `host` is valid: always for an
    /// unconstrained CA, else only when a permitted name covers the host.
    pub fn may_sign(&self, host: &str) -> bool {
        match &self.permitted {
            None => true,
            Some(names) => {
                let host = host.trim_end_matches('.').to_ascii_lowercase();
                host.parse::<std::net::IpAddr>().is_err() && names.iter().any(|n| covers(n, &host))
            }
        }
    }

    /// Of `domains`, the ones this CA may not sign (for `serve`'s warning).
    pub fn unsignable<'a>(&self, domains: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        domains.into_iter().filter(|d| !self.may_sign(d)).map(str::to_string).collect()
    }

    /// Where `ca.pem` is, for messages and `weerwal ca show`.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// Where `ca.key` is, for messages.
    pub fn key_path(&self) -> &Path {
        &self.key_path
    }

    /// The certificate chain element leaves are sent with.
    pub(crate) fn cert_der_owned(&self) -> CertificateDer<'static> {
        self.cert_der.clone()
    }

    /// What rcgen signs leaves with.
    pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    /// Builds the CA from the two PEM texts, checking that they belong
    /// together and that leaves signed with them will chain to `ca.pem`.
    fn from_pem(cert_path: PathBuf, key_path: PathBuf, cert_pem: String, key_pem: &str) -> Result<Self, CaError> {
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| {
            let reason = match e {
                pem::Error::NoItemsFound => "no CERTIFICATE block".into(),
                e => format!("unreadable PEM: {e}"),
            };
            CaError::BadCert { path: cert_path.clone(), reason }
        })?;
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| CaError::BadKey { path: key_path.clone(), reason: e.to_string() })?;
        Self::from_der(cert_path, key_path, cert_pem, cert_der, key)
    }

    /// The checks of [`Self::from_pem`] on the decoded certificate and key;
    /// separate so tests can feed it corrupted DER directly.
    fn from_der(
        cert_path: PathBuf,
        key_path: PathBuf,
        cert_pem: String,
        cert_der: CertificateDer<'static>,
        key: KeyPair,
    ) -> Result<Self, CaError> {
        let bad_cert = |reason: String| CaError::BadCert { path: cert_path.clone(), reason };
        let cert = parse_certificate(&cert_der).map_err(bad_cert)?;
        let is_ca = cert.basic_constraints().map_err(|e| bad_cert(format!("unreadable basicConstraints: {e}")))?;
        if !is_ca.is_some_and(|constraints| constraints.value.ca) {
            return Err(bad_cert("basicConstraints does not mark it as a CA".into()));
        }
        if rcgen::PublicKeyData::subject_public_key_info(&key) != cert.public_key().raw {
            return Err(CaError::KeyMismatch { cert: cert_path, key: key_path });
        }

        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen_name(cert.subject()).map_err(bad_cert)?;
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        // Leaves carry the CA's own subject key identifier as their authority
        // key identifier; Windows and OpenSSL use it to find the issuer.
        if let Some(id) = subject_key_id(&cert).map_err(bad_cert)? {
            params.key_identifier_method = KeyIdMethod::PreSpecified(id.to_vec());
        }
        let issuer = Issuer::new(params, key);

        // Clients find the issuer of a leaf by comparing the leaf's issuer
        // name with the CA's subject byte for byte. Sign one probe and check
        // that rcgen reproduces the subject exactly (it would not for, say,
        // two attributes of the same type, which rcgen's name keeps only once).
        let probe = CertificateParams::default()
            .signed_by(issuer.key(), &issuer)
            .map_err(|e| bad_cert(format!("cannot sign with it: {e}")))?;
        let probe = parse_certificate(probe.der()).map_err(|e| bad_cert(format!("cannot sign with it: {e}")))?;
        if probe.issuer().as_raw() != cert.subject().as_raw() {
            return Err(bad_cert(
                "its subject is encoded in a way weerwal cannot reproduce; \
                 make a new CA with `weerwal ca init --force`"
                    .into(),
            ));
        }

        let permitted = match cert.name_constraints() {
            Ok(Some(nc)) => nc.value.permitted_subtrees.as_ref().map(|subtrees| {
                subtrees
                    .iter()
                    .filter_map(|t| match t.base {
                        x509_parser::extensions::GeneralName::DNSName(n) => Some(n.to_ascii_lowercase()),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
            }),
            Ok(None) => None,
            Err(e) => return Err(bad_cert(format!("unreadable nameConstraints: {e}"))),
        };
        let subject = display_name(cert.subject());
        let not_before = system_time(&cert.validity().not_before);
        let not_after = system_time(&cert.validity().not_after);
        Ok(CertificateAuthority {
            subject,
            not_before,
            not_after,
            fingerprint: fingerprint(&cert_der),
            cert_path,
            key_path,
            cert_pem,
            cert_der,
            issuer,
            permitted,
        })
    }
}

/// Whether the name constraint `name` (RFC 5280: the name and every name
/// with labels added on the left) covers `host`.
fn covers(name: &str, host: &str) -> bool {
    let name = name.trim_start_matches('.');
    host == name || host.strip_suffix(name).is_some_and(|rest| rest.ends_with('.'))
}

/// The DNS names a constrained CA permits, from the policy's banned
/// domains and the protected hosts: lower-cased, without a leading `*.` or
/// `.`, IP addresses left out, and a name dropped when a shorter one already
/// covers it (`tiktok.com` covers `www.tiktok.com`). Sorted.
pub fn constraint_names<I, S>(domains: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut names: Vec<String> = domains
        .into_iter()
        .map(|d| {
            d.as_ref()
                .trim()
                .trim_end_matches('.')
                .trim_start_matches("*.")
                .trim_start_matches('.')
                .to_ascii_lowercase()
        })
        .filter(|d| !d.is_empty() && d.parse::<std::net::IpAddr>().is_err() && !d.contains(['*', ' ', '/', ':']))
        .collect();
    // Shorter names first, so a parent is kept before its subdomains.
    names.sort_by(|a, b| a.split('.').count().cmp(&b.split('.').count()).then_with(|| a.cmp(b)));
    names.dedup();
    let mut kept: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut out = Vec::new();
    for n in names {
        let labels: Vec<&str> = n.split('.').collect();
        let covered = (1..labels.len()).any(|i| kept.contains(&labels[i..].join(".")));
        if !covered {
            kept.insert(n.clone());
            out.push(n);
        }
    }
    out.sort();
    out
}

/// What `weerwal ca show` prints, and what `serve` logs on start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaSummary {
    /// Where `ca.pem` is.
    pub cert_path: PathBuf,
    /// The subject, e.g. `CN=weerwal lokale CA — Gemeente Voorbeeld, O=Gemeente Voorbeeld`.
    pub subject: String,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// SHA-256 fingerprint, `AB:CD:...`.
    pub fingerprint_sha256: String,
    /// The names its name constraints permit; `None`: any name.
    pub permitted: Option<Vec<String>>,
}

impl fmt::Display for CaSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "certificate: {}", self.cert_path.display())?;
        writeln!(f, "subject:     {}", self.subject)?;
        writeln!(f, "valid from:  {}", humantime::format_rfc3339_seconds(self.not_before))?;
        write!(f, "valid until: {}", humantime::format_rfc3339_seconds(self.not_after))?;
        if self.not_after <= SystemTime::now() {
            write!(f, " (EXPIRED)")?;
        }
        write!(f, "\nSHA-256:     {}", self.fingerprint_sha256)?;
        match &self.permitted {
            None => write!(f, "\nmay sign:    any name (no name constraints)"),
            Some(names) if names.len() > 20 => write!(
                f,
                "\nmay sign:    only {} names (name constraints, with subdomains): {}, …",
                names.len(),
                names[..20].join(", ")
            ),
            Some(names) => write!(f, "\nmay sign:    only {} (name constraints, with subdomains)", names.join(", ")),
        }
    }
}

fn paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join(CERT_FILE), dir.join(KEY_FILE))
}

/// Whether `path` exists; a dangling symlink counts, so it is never written through.
fn exists(path: &Path) -> Result<bool, CaError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(CaError::Io { path: path.to_path_buf(), source }),
    }
}

fn read_to_string(path: &Path) -> Result<String, CaError> {
    fs::read_to_string(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => CaError::Missing { path: path.to_path_buf() },
        _ => CaError::Io { path: path.to_path_buf(), source },
    })
}

/// Writes `contents` to a new temporary file beside `path`, created with
/// `mode` (so a key is never readable by others, not even for a moment), and
/// renames it over `path`: readers see the old file or the new one, never half.
fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    crate::atomic_file::write(path, contents, mode).map_err(|source| CaError::Io { path: path.to_path_buf(), source })
}

fn random_bytes<const N: usize>() -> Result<[u8; N], getrandom::Error> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)?;
    Ok(bytes)
}

/// A random, positive 128-bit serial. Derived serials repeat when the key is
/// shared, and Firefox then refuses the certificate with
/// SEC_ERROR_REUSED_ISSUER_AND_SERIAL.
pub(crate) fn random_serial() -> Result<SerialNumber, getrandom::Error> {
    let mut bytes = random_bytes::<16>()?;
    bytes[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&bytes))
}

pub(crate) fn since_epoch(t: SystemTime) -> Duration {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default()
}

/// Returns the PEM of a new CA certificate and of its PKCS#8 key.
fn generate_ca(organisation: &str, permitted: Option<&[String]>) -> Result<(String, String), String> {
    let organisation = organisation.trim();
    if organisation.is_empty() {
        return Err("the organisation name is empty (set [ca] organisation)".into());
    }
    if organisation.chars().any(char::is_control) {
        return Err("the organisation name contains control characters".into());
    }
    if organisation.chars().count() > MAX_NAME_CHARS {
        return Err(format!("the organisation name is longer than the {MAX_NAME_CHARS} characters X.509 allows"));
    }
    let mut common_name = format!("weerwal lokale CA — {organisation}");
    if common_name.chars().count() > MAX_NAME_CHARS {
        common_name = "weerwal lokale CA".into();
    }
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name.push(DnType::OrganizationName, organisation);

    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let now = rcgen::date_time_ymd(1970, 1, 1) + since_epoch(SystemTime::now());
    let mut params = CertificateParams::default();
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.serial_number = Some(random_serial().map_err(|e| e.to_string())?);
    params.not_before = now - BACKDATE;
    params.not_after = now + CA_VALIDITY;
    if let Some(names) = permitted {
        if names.is_empty() {
            return Err("ca.name_constraints = true but the policy names no domain to permit".into());
        }
        params.name_constraints = Some(NameConstraints {
            permitted_subtrees: names.iter().map(|n| GeneralSubtree::DnsName(n.clone())).collect(),
            // No IP address at all: banned and protected hosts are names.
            excluded_subtrees: vec![
                GeneralSubtree::IpAddress(CidrSubnet::V4([0; 4], [0; 4])),
                GeneralSubtree::IpAddress(CidrSubnet::V6([0; 16], [0; 16])),
            ],
        });
    }
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let hex = hex::encode_upper(digest);
    let pairs: Vec<&str> = (0..hex.len()).step_by(2).map(|i| &hex[i..i + 2]).collect();
    pairs.join(":")
}

/// Parses one DER certificate with x509-parser. `ca.pem` is a file an
/// administrator can edit, so anything after the certificate is refused
/// rather than ignored.
fn parse_certificate(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| format!("unreadable certificate: {e}"))?;
    if !rest.is_empty() {
        return Err("trailing bytes after the certificate".into());
    }
    Ok(cert)
}

/// The subjectKeyIdentifier, which leaves repeat as authority key identifier.
fn subject_key_id<'a>(cert: &X509Certificate<'a>) -> Result<Option<&'a [u8]>, String> {
    let ext = cert
        .get_extension_unique(&OID_X509_EXT_SUBJECT_KEY_IDENTIFIER)
        .map_err(|e| format!("unreadable subjectKeyIdentifier: {e}"))?;
    match ext.map(|ext| ext.parsed_extension()) {
        None => Ok(None),
        Some(ParsedExtension::SubjectKeyIdentifier(id)) => Ok(Some(id.0)),
        Some(_) => Err("malformed subjectKeyIdentifier".into()),
    }
}

/// X.509 times are whole seconds, possibly before 1970.
fn system_time(time: &ASN1Time) -> SystemTime {
    let seconds = time.timestamp();
    let offset = Duration::from_secs(seconds.unsigned_abs());
    if seconds >= 0 {
        SystemTime::UNIX_EPOCH + offset
    } else {
        SystemTime::UNIX_EPOCH - offset
    }
}

/// The subject in rcgen's terms, so leaves can name it as their issuer.
/// Each value keeps its string type: the issuer name must match byte for byte.
fn rcgen_name(name: &X509Name<'_>) -> Result<DistinguishedName, String> {
    let mut dn = DistinguishedName::new();
    for rdn in name.iter() {
        let mut attributes = rdn.iter();
        let attribute = attributes.next().ok_or("its subject has an empty RDN")?;
        if attributes.next().is_some() {
            return Err("its subject has a multi-valued RDN, which weerwal cannot reproduce".into());
        }
        let arcs = attribute_arcs(attribute).ok_or("malformed attribute type in subject")?;
        let data = attribute.attr_value().data;
        let text = || {
            std::str::from_utf8(data).map(str::to_owned).map_err(|_| "subject attribute is not valid text".to_string())
        };
        let value = match attribute.attr_value().tag() {
            Tag::Utf8String => DnValue::Utf8String(text()?),
            Tag::PrintableString => DnValue::PrintableString(text()?.try_into().map_err(|e| format!("{e}"))?),
            Tag::Ia5String => DnValue::Ia5String(text()?.try_into().map_err(|e| format!("{e}"))?),
            Tag::T61String => DnValue::TeletexString(text()?.try_into().map_err(|e| format!("{e}"))?),
            Tag::BmpString => {
                DnValue::BmpString(rcgen::string::BmpString::from_utf16be(data.to_vec()).map_err(|e| e.to_string())?)
            }
            Tag::UniversalString => DnValue::UniversalString(
                rcgen::string::UniversalString::from_utf32be(data.to_vec()).map_err(|e| e.to_string())?,
            ),
            _ => return Err("subject attribute has an unsupported string type".into()),
        };
        dn.push(DnType::from_oid(&arcs), value);
    }
    Ok(dn)
}

/// The arcs of an attribute type, for rcgen; `None` unless they form an OID
/// rcgen can write. asn1-rs splits the first content byte into the first two
/// arcs without checking them, and rcgen's DER writer (yasna) panics on an
/// OID it cannot encode, so a corrupted `ca.pem` would otherwise panic here.
/// An OID decoded differently from how it is encoded is caught by the probe
/// leaf in `from_der`.
fn attribute_arcs(attribute: &AttributeTypeAndValue<'_>) -> Option<Vec<u64>> {
    let arcs: Vec<u64> = attribute.attr_type().iter()?.collect();
    match arcs[..] {
        [0 | 1, second, ..] if second < 40 => Some(arcs),
        [2, second, ..] if second < u64::MAX - 80 => Some(arcs),
        _ => None,
    }
}

/// `CN=..., O=...` for people. Written here rather than x509-parser's
/// `Display` because that prints UniversalString values as hex.
fn display_name(name: &X509Name<'_>) -> String {
    let parts: Vec<String> = name
        .iter_attributes()
        .map(|attribute| format!("{}={}", attribute_key(attribute), attribute_text(attribute)))
        .collect();
    parts.join(", ")
}

fn attribute_key(attribute: &AttributeTypeAndValue<'_>) -> String {
    let arcs = attribute_arcs(attribute).unwrap_or_default();
    match DnType::from_oid(&arcs) {
        DnType::CommonName => "CN".into(),
        DnType::CountryName => "C".into(),
        DnType::LocalityName => "L".into(),
        DnType::StateOrProvinceName => "ST".into(),
        DnType::OrganizationName => "O".into(),
        DnType::OrganizationalUnitName => "OU".into(),
        _ => attribute.attr_type().to_id_string(),
    }
}

fn attribute_text(attribute: &AttributeTypeAndValue<'_>) -> String {
    let data = attribute.attr_value().data;
    match attribute.attr_value().tag() {
        Tag::BmpString => {
            let units: Vec<u16> = data.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
            String::from_utf16_lossy(&units)
        }
        Tag::UniversalString => data
            .chunks_exact(4)
            .map(|c| {
                char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])).unwrap_or(char::REPLACEMENT_CHARACTER)
            })
            .collect(),
        _ => String::from_utf8_lossy(data).into_owned(),
    }
}

/// Quotes a path for the `chmod` hint when it contains anything a shell would
/// split or expand.
fn shell_quote(path: &Path) -> String {
    let text = path.display().to_string();
    let plain = !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+,:@%".contains(c));
    if plain {
        text
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}
