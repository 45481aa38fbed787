use super::*;

const SAMPLE: &str = r#"
[[ban]]
app = "AliExpress"
domains = ["aliexpress.com", "aliexpress.ru", "eu.aliexpress.com", "aliexpress.com"]
user_agents = ["AliApp"]
advice = "AIVD, NCSC"
reference = "NOS 2023-07"
since = "2023-07-20"

[[ban]]
app = "TikTok"
domains = ["tiktok.com", "1.2.3.4"]
advice = "AIVD"
reference = "Kamerbrief 2023"
since = "2023-03-09"

[[exemption]]
who = ["user:inspecteur1", "group:toezicht"]
apps = ["TikTok"]
reason = "inspectie en toezicht"
until = "2027-06-30"
"#;

fn today() -> Date {
    Date::parse("2026-11-23").unwrap()
}

fn policy(text: &str) -> Result<(Policy, Vec<Warning>), PolicyErrors> {
    let mut b = PolicyBuilder::new();
    b.add_source(Path::new("policy/test.toml"), text);
    b.build(today())
}

fn decide_host(p: &Policy, host: &str) -> Verdict {
    let host = normalise_host(host).unwrap();
    p.decide(&Subject::anonymous("10.0.0.1".parse().unwrap()), &Target { host: &host, user_agent: None, date: today() })
}

fn blocked_app(v: &Verdict) -> Option<&str> {
    match v {
        Verdict::Block(m) => Some(&m.app.name),
        _ => None,
    }
}

#[test]
fn apex_and_subdomains_match_lookalikes_do_not() {
    let (p, _) = policy(SAMPLE).unwrap();
    assert_eq!(blocked_app(&decide_host(&p, "aliexpress.com")), Some("AliExpress"));
    assert_eq!(blocked_app(&decide_host(&p, "M.AliExpress.COM.")), Some("AliExpress"));
    assert_eq!(blocked_app(&decide_host(&p, "a.b.c.aliexpress.ru")), Some("AliExpress"));
    assert_eq!(decide_host(&p, "notaliexpress.com"), Verdict::Allow);
    assert_eq!(decide_host(&p, "aliexpress.com.example.net"), Verdict::Allow);
    assert_eq!(decide_host(&p, "com"), Verdict::Allow);
    assert_eq!(blocked_app(&decide_host(&p, "1.2.3.4")), Some("TikTok"));
    assert_eq!(decide_host(&p, "1.2.3.5"), Verdict::Allow);
}

#[test]
fn overlapping_and_repeated_domains_are_deduplicated() {
    let (p, _) = policy(SAMPLE).unwrap();
    // aliexpress.com (twice), aliexpress.ru, eu.aliexpress.com, tiktok.com, 1.2.3.4
    assert_eq!(p.domain_count(), 5);
    match decide_host(&p, "x.eu.aliexpress.com") {
        Verdict::Block(m) => assert_eq!(m.rule, Rule::Domain("eu.aliexpress.com".into())),
        v => panic!("{v:?}"),
    }
}

#[test]
fn user_agent_signature_detects_the_app_anywhere() {
    let (p, _) = policy(SAMPLE).unwrap();
    let host = normalise_host("example.org").unwrap();
    let v = p.decide(
        &Subject::anonymous("10.0.0.1".parse().unwrap()),
        &Target { host: &host, user_agent: Some("Mozilla/5.0 aliapp(AE/8.1)"), date: today() },
    );
    match v {
        Verdict::Block(m) => {
            assert_eq!(m.app.name, "AliExpress");
            assert_eq!(m.rule, Rule::UserAgent("aliapp".into()));
        }
        v => panic!("{v:?}"),
    }
    assert!(p.detect_app("Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0").is_none());
}

#[test]
fn exemption_applies_to_named_people_apps_and_dates_only() {
    let (p, _) = policy(SAMPLE).unwrap();
    let host = normalise_host("www.tiktok.com").unwrap();
    let ali = normalise_host("aliexpress.com").unwrap();
    let mut inspector = Subject::anonymous("10.0.0.1".parse().unwrap());
    inspector.user = Some("inspecteur1".into());
    let mut group_member = Subject::anonymous("10.0.0.2".parse().unwrap());
    group_member.user = Some("jan".into());
    group_member.groups = vec!["toezicht".into()];
    let mut other = Subject::anonymous("10.0.0.3".parse().unwrap());
    other.user = Some("piet".into());
    let t = Target { host: &host, user_agent: None, date: today() };
    assert!(matches!(p.decide(&inspector, &t), Verdict::Exempt { .. }));
    assert!(matches!(p.decide(&group_member, &t), Verdict::Exempt { .. }));
    assert!(matches!(p.decide(&other, &t), Verdict::Block(_)));
    // Not for another app.
    let t_ali = Target { host: &ali, user_agent: None, date: today() };
    assert!(matches!(p.decide(&inspector, &t_ali), Verdict::Block(_)));
    // Not after its date.
    let later = Target { host: &host, user_agent: None, date: Date::parse("2027-07-01").unwrap() };
    assert!(matches!(p.decide(&inspector, &later), Verdict::Block(_)));
    let last_day = Target { host: &host, user_agent: None, date: Date::parse("2027-06-30").unwrap() };
    assert!(matches!(p.decide(&inspector, &last_day), Verdict::Exempt { .. }));
}

