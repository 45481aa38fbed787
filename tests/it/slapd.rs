//! A real OpenLDAP `slapd` for the directory tests and benchmark: started
//! in a temporary directory on free loopback ports with its own
//! `slapd.conf` (mdb backend, the memberOf overlay so `memberOf` works as in
//! Active Directory), loaded with an LDIF of users and groups over LDAP,
//! LDAPS and StartTLS with a test CA made here; stopped by its PID (the
//! system's own slapd, if any, is never touched).
//!
//! Shared by tests/it/directory.rs and benches/directory.rs (`#[path]`).
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use weerwal::config::LdapConfig;

pub const SUFFIX: &str = "dc=gemeente,dc=test";
const ROOT_DN: &str = "cn=admin,dc=gemeente,dc=test";
const ROOT_PW: &str = "root-wachtwoord";
pub const SVC_DN: &str = "cn=svc-weerwal,ou=service,dc=gemeente,dc=test";
pub const SVC_PW: &str = "svc-wachtwoord";

/// A running slapd of our own.
pub struct Slapd {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    pub ldap_port: u16,
    pub ldaps_port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn slapd_binary() -> PathBuf {
    let p = PathBuf::from("/usr/sbin/slapd");
    assert!(p.exists(), "slapd is missing: run scripts/install-test-deps.sh (Debian slapd and ldap-utils)");
    p
}

/// A CA and a server certificate for 127.0.0.1 and localhost.
pub fn test_pki(dir: &Path) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::CommonName, "weerwal test directory CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    leaf.distinguished_name.push(DnType::CommonName, "localhost");
    let issuer = rcgen::Issuer::from_params(&ca, &ca_key);
    let leaf_cert = leaf.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), leaf_cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
}

/// Users (uid, password) and groups (cn, members) of the test directory.
pub const USERS: &[(&str, &str)] = &[
    ("jdevries", "wachtwoord-jan"),
    ("toezichthouder", "wachtwoord-toez"),
    ("fbakker", "wachtwoord-officier"),
    ("ajansen", "wachtwoord-anna"),
    ("pdekker", "wachtwoord-piet"),
];

fn ldif(users: &[(&str, &str)]) -> String {
    let mut out = format!(
        "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Gemeente Test\ndc: gemeente\n\n\
         dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n\n\
         dn: ou=service,{SUFFIX}\nobjectClass: organizationalUnit\nou: service\n\n\
         dn: {SVC_DN}\nobjectClass: person\ncn: svc-weerwal\nsn: service\nuserPassword: {SVC_PW}\n\n"
    );
    for (uid, pw) in users {
        out.push_str(&format!(
            "dn: uid={uid},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\nuserPassword: {pw}\n\n"
        ));
    }
    let group = |cn: &str, members: &[&str]| {
        // groupOfNames needs a member: a placeholder keeps a group valid when its last person leaves.
        let mut g = format!(
            "dn: cn={cn},ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: {cn}\nmember: cn=placeholder,{SUFFIX}\n"
        );
        for m in members {
            g.push_str(&format!("member: uid={m},ou=people,{SUFFIX}\n"));
        }
        g.push('\n');
        g
    };
    out.push_str(&group("toezicht", &["toezichthouder"]));
    out.push_str(&group("weerwal-officers", &["fbakker", "pdekker"]));
    out.push_str(&group("raad", &["jdevries", "toezichthouder"]));
    out
}

impl Slapd {
    /// Starts slapd and loads the users and groups; waits until it answers.
    pub fn start() -> Slapd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("db")).unwrap();
        test_pki(d);
        let conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             include /etc/ldap/schema/nis.schema\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             moduleload memberof\n\
             pidfile {d}/slapd.pid\n\
             argsfile {d}/slapd.args\n\
             TLSCACertificateFile {d}/ca.pem\n\
             TLSCertificateFile {d}/server.pem\n\
             TLSCertificateKeyFile {d}/server.key\n\
             database mdb\n\
             maxsize 104857600\n\
             suffix \"{SUFFIX}\"\n\
             rootdn \"{ROOT_DN}\"\n\
             rootpw {ROOT_PW}\n\
             directory {d}/db\n\
             overlay memberof\n\
             memberof-group-oc groupOfNames\n\
             memberof-member-ad member\n\
             memberof-memberof-ad memberOf\n\
             memberof-refint true\n\
             access to attrs=userPassword by self write by anonymous auth by * none\n\
             access to * by users read by * none\n",
            d = d.display()
        );
        std::fs::write(d.join("slapd.conf"), conf).unwrap();
        let (ldap_port, ldaps_port) = (free_port(), free_port());
        let mut slapd = Slapd { dir, child: None, ldap_port, ldaps_port };
        slapd.spawn();
        slapd.wait_answering();
        slapd.modify("ldapadd", &ldif(USERS));
        slapd
    }

    fn spawn(&mut self) {
        let d = self.dir.path();
        let urls = format!("ldap://127.0.0.1:{}/ ldaps://127.0.0.1:{}/", self.ldap_port, self.ldaps_port);
        let log = std::fs::File::create(d.join("slapd.log")).unwrap();
        // -d 0: stays in the foreground (our child, stopped by its PID).
        let child = Command::new(slapd_binary())
            .args(["-f", &d.join("slapd.conf").display().to_string(), "-h", &urls, "-d", "0"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("slapd starts");
        self.child = Some(child);
    }

    fn wait_answering(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new("ldapwhoami")
                .args(["-x", "-H", &self.ldap_url(), "-D", ROOT_DN, "-w", ROOT_PW])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "slapd exited ({status}): {}",
                    std::fs::read_to_string(self.dir.path().join("slapd.log")).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "slapd did not answer within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn ldap_url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.ldap_port)
    }

    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.ldaps_port)
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Runs `ldapadd` or `ldapmodify` as the directory's administrator.
    pub fn modify(&self, tool: &str, ldif: &str) {
        let path = self.dir.path().join("change.ldif");
        std::fs::write(&path, ldif).unwrap();
        let out = Command::new(tool)
            .args(["-x", "-H", &self.ldap_url(), "-D", ROOT_DN, "-w", ROOT_PW, "-f"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{tool}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Removes a user from a group (the memberOf overlay updates the user).
    pub fn remove_member(&self, group: &str, uid: &str) {
        self.modify(
            "ldapmodify",
            &format!(
                "dn: cn={group},ou=groups,{SUFFIX}\nchangetype: modify\ndelete: member\nmember: uid={uid},ou=people,{SUFFIX}\n"
            ),
        );
    }

    /// Stops slapd by its PID and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// `[identity.ldap]` for this directory over LDAPS, verified against the test CA.
    pub fn config(&self, dir: &Path) -> LdapConfig {
        let pw = dir.join("ldap.pw");
        std::fs::write(&pw, format!("{SVC_PW}\n")).unwrap();
        LdapConfig {
            url: self.ldaps_url(),
            ca_file: Some(self.ca_file()),
            bind_dn: SVC_DN.to_string(),
            bind_password_file: pw,
            base_dn: SUFFIX.to_string(),
            user_filter: "(&(objectClass=inetOrgPerson)(uid={user}))".to_string(),
            group_attribute: "memberOf".to_string(),
            officer_group: Some("weerwal-officers".to_string()),
            ..LdapConfig::default()
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}
