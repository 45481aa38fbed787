//! The HTML a person sees: the block page and short error pages. Dutch
//! first, English below. Every value that reaches HTML goes through
//! [`escape`]; the templates themselves contain no user data.

use std::fmt::Write as _;
use std::sync::LazyLock;

/// Escapes text for HTML element content and double-quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What the block page tells the person.
#[derive(Debug, Clone)]
pub struct BlockInfo<'a> {
    pub app: &'a str,
    pub host: &'a str,
    pub advice: &'a str,
    pub reference: &'a str,
    pub since: &'a str,
    /// The audit record's number, for the service desk; `None` when the
    /// record could not be written.
    pub incident: Option<u64>,
    /// Whether this attempt flagged the device for the compliance gate:
    /// `Some(false)` for content other sites embed (a pixel, an image);
    /// `None` when no gate is configured.
    pub flagged: Option<bool>,
}

/// The block page's sentence about webmail and iBabs, Dutch and English.
fn gate_sentences(flagged: Option<bool>) -> (&'static str, &'static str) {
    match flagged {
        Some(true) => (
            "Dit apparaat kan daarom niet bij webmail en iBabs totdat u de stappen hierboven hebt gedaan en dat bevestigt.",
            "This device is therefore refused webmail and iBabs until you have taken the steps above and confirmed so.",
        ),
        Some(false) => (
            "Dit was inhoud die een andere website insluit (bijvoorbeeld een afbeelding of meetpixel): de poging is vastgelegd, maar uw toegang tot webmail en iBabs blijft zoals die was.",
            "This was content another website embeds (an image or tracking pixel, for example): the attempt is recorded, but your access to webmail and iBabs is unchanged.",
        ),
        None => (
            "Zolang u dat niet hebt gedaan, kunt u met dit apparaat mogelijk niet bij webmail en iBabs.",
            "Until you have done so, this device may be refused access to webmail and iBabs.",
        ),
    }
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;line-height:1.5;color:#1b1b1b}\
h1{font-size:1.6rem;color:#a4001d}h2{font-size:1.2rem;margin-top:2rem}\
.ref{background:#f3f3f3;border-left:4px solid #a4001d;padding:.5rem 1rem}\
details{margin:.3rem 0}summary{cursor:pointer;font-weight:600}hr{margin:2.5rem 0}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"nl\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<meta name=\"robots\" content=\"noindex\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n",
        escape(title)
    )
}

/// Per-browser steps to clear history; kept short, the person is on a work laptop.
const HISTORY_STEPS_NL: &[(&str, &str)] = &[
    ("Chrome", "Menu ⋮ → Verwijder browsegegevens (Ctrl+Shift+Delete) → Periode: ‘Alles’ → vink ‘Browsegeschiedenis’ aan → Gegevens verwijderen."),
    ("Edge", "Menu … → Instellingen → Privacy, zoeken en services → Browsegegevens wissen → ‘Kies wat u wilt wissen’ → Tijdsbereik ‘Altijd’ → Nu wissen."),
    ("Safari", "Menu Geschiedenis → Wis geschiedenis… → kies ‘alle geschiedenis’ → Wis geschiedenis. Op iPhone/iPad: Instellingen → Safari → Wis geschiedenis en websitedata."),
    ("Firefox", "Menu ☰ → Geschiedenis → Recente geschiedenis wissen (Ctrl+Shift+Delete) → Tijdsbereik ‘Alles’ → OK."),
];

const HISTORY_STEPS_EN: &[(&str, &str)] = &[
    ("Chrome", "Menu ⋮ → Delete browsing data (Ctrl+Shift+Delete) → Time range ‘All time’ → tick ‘Browsing history’ → Delete data."),
    ("Edge", "Menu … → Settings → Privacy, search and services → Clear browsing data → ‘Choose what to clear’ → Time range ‘All time’ → Clear now."),
    ("Safari", "History menu → Clear History… → ‘all history’ → Clear History. On iPhone/iPad: Settings → Safari → Clear History and Website Data."),
    ("Firefox", "Menu ☰ → History → Clear recent history (Ctrl+Shift+Delete) → Time range ‘Everything’ → OK."),
];

fn render_steps(list: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (browser, text) in list {
        let _ = writeln!(out, "<details><summary>{}</summary><p>{}</p></details>", escape(browser), escape(text));
    }
    out
}

/// The steps are the same on every page: escaped once, not per blocked request.
static STEPS_NL: LazyLock<String> = LazyLock::new(|| render_steps(HISTORY_STEPS_NL));
static STEPS_EN: LazyLock<String> = LazyLock::new(|| render_steps(HISTORY_STEPS_EN));

/// The page for a blocked attempt: which app, why it is banned and by whose
/// advice, the reference number, and what to do now.
pub fn block_page(info: &BlockInfo<'_>) -> String {
    let app = escape(info.app);
    let host = escape(info.host);
    let advice = escape(info.advice);
    let reference = escape(info.reference);
    let since = escape(info.since);
    let incident = match info.incident {
        Some(n) => n.to_string(),
        None => "—".to_string(),
    };
    let mut b = String::with_capacity(6 * 1024);
    let _ = write!(
        b,
        "<main>\n<h1>Geblokkeerd: {app}</h1>\n\
<p><strong>{host}</strong> hoort bij <strong>{app}</strong>. Deze app en website zijn niet toegestaan op apparaten waarmee u voor de gemeente werkt, op advies van <strong>{advice}</strong> (sinds {since}; bron: {reference}). Apps uit landen met een offensief cyberprogramma tegen Nederland kunnen gegevens van u en de gemeente in verkeerde handen brengen.</p>\n\
<p class=\"ref\">Referentienummer: <strong>{incident}</strong> — noem dit nummer als u contact opneemt met de servicedesk. Deze poging is vastgelegd.</p>\n\
<h2>Wat moet u nu doen?</h2>\n<ol>\n\
<li>Verwijder de app {app} van dit apparaat als die erop staat.</li>\n\
<li>Bezoek de website niet meer op dit apparaat.</li>\n\
<li>Wis de browsegeschiedenis als u de website ooit hebt bezocht:</li>\n</ol>\n"
    );
    b.push_str(&STEPS_NL);
    let (gate_nl, gate_en) = gate_sentences(info.flagged);
    let _ = write!(
        b,
        "<p>{gate_nl}</p>\n</main>\n<hr>\n\
<section lang=\"en\">\n<h1>Blocked: {app}</h1>\n\
<p><strong>{host}</strong> belongs to <strong>{app}</strong>. This app and website are not allowed on devices used for municipal work, on the advice of <strong>{advice}</strong> (since {since}; source: {reference}). Apps from countries with an offensive cyber programme against the Netherlands can expose your data and the municipality's.</p>\n\
<p class=\"ref\">Reference number: <strong>{incident}</strong> — quote it when you contact the service desk. This attempt has been recorded.</p>\n\
<h2>What to do now</h2>\n<ol>\n\
<li>Remove the {app} app from this device if it is installed.</li>\n\
<li>Do not visit the website on this device again.</li>\n\
<li>Clear your browser history if you ever visited the website:</li>\n</ol>\n"
    );
    b.push_str(&STEPS_EN);
    let _ = write!(b, "<p>{gate_en}</p>\n</section>\n");
    page(&format!("Geblokkeerd / Blocked: {}", info.app), &b)
}

/// What the remediation page tells a person whose device is quarantined.
#[derive(Debug, Clone)]
pub struct RemediationInfo<'a> {
    /// The protected system they tried to reach (webmail, iBabs).
    pub system: &'a str,
    pub app: &'a str,
    pub banned_host: &'a str,
    /// When the attempt was made (RFC 3339, UTC).
    pub when: &'a str,
    pub incident: Option<u64>,
    /// Where the attestation form posts to.
    pub action: &'a str,
    pub token: &'a str,
    /// The path to return to after attesting.
    pub return_to: &'a str,
}