fn invalid(text: &str) -> Vec<(usize, String, String)> {
    match policy(text) {
        Ok(_) => panic!("policy should be invalid"),
        Err(PolicyErrors(errors)) => errors
            .into_iter()
            .map(|e| match e {
                PolicyError::Invalid { line, key, message, file } => {
                    assert_eq!(file, Path::new("policy/test.toml"));
                    (line, key, message)
                }
                e => panic!("{e}"),
            })
            .collect(),
    }
}

#[test]
fn unknown_key_is_named_with_its_line() {
    let errors = invalid(
        "[[ban]]\napp = \"X\"\ndomains = [\"x.com\"]\nadvise = \"AIVD\"\nreference = \"r\"\nsince = \"2023-01-01\"\n",
    );
    assert_eq!(errors.len(), 1);
    let (line, key, message) = &errors[0];
    assert_eq!(*line, 4);
    assert_eq!(key, "advise");
    assert!(message.contains("unknown field"), "{message}");
}

#[test]
fn bad_domain_and_bad_date_are_each_reported() {
    let errors = invalid(
        "[[ban]]\napp = \"X\"\ndomains = [\"ok.com\",\n  \"bad domain.com\"]\nadvice = \"AIVD\"\nreference = \"r\"\nsince = \"2023-01-01\"\n\n[[ban]]\napp = \"Y\"\ndomains = [\"y.com\"]\nadvice = \"AIVD\"\nreference = \"r\"\nsince = \"2023-02-30\"\n",
    );
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!((errors[0].0, errors[0].1.as_str()), (4, "domains"));
    assert_eq!((errors[1].0, errors[1].1.as_str()), (14, "since"));
}

#[test]
fn domain_under_two_apps_is_an_error() {
    let errors = invalid(
        "[[ban]]\napp = \"X\"\ndomains = [\"shared.com\"]\nadvice = \"AIVD\"\nreference = \"r\"\nsince = \"2023-01-01\"\n[[ban]]\napp = \"Y\"\ndomains = [\"shared.com\"]\nadvice = \"AIVD\"\nreference = \"r\"\nsince = \"2023-01-01\"\n",
    );
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].0, 9, "{:?}", errors[0]);
    assert!(errors[0].2.contains("already listed for X at policy/test.toml:3"), "{:?}", errors[0]);
}

#[test]
fn exemption_for_unknown_app_is_an_error_and_expired_one_a_warning() {
    let base = "[[ban]]\napp = \"TikTok\"\ndomains = [\"tiktok.com\"]\nadvice = \"AIVD\"\nreference = \"r\"\nsince = \"2023-03-09\"\n";
    let errors = invalid(&format!(
        "{base}[[exemption]]\nwho = [\"user:a\"]\napps = [\"TikTak\"]\nreason = \"r\"\nuntil = \"2030-01-01\"\n"
    ));
    assert_eq!(errors[0].1, "apps");
    let (_, warnings) = policy(&format!(
        "{base}[[exemption]]\nwho = [\"user:a\"]\napps = [\"TikTok\"]\nreason = \"r\"\nuntil = \"2025-01-01\"\n"
    ))
    .unwrap();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].message.contains("expired"));
}

#[test]
fn embedded_policy_names_the_five_apps() {
    let (p, warnings) = load_embedded(&Zone::default()).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let names: Vec<&str> = p.apps().iter().map(|a| a.name.as_str()).collect();
    for app in ["AliExpress", "TikTok", "WeChat", "VKontakte", "CapCut"] {
        assert!(names.contains(&app), "{app} missing from {names:?}");
    }
    for app in p.apps() {
        assert!(!app.advice.is_empty() && !app.reference.is_empty(), "{}", app.name);
    }
}

#[test]
fn shipped_policy_dir_matches_embedded_copy() {
    let (dir, _) = load_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("policy").as_path(), &Zone::default()).unwrap();
    let (emb, _) = load_embedded(&Zone::default()).unwrap();
    assert_eq!(dir.domain_count(), emb.domain_count());
    assert_eq!(dir.apps().len(), emb.apps().len());
}

/// Issue 15 item 13: an exemption "until 2026-12-03" lasts until that day
/// ends in Amsterdam. At 23:30 UTC on a winter evening it is already
/// 00:30 the next day there: the date decided on must be Amsterdam's.
#[test]
fn an_exemption_ends_with_the_day_in_the_policy_zone_not_in_utc() {
    let text = SAMPLE.replace("until = \"2027-06-30\"", "until = \"2026-12-03\"");
    let (p, _) = policy(&text).unwrap();
    assert_eq!(p.zone().name(), "Europe/Amsterdam");
    let host = normalise_host("tiktok.com").unwrap();
    let mut inspector = Subject::anonymous("10.0.0.1".parse().unwrap());
    inspector.user = Some("inspecteur1".into());
    let at = |ts: &str| std::time::SystemTime::try_from(ts.parse::<jiff::Timestamp>().unwrap()).unwrap();
    let decide_at = |p: &Policy, ts: &str| {
        p.decide(&inspector, &Target { host: &host, user_agent: None, date: p.zone().date_at(at(ts)) })
    };
    assert!(matches!(decide_at(&p, "2026-12-03T22:30:00Z"), Verdict::Exempt { .. }));
    assert!(matches!(decide_at(&p, "2026-12-03T23:30:00Z"), Verdict::Block(_)));
    // In UTC the same moment is still the last day.
    let utc = p.in_zone(Zone::utc());
    assert!(matches!(decide_at(&utc, "2026-12-03T23:30:00Z"), Verdict::Exempt { .. }));
}
