//! Certificates are checked by parsing them with x509-parser and by letting
//! webpki and a real TLS handshake judge them, never by asking the code that
//! made them.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, RootCertStore};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OnceCell;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_SIG_ECDSA_WITH_SHA256};

use super::leaf::Leaf;
use super::*;

const ORG: &str = "Gemeente Voorbeeld";
const DAY: i64 = 86_400;

fn new_ca() -> (tempfile::TempDir, CertificateAuthority) {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::init(dir.path(), ORG, false).unwrap();
    (dir, ca)
}

fn parse(der: &[u8]) -> X509Certificate<'_> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    assert!(rest.is_empty());
    cert
}

fn now_unix() -> i64 {
    since_epoch(SystemTime::now()).as_secs() as i64
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn subject_key_id<'a>(cert: &'a X509Certificate<'_>) -> &'a [u8] {
    cert.iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0),
            _ => None,
        })
        .expect("subject key identifier")
}

fn authority_key_id<'a>(cert: &'a X509Certificate<'_>) -> &'a [u8] {
    cert.iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref(),
            _ => None,
        })
        .expect("authority key identifier")
        .0
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Full path validation by webpki, trusting only `ca_der`: checks the
/// signature, the chain, validity, EKU serverAuth and the name.
fn verify_chain(ca_der: &[u8], leaf_der: &[u8], name: &str) -> Result<(), rustls::Error> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(ca_der.to_vec())).unwrap();
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider()).build().unwrap();
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    verifier
        .verify_server_cert(&CertificateDer::from(leaf_der.to_vec()), &[], &server_name, &[], UnixTime::now())
        .map(|_| ())
}

// ---- the CA -------------------------------------------------------------

#[test]
fn ca_is_a_p256_root_with_path_length_zero_for_ten_years() {
    let (_dir, ca) = new_ca();
    let cert = parse(ca.cert_der());

    let constraints = cert.basic_constraints().unwrap().expect("basicConstraints");
    assert!(constraints.critical);
    assert!(constraints.value.ca);
    assert_eq!(constraints.value.path_len_constraint, Some(0));

    let usage = cert.key_usage().unwrap().expect("keyUsage");
    assert!(usage.value.key_cert_sign());
    assert!(usage.value.crl_sign());
    assert_eq!(usage.value.flags.count_ones(), 2, "only keyCertSign and cRLSign");

    let key = cert.public_key();
    assert_eq!(key.algorithm.algorithm, OID_KEY_TYPE_EC_PUBLIC_KEY);
    let curve = key.algorithm.parameters.as_ref().unwrap().as_oid().unwrap();
    assert_eq!(curve, OID_EC_P256);
    assert_eq!(cert.signature_algorithm.algorithm, OID_SIG_ECDSA_WITH_SHA256);

    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    assert!(not_before <= now_unix());
    let years = (not_after - not_before) as f64 / (365.25 * DAY as f64);
    assert!((9.99..=10.01).contains(&years), "{years} years");

    assert_eq!(cert.subject().as_raw(), cert.issuer().as_raw(), "self-signed");
    let cn = cert.subject().iter_common_name().next().unwrap().as_str().unwrap();
    assert_eq!(cn, "weerwal lokale CA — Gemeente Voorbeeld");
    let o = cert.subject().iter_organization().next().unwrap().as_str().unwrap();
    assert_eq!(o, ORG);
    assert!(!subject_key_id(&cert).is_empty());
    // Positive serial of at most 16 bytes, i.e. random, not a hash of the key.
    assert!(cert.raw_serial().len() <= 16);
    assert!(cert.raw_serial()[0] & 0x80 == 0);
}

#[test]
fn ca_key_is_pkcs8_with_mode_0600_and_no_temp_files_remain() {
    let (dir, ca) = new_ca();
    assert_eq!(ca.key_path(), dir.path().join("ca.key"));
    assert_eq!(ca.cert_path(), dir.path().join("ca.pem"));
    assert_eq!(mode(ca.key_path()), 0o600);
    let key = fs::read_to_string(ca.key_path()).unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8 PEM");
    let mut names: Vec<_> =
        fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["ca.key", "ca.pem"]);
    assert_eq!(fs::read_to_string(ca.cert_path()).unwrap(), ca.cert_pem());
}