/// The page shown instead of webmail or iBabs to a device that tried to
/// reach a banned site: what happened, what to do, and the attestation form.
pub fn remediation_page(info: &RemediationInfo<'_>) -> String {
    let system = escape(info.system);
    let app = escape(info.app);
    let banned = escape(info.banned_host);
    let when = escape(info.when.get(..16).unwrap_or(info.when).replace('T', " ").as_str());
    let incident = info.incident.map(|n| n.to_string()).unwrap_or_else(|| "—".to_string());
    let action = escape(info.action);
    let token = escape(info.token);
    let return_to = escape(info.return_to);
    let mut b = String::with_capacity(8 * 1024);
    let _ = write!(
        b,
        "<main>\n<h1>Geen toegang tot {system}</h1>\n\
<p>Vanaf dit apparaat is op {when} (UTC) geprobeerd <strong>{banned}</strong> ({app}) te bereiken. Volgens de regels van de gemeente mag een apparaat waarmee dat gebeurt niet bij webmail en iBabs, totdat de app is verwijderd en de browsegeschiedenis is gewist.</p>\n\
<p class=\"ref\">Referentienummer: <strong>{incident}</strong></p>\n\
<h2>Wat moet u doen?</h2>\n<ol>\n<li>Verwijder de app {app} van dit apparaat als die erop staat.</li>\n<li>Bezoek de website niet meer op dit apparaat.</li>\n<li>Wis de browsegeschiedenis:</li>\n</ol>\n"
    );
    b.push_str(&STEPS_NL);
    let _ = write!(
        b,
        "<form method=\"post\" action=\"{action}\">\n<input type=\"hidden\" name=\"token\" value=\"{token}\">\n<input type=\"hidden\" name=\"return\" value=\"{return_to}\">\n\
<p><label><input type=\"checkbox\" name=\"confirm\" value=\"yes\" required> Ik heb de app verwijderd en mijn browsegeschiedenis gewist. / I have removed the app and cleared my history.</label></p>\n\
<p><button type=\"submit\">Bevestigen en doorgaan / Confirm and continue</button></p>\n</form>\n</main>\n<hr>\n\
<section lang=\"en\">\n<h1>No access to {system}</h1>\n\
<p>On {when} (UTC) this device tried to reach <strong>{banned}</strong> ({app}). Under the municipality's rules a device used for that may not connect to webmail and iBabs until the app is removed and the browser history is cleared.</p>\n\
<p class=\"ref\">Reference number: <strong>{incident}</strong></p>\n<h2>What to do</h2>\n<ol>\n<li>Remove the {app} app from this device if it is installed.</li>\n<li>Do not visit the website on this device again.</li>\n<li>Clear your browser history:</li>\n</ol>\n"
    );
    b.push_str(&STEPS_EN);
    b.push_str("<p>Then confirm with the form above. Your confirmation is recorded.</p>\n</section>\n");
    page(&format!("Geen toegang / No access: {}", info.system), &b)
}