#[test]
fn init_creates_a_missing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("etc/weerwal/certs");
    let ca = CertificateAuthority::init(&nested, ORG, false).unwrap();
    assert!(ca.cert_path().exists());
    assert_eq!(mode(ca.key_path()), 0o600);
}

#[test]
fn load_refuses_a_key_readable_by_others_and_says_how_to_fix_it() {
    let (dir, ca) = new_ca();
    fs::set_permissions(ca.key_path(), fs::Permissions::from_mode(0o644)).unwrap();
    let err = CertificateAuthority::load(dir.path()).unwrap_err();
    assert!(matches!(err, CaError::KeyPermissions { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("0644") || message.contains("644"), "{message}");
    assert!(message.contains(&format!("chmod 600 {}", ca.key_path().display())), "{message}");

    fs::set_permissions(ca.key_path(), fs::Permissions::from_mode(0o640)).unwrap();
    assert!(CertificateAuthority::load(dir.path()).is_err(), "group-readable");

    fs::set_permissions(ca.key_path(), fs::Permissions::from_mode(0o600)).unwrap();
    let loaded = CertificateAuthority::load(dir.path()).unwrap();
    assert_eq!(loaded.fingerprint_sha256(), ca.fingerprint_sha256());
    fs::set_permissions(ca.key_path(), fs::Permissions::from_mode(0o400)).unwrap();
    CertificateAuthority::load(dir.path()).unwrap();
}

#[test]
fn chmod_hint_quotes_paths_a_shell_would_split() {
    assert_eq!(shell_quote(Path::new("certs/ca.key")), "certs/ca.key");
    assert_eq!(shell_quote(Path::new("/srv/mijn certs/ca.key")), "'/srv/mijn certs/ca.key'");
    assert_eq!(shell_quote(Path::new("it's")), r"'it'\''s'");
}

#[test]
fn init_twice_refuses_without_force_and_replaces_with_force() {
    let (dir, first) = new_ca();
    let err = CertificateAuthority::init(dir.path(), ORG, false).unwrap_err();
    assert!(matches!(err, CaError::Exists { .. }), "{err:?}");
    assert!(err.to_string().contains("--force"), "{err}");
    // Nothing was touched.
    let again = CertificateAuthority::load(dir.path()).unwrap();
    assert_eq!(again.fingerprint_sha256(), first.fingerprint_sha256());

    let second = CertificateAuthority::init(dir.path(), ORG, true).unwrap();
    assert_ne!(second.fingerprint_sha256(), first.fingerprint_sha256());
    assert_eq!(mode(second.key_path()), 0o600);
    let loaded = CertificateAuthority::load(dir.path()).unwrap();
    assert_eq!(loaded.fingerprint_sha256(), second.fingerprint_sha256());
    assert_ne!(parse(first.cert_der()).raw_serial(), parse(second.cert_der()).raw_serial());
}

#[test]
fn init_refuses_when_only_the_key_exists() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("ca.key"), "x").unwrap();
    let err = CertificateAuthority::init(dir.path(), ORG, false).unwrap_err();
    assert!(matches!(err, CaError::Exists { ref path } if path.ends_with("ca.key")));
}

#[test]
fn load_or_create_creates_once_then_loads() {
    let dir = tempfile::tempdir().unwrap();
    let (created, was_created) = CertificateAuthority::load_or_create(dir.path(), ORG).unwrap();
    assert!(was_created);
    let (loaded, was_created) = CertificateAuthority::load_or_create(dir.path(), ORG).unwrap();
    assert!(!was_created);
    assert_eq!(created.fingerprint_sha256(), loaded.fingerprint_sha256());
    assert_eq!(created.cert_der(), loaded.cert_der());
}