/// A short error page in both languages (bad request, unreachable origin).
pub fn error_page(status: u16, nl: &str, en: &str) -> String {
    page(
        &format!("{status}"),
        &format!(
            "<main>\n<h1>{status}</h1>\n<p>{}</p>\n</main>\n<hr>\n<section lang=\"en\">\n<p>{}</p>\n</section>\n",
            escape(nl),
            escape(en)
        ),
    )
}

/// The page the proxy shows when opened directly (`http://127.0.0.1:3128/`):
/// proof that it runs, and where the PAC file is.
pub fn status_page(version: &str, apps: &[&str], domains: usize) -> String {
    let list: String = apps.iter().map(|a| format!("<li>{}</li>", escape(a))).collect();
    page(
        "weerwal",
        &format!(
            "<main>\n<h1>weerwal {}</h1>\n<p>Deze proxy weert apps die op advies van AIVD, NCSC of IBD niet zijn toegestaan op apparaten voor gemeentelijk werk ({domains} domeinen):</p>\n<ul>{list}</ul>\n<p>Browserinstelling: <a href=\"/proxy.pac\">/proxy.pac</a></p>\n</main>\n<hr>\n<section lang=\"en\"><p>This proxy keeps out the apps banned on municipal devices on the advice of AIVD, NCSC or IBD. Browser configuration: <a href=\"/proxy.pac\">/proxy.pac</a></p></section>\n",
            escape(version)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_interpolated_is_escaped() {
        let html = block_page(&BlockInfo {
            app: "<script>alert(1)</script>",
            host: "a\"b.com",
            advice: "AIVD & NCSC",
            reference: "x'y",
            since: "2023-07-20",
            incident: Some(42),
            flagged: Some(true),
        });
        assert!(!html.contains("<script>alert"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("a&quot;b.com"));
        assert!(html.contains("AIVD &amp; NCSC"));
        assert!(html.contains("x&#39;y"));
        assert!(html.contains("Referentienummer: <strong>42</strong>"));
    }

    #[test]
    fn block_page_is_dutch_first_then_english_with_steps_per_browser() {
        let html = block_page(&BlockInfo {
            app: "TikTok",
            host: "www.tiktok.com",
            advice: "AIVD",
            reference: "Kamerbrief",
            since: "2023-03-09",
            incident: None,
            flagged: None,
        });
        let nl = html.find("Wat moet u nu doen").unwrap();
        let en = html.find("What to do now").unwrap();
        assert!(nl < en);
        for b in ["Chrome", "Edge", "Safari", "Firefox"] {
            assert_eq!(html.matches(&format!("<summary>{b}</summary>")).count(), 2, "{b}");
        }
    }
}