#[test]
fn load_or_create_refuses_half_a_ca() {
    let (dir, ca) = new_ca();
    fs::remove_file(ca.cert_path()).unwrap();
    let err = CertificateAuthority::load_or_create(dir.path(), ORG).unwrap_err();
    match &err {
        CaError::Incomplete { present, missing } => {
            assert_eq!(present, ca.key_path());
            assert_eq!(missing, ca.cert_path());
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("ca.pem"));
    // The key is still there: nothing was created over it.
    assert!(ca.key_path().exists());
}

#[test]
fn load_without_a_ca_says_how_to_make_one() {
    let dir = tempfile::tempdir().unwrap();
    let err = CertificateAuthority::load(dir.path()).unwrap_err();
    assert!(matches!(err, CaError::Missing { .. }), "{err:?}");
    assert!(err.to_string().contains("weerwal ca init"), "{err}");
}

#[test]
fn load_refuses_a_key_of_another_ca() {
    let (dir, ca) = new_ca();
    let (_other_dir, other) = new_ca();
    fs::copy(other.key_path(), ca.key_path()).unwrap();
    fs::set_permissions(ca.key_path(), fs::Permissions::from_mode(0o600)).unwrap();
    let err = CertificateAuthority::load(dir.path()).unwrap_err();
    assert!(matches!(err, CaError::KeyMismatch { .. }), "{err:?}");
}

#[test]
fn load_refuses_a_garbled_certificate_naming_the_file() {
    let (dir, ca) = new_ca();
    fs::write(ca.cert_path(), "not a certificate\n").unwrap();
    let err = CertificateAuthority::load(dir.path()).unwrap_err();
    assert!(matches!(err, CaError::BadCert { .. }), "{err:?}");
    assert!(err.to_string().contains("ca.pem"), "{err}");

    let (dir, ca) = new_ca();
    fs::write(ca.key_path(), "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").unwrap();
    let err = CertificateAuthority::load(dir.path()).unwrap_err();
    assert!(matches!(err, CaError::BadKey { .. }), "{err:?}");
    assert!(err.to_string().contains("ca.key"), "{err}");
}

#[test]
fn load_refuses_a_certificate_that_is_not_a_ca() {
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["example.org".to_string()]).unwrap().self_signed(&key).unwrap();
    fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
    write_atomically(&dir.path().join("ca.key"), key.serialize_pem().as_bytes(), 0o600).unwrap();
    let err = CertificateAuthority::load(dir.path()).unwrap_err();
    assert!(err.to_string().contains("not mark it as a CA"), "{err}");
}

#[test]
fn organisation_names_x509_cannot_hold_are_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["", "   ", "Gemeente\nVoorbeeld", &"x".repeat(65)] {
        let err = CertificateAuthority::init(dir.path(), bad, false).unwrap_err();
        assert!(matches!(err, CaError::Create { .. }), "{bad:?}: {err:?}");
    }
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);

    // Too long for "weerwal lokale CA — <organisation>" in 64 characters.
    let long = "Gemeenschappelijke Regeling Serviceorganisatie Zuid";
    let ca = CertificateAuthority::init(dir.path(), long, false).unwrap();
    let cert = parse(ca.cert_der());
    let cn = cert.subject().iter_common_name().next().unwrap().as_str().unwrap();
    assert_eq!(cn, "weerwal lokale CA");
    let o = cert.subject().iter_organization().next().unwrap().as_str().unwrap();
    assert_eq!(o, long);
}

#[test]
fn fingerprint_is_sha256_of_the_der_like_openssl_prints_it() {
    let (_dir, ca) = new_ca();
    let pem = fs::read(ca.cert_path()).unwrap();
    let der = CertificateDer::from_pem_slice(&pem).unwrap();
    let digest = Sha256::digest(&der);
    let expected: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
    assert_eq!(ca.fingerprint_sha256(), expected.join(":"));
    assert_eq!(ca.fingerprint_sha256().len(), 32 * 3 - 1);
}

#[test]
fn summary_shows_subject_validity_and_fingerprint() {
    let (_dir, ca) = new_ca();
    let summary = ca.summary();
    assert_eq!(summary.subject, "CN=weerwal lokale CA — Gemeente Voorbeeld, O=Gemeente Voorbeeld");
    let cert = parse(ca.cert_der());
    assert_eq!(since_epoch(summary.not_before).as_secs() as i64, cert.validity().not_before.timestamp());
    assert_eq!(since_epoch(summary.not_after).as_secs() as i64, cert.validity().not_after.timestamp());
    let text = summary.to_string();
    for needle in [
        "subject:     CN=weerwal lokale CA",
        "valid from:  ",
        "valid until: ",
        &ca.fingerprint_sha256(),
        &ca.cert_path().display().to_string(),
    ] {
        assert!(text.contains(needle), "{needle:?} in\n{text}");
    }
    assert!(!text.contains("EXPIRED"));
}

#[test]
fn debug_output_never_shows_the_key() {
    let (_dir, ca) = new_ca();
    let key = fs::read_to_string(ca.key_path()).unwrap();
    let body: String = key.lines().nth(1).unwrap().into();
    let debug = format!("{ca:?}");
    assert!(!debug.contains(&body));
    assert!(!debug.contains("PRIVATE"));
}

#[test]
fn a_truncated_or_corrupted_certificate_is_refused_without_panicking() {
    let (_dir, ca) = new_ca();
    let key_pem = fs::read_to_string(ca.key_path()).unwrap();
    let from_der = |bytes: &[u8]| {
        let key = KeyPair::from_pem(&key_pem).unwrap();
        let der = CertificateDer::from(bytes.to_vec());
        CertificateAuthority::from_der(ca.cert_path().into(), ca.key_path().into(), String::new(), der, key)
    };
    let der = ca.cert_der();
    for len in 0..der.len() {
        let err = from_der(&der[..len]).unwrap_err();
        assert!(matches!(err, CaError::BadCert { .. }), "prefix {len}: {err:?}");
    }
    let mut trailing = der.to_vec();
    trailing.push(0);
    let err = from_der(&trailing).unwrap_err();
    assert!(err.to_string().contains("trailing bytes"), "{err}");
    for i in 0..der.len() {
        for flip in [0x01, 0x80, 0xff] {
            let mut bytes = der.to_vec();
            bytes[i] ^= flip;
            let _ = from_der(&bytes);
        }
    }
}

#[tokio::test]
async fn a_ca_made_elsewhere_with_other_string_types_and_key_ids_is_usable() {
    // Not weerwal's own format: PrintableString names and a SHA-512 key id.
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CountryName, DnValue::PrintableString("NL".try_into().unwrap()));
    name.push(DnType::CommonName, DnValue::PrintableString("Andere CA".try_into().unwrap()));
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_identifier_method = KeyIdMethod::Sha512;
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2040, 1, 1);
    let cert = params.self_signed(&key).unwrap();
    fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
    write_atomically(&dir.path().join("ca.key"), key.serialize_pem().as_bytes(), 0o600).unwrap();

    let ca = Arc::new(CertificateAuthority::load(dir.path()).unwrap());
    assert_eq!(ca.summary().subject, "C=NL, CN=Andere CA");
    let leaf = LeafCache::new(ca.clone()).leaf("vk.com").await.unwrap();
    verify_chain(ca.cert_der(), &leaf.cert_der, "vk.com").unwrap();
    let ca_cert = parse(ca.cert_der());
    let leaf_cert = parse(&leaf.cert_der);
    assert_eq!(leaf_cert.issuer().as_raw(), ca_cert.subject().as_raw());
    assert_eq!(authority_key_id(&leaf_cert), subject_key_id(&ca_cert));
}

// ---- leaves -------------------------------------------------------------

#[tokio::test]
async fn leaf_names_exactly_the_banned_host_and_chains_to_the_ca() {
    let (_dir, ca) = new_ca();
    let ca = Arc::new(ca);
    let cache = LeafCache::new(ca.clone());
    let leaf = cache.leaf("aliexpress.com").await.unwrap();
    let cert = parse(&leaf.cert_der);
    let ca_cert = parse(ca.cert_der());

    let san = cert.subject_alternative_name().unwrap().expect("SAN");
    assert_eq!(san.value.general_names, vec![GeneralName::DNSName("aliexpress.com")]);
    let cn: Vec<_> = cert.subject().iter_common_name().map(|cn| cn.as_str().unwrap()).collect();
    assert_eq!(cn, ["aliexpress.com"]);

    let eku = cert.extended_key_usage().unwrap().expect("EKU");
    assert!(eku.value.server_auth);
    assert!(!eku.value.client_auth && !eku.value.any && eku.value.other.is_empty());
    let usage = cert.key_usage().unwrap().expect("keyUsage");
    assert!(usage.value.digital_signature());
    assert!(!usage.value.key_cert_sign());
    assert!(!cert.is_ca());

    let now = now_unix();
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    assert!(not_before <= now - 3_590 && not_before >= now - 3_610, "backdated 1h");
    assert!((not_after - now - 7 * DAY).abs() <= 10, "valid 7 days");

    assert_eq!(cert.issuer().as_raw(), ca_cert.subject().as_raw());
    assert_eq!(authority_key_id(&cert), subject_key_id(&ca_cert));
    assert_eq!(cert.signature_algorithm.algorithm, OID_SIG_ECDSA_WITH_SHA256);
    assert_eq!(cert.public_key().algorithm.algorithm, OID_KEY_TYPE_EC_PUBLIC_KEY);

    verify_chain(ca.cert_der(), &leaf.cert_der, "aliexpress.com").unwrap();
    let err = verify_chain(ca.cert_der(), &leaf.cert_der, "www.aliexpress.com").unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::NotValidForName)
                | rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. })
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn ip_hosts_get_an_ip_address_san() {
    let (_dir, ca) = new_ca();
    let ca = Arc::new(ca);
    let cache = LeafCache::new(ca.clone());
    for (host, bytes) in [
        ("127.0.0.1", vec![127, 0, 0, 1]),
        ("::1", {
            let mut v = vec![0; 16];
            v[15] = 1;
            v
        }),
    ] {
        let leaf = cache.leaf(host).await.unwrap();
        let cert = parse(&leaf.cert_der);
        let san = cert.subject_alternative_name().unwrap().expect("SAN");
        assert_eq!(san.value.general_names, vec![GeneralName::IPAddress(&bytes)], "{host}");
        let cn = cert.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), host);
        verify_chain(ca.cert_der(), &leaf.cert_der, host).unwrap();
    }
}

#[tokio::test]
async fn a_name_too_long_for_a_common_name_is_only_in_a_critical_san() {
    let (_dir, ca) = new_ca();
    let ca = Arc::new(ca);
    let host = format!("{}.{}.example.com", "a".repeat(40), "b".repeat(40));
    let leaf = LeafCache::new(ca.clone()).leaf(&host).await.unwrap();
    let cert = parse(&leaf.cert_der);
    assert_eq!(cert.subject().iter_common_name().count(), 0);
    let san = cert.subject_alternative_name().unwrap().expect("SAN");
    assert!(san.critical);
    assert_eq!(san.value.general_names, vec![GeneralName::DNSName(host.as_str())]);
    verify_chain(ca.cert_der(), &leaf.cert_der, &host).unwrap();
}

#[tokio::test]
async fn every_mint_has_a_fresh_random_serial() {
    let (_dir, ca) = new_ca();
    let ca = Arc::new(ca);
    let mut serials = std::collections::HashSet::new();
    // Same host, same shared key, separate caches: derived serials would repeat.
    for _ in 0..4 {
        let leaf = LeafCache::new(ca.clone()).leaf("tiktok.com").await.unwrap();
        let cert = parse(&leaf.cert_der);
        let serial = cert.raw_serial().to_vec();
        assert!(serial.len() <= 16 && serial.len() >= 8, "{serial:?}");
        assert_eq!(serial[0] & 0x80, 0, "positive");
        serials.insert(serial);
    }
    let cache = LeafCache::new(ca.clone());
    for host in ["a.example", "b.example"] {
        let leaf = cache.leaf(host).await.unwrap();
        serials.insert(parse(&leaf.cert_der).raw_serial().to_vec());
    }
    assert_eq!(serials.len(), 6);
}

#[tokio::test]
async fn one_host_twice_gets_the_same_certificate() {
    let (_dir, ca) = new_ca();
    let cache = LeafCache::new(Arc::new(ca));
    let first = cache.leaf("wechat.com").await.unwrap();
    let second = cache.leaf("wechat.com").await.unwrap();
    assert_eq!(parse(&first.cert_der).raw_serial(), parse(&second.cert_der).raw_serial());
    let a = cache.server_config("wechat.com").await.unwrap();
    let b = cache.server_config("wechat.com").await.unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(cache.minted(), 1);
    assert_eq!(cache.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_requests_for_one_host_share_one_mint() {
    let (_dir, ca) = new_ca();
    let cache = Arc::new(LeafCache::new(Arc::new(ca)));
    let barrier = Arc::new(tokio::sync::Barrier::new(50));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let cache = cache.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                cache.server_config("capcut.com").await.unwrap()
            })
        })
        .collect();
    let mut configs = Vec::new();
    for task in tasks {
        configs.push(task.await.unwrap());
    }
    assert_eq!(cache.minted(), 1);
    assert!(configs.iter().all(|c| Arc::ptr_eq(c, &configs[0])));
}

#[tokio::test]
async fn a_leaf_near_expiry_is_minted_again() {
    let (_dir, ca) = new_ca();
    let cache = LeafCache::new(Arc::new(ca));
    let first = cache.leaf("vk.com").await.unwrap();
    // Pretend it was minted almost seven days ago.
    let aged = Arc::new(Leaf {
        config: first.config.clone(),
        cert_der: first.cert_der.clone(),
        not_after: SystemTime::now() + Duration::from_secs(3_600),
    });
    cache.cache.insert("vk.com".into(), Arc::new(OnceCell::new_with(Some(aged))));
    let renewed = cache.leaf("vk.com").await.unwrap();
    assert_eq!(cache.minted(), 2);
    assert_ne!(parse(&first.cert_der).raw_serial(), parse(&renewed.cert_der).raw_serial());
    let again = cache.leaf("vk.com").await.unwrap();
    assert!(Arc::ptr_eq(&renewed, &again));
    assert_eq!(cache.minted(), 2);
}

#[tokio::test]
async fn the_cache_stays_bounded() {
    let (_dir, ca) = new_ca();
    let cache = LeafCache::with_max_hosts(Arc::new(ca), 20);
    for i in 0..60 {
        cache.server_config(&format!("h{i}.example")).await.unwrap();
        assert!(cache.len() <= 20, "{} hosts cached", cache.len());
    }
    assert_eq!(cache.minted(), 60);
    // The newest host survived the eviction that made room for it.
    cache.server_config("h59.example").await.unwrap();
    assert_eq!(cache.minted(), 60);
}

#[tokio::test]
async fn hosts_that_are_not_normalised_never_reach_a_certificate() {
    let (_dir, ca) = new_ca();
    let cache = LeafCache::new(Arc::new(ca));
    for bad in [
        "",
        "AliExpress.com",
        "[::1]",
        "aliexpress.com.",
        "a..b",
        "ali express.com",
        "aliexpress.com/x",
        "exämple.com",
        "*.aliexpress.com",
        &format!("{}.com", "a".repeat(64)),
    ] {
        let err = cache.server_config(bad).await.unwrap_err();
        assert!(matches!(err, CaError::Leaf { .. }), "{bad:?}: {err:?}");
        assert!(err.to_string().contains("ca.pem"), "{err}");
    }
    assert_eq!(cache.minted(), 0);
    assert!(cache.is_empty());
}

#[test]
fn server_config_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let (_dir, ca) = new_ca();
    let cache = LeafCache::new(Arc::new(ca));
    let future = cache.server_config("aliexpress.com");
    assert_send(&future);
}

// ---- a real handshake ---------------------------------------------------

fn client_config(trust: &[u8]) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(trust.to_vec())).unwrap();
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // What a browser offers.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

/// Serves one TLS connection with the leaf for `host`, writing a short reply.
async fn serve_once(
    cache: &LeafCache,
    host: &str,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>) {
    let config = cache.server_config(host).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = TlsAcceptor::from(config).accept(tcp).await?;
        tls.write_all(b"geweerd").await?;
        tls.shutdown().await
    });
    (addr, server)
}

#[tokio::test]
async fn tls_handshake_succeeds_for_a_client_that_trusts_the_ca() {
    let (_dir, ca) = new_ca();
    let ca = Arc::new(ca);
    let cache = LeafCache::new(ca.clone());
    let (addr, server) = serve_once(&cache, "aliexpress.com").await;

    let tcp = TcpStream::connect(addr).await.unwrap();
    let connector = TlsConnector::from(Arc::new(client_config(ca.cert_der())));
    let name = ServerName::try_from("aliexpress.com").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    {
        let (_, session) = tls.get_ref();
        assert_eq!(session.alpn_protocol(), Some(&b"http/1.1"[..]));
        let chain = session.peer_certificates().unwrap();
        assert_eq!(chain.len(), 2, "leaf and CA");
        assert_eq!(chain[1].as_ref(), ca.cert_der());
        let leaf = parse(chain[0].as_ref());
        let san = leaf.subject_alternative_name().unwrap().unwrap();
        assert_eq!(san.value.general_names, vec![GeneralName::DNSName("aliexpress.com")]);
    }
    let mut reply = Vec::new();
    tls.read_to_end(&mut reply).await.unwrap();
    assert_eq!(reply, b"geweerd");
    server.await.unwrap().unwrap();
}

/// Connects to a server using a leaf of `ca`, trusting only `trusted`, and
/// returns the TLS error the client saw.
async fn handshake_error(ca: CertificateAuthority, trusted: &[u8]) -> rustls::Error {
    let cache = LeafCache::new(Arc::new(ca));
    let (addr, server) = serve_once(&cache, "aliexpress.com").await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let connector = TlsConnector::from(Arc::new(client_config(trusted)));
    let name = ServerName::try_from("aliexpress.com").unwrap();
    let err = connector.connect(name, tcp).await.unwrap_err();
    assert!(server.await.unwrap().is_err(), "the server saw the alert");
    err.get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .unwrap_or_else(|| panic!("not a TLS error: {err:?}"))
        .clone()
}

#[tokio::test]
async fn tls_handshake_fails_for_a_client_that_does_not_trust_the_ca() {
    let (_dir, ca) = new_ca();
    let other_dir = tempfile::tempdir().unwrap();
    let other = CertificateAuthority::init(other_dir.path(), "Gemeente Elders", false).unwrap();
    assert_eq!(
        handshake_error(ca, other.cert_der()).await,
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
    );
}

#[tokio::test]
async fn tls_handshake_fails_for_a_client_that_trusts_a_replaced_ca() {
    // `ca init --force` keeps the name; a laptop still trusting the old CA
    // finds an issuer by that name whose signature does not match.
    let (dir, old) = new_ca();
    let old_der = old.cert_der().to_vec();
    let new = CertificateAuthority::init(dir.path(), ORG, true).unwrap();
    assert_eq!(handshake_error(new, &old_der).await, rustls::Error::InvalidCertificate(CertificateError::BadSignature));
}

#[tokio::test]
async fn leaves_from_a_reloaded_ca_chain_to_the_distributed_ca_pem() {
    let (dir, created) = new_ca();
    let distributed = fs::read(created.cert_path()).unwrap();
    drop(created);
    let loaded = Arc::new(CertificateAuthority::load(dir.path()).unwrap());
    let leaf = LeafCache::new(loaded).leaf("tiktok.com").await.unwrap();
    let ca_der = CertificateDer::from_pem_slice(&distributed).unwrap();
    verify_chain(&ca_der, &leaf.cert_der, "tiktok.com").unwrap();
    assert_eq!(authority_key_id(&parse(&leaf.cert_der)), subject_key_id(&parse(&ca_der)));
}
