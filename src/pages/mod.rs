//! The HTML a person sees: the block page, the remediation page and short
//! error and status pages. Dutch first, English below. Written with `maud`:
//! the templates are checked at compile time and every value put into them
//! is escaped by construction (`(value)`); only the fixed style sheet is
//! inserted as is.

use maud::{html, Markup, PreEscaped, DOCTYPE};

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

/// The `<head>` of every page weerwal serves (these and the dashboard's):
/// UTF-8, a mobile viewport, kept out of search engines, and the page's own
/// fixed style sheet inline (the pages load nothing else).
pub fn head(title: &str, style: &'static str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="robots" content="noindex";
            title { (title) }
            style { (PreEscaped(style)) }
        }
    }
}

fn page(title: &str, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="nl" {
            (head(title, STYLE))
            body { (body) }
        }
    }
    .into_string()
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

fn steps(list: &[(&str, &str)]) -> Markup {
    html! {
        @for (browser, text) in list {
            details { summary { (browser) } p { (text) } }
        }
    }
}

/// The block page's words in one language; the page is the same template
/// twice, Dutch first, then English.
struct BlockWords {
    lang: &'static str,
    blocked: &'static str,
    belongs_to: &'static str,
    not_allowed: &'static str,
    since: &'static str,
    source: &'static str,
    why: &'static str,
    reference: &'static str,
    quote_it: &'static str,
    what_now: &'static str,
    clear_history: &'static str,
    steps: &'static [(&'static str, &'static str)],
}

const BLOCK_NL: BlockWords = BlockWords {
    lang: "nl",
    blocked: "Geblokkeerd: ",
    belongs_to: " hoort bij ",
    not_allowed: ". Deze app en website zijn niet toegestaan op apparaten waarmee u voor de gemeente werkt, op advies van ",
    since: " (sinds ",
    source: "; bron: ",
    why: "). Apps uit landen met een offensief cyberprogramma tegen Nederland kunnen gegevens van u en de gemeente in verkeerde handen brengen.",
    reference: "Referentienummer: ",
    quote_it: " — noem dit nummer als u contact opneemt met de servicedesk. Deze poging is vastgelegd.",
    what_now: "Wat moet u nu doen?",
    clear_history: "Wis de browsegeschiedenis als u de website ooit hebt bezocht:",
    steps: HISTORY_STEPS_NL,
};

const BLOCK_EN: BlockWords = BlockWords {
    lang: "en",
    blocked: "Blocked: ",
    belongs_to: " belongs to ",
    not_allowed: ". This app and website are not allowed on devices used for municipal work, on the advice of ",
    since: " (since ",
    source: "; source: ",
    why: "). Apps from countries with an offensive cyber programme against the Netherlands can expose your data and the municipality's.",
    reference: "Reference number: ",
    quote_it: " — quote it when you contact the service desk. This attempt has been recorded.",
    what_now: "What to do now",
    clear_history: "Clear your browser history if you ever visited the website:",
    steps: HISTORY_STEPS_EN,
};

/// The first two steps, the same on the block and the remediation page.
fn remove_and_stay_away(lang: &str, app: &str) -> Markup {
    html! {
        @if lang == "nl" {
            li { "Verwijder de app " (app) " van dit apparaat als die erop staat." }
            li { "Bezoek de website niet meer op dit apparaat." }
        } @else {
            li { "Remove the " (app) " app from this device if it is installed." }
            li { "Do not visit the website on this device again." }
        }
    }
}

/// The page for a blocked attempt: which app, why it is banned and by whose
/// advice, the reference number, and what to do now.
pub fn block_page(info: &BlockInfo<'_>) -> String {
    let BlockInfo { app, host, advice, reference, since, .. } = *info;
    let incident = info.incident.map(|n| n.to_string()).unwrap_or_else(|| "—".to_string());
    let (gate_nl, gate_en) = gate_sentences(info.flagged);
    let half = |w: &BlockWords, gate: &str| {
        html! {
            h1 { (w.blocked) (app) }
            p {
                strong { (host) } (w.belongs_to) strong { (app) } (w.not_allowed)
                strong { (advice) } (w.since) (since) (w.source) (reference) (w.why)
            }
            p.ref { (w.reference) strong { (incident) } (w.quote_it) }
            h2 { (w.what_now) }
            ol {
                (remove_and_stay_away(w.lang, app))
                li { (w.clear_history) }
            }
            (steps(w.steps))
            p { (gate) }
        }
    };
    let body = html! {
        main { (half(&BLOCK_NL, gate_nl)) }
        hr;
        section lang=(BLOCK_EN.lang) { (half(&BLOCK_EN, gate_en)) }
    };
    page(&format!("Geblokkeerd / Blocked: {app}"), body)
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
    let RemediationInfo { system, app, banned_host: banned, action, token, return_to, .. } = *info;
    let when = info.when.get(..16).unwrap_or(info.when).replace('T', " ");
    let incident = info.incident.map(|n| n.to_string()).unwrap_or_else(|| "—".to_string());
    let body = html! {
        main {
            h1 { "Geen toegang tot " (system) }
            p {
                "Vanaf dit apparaat is op " (when) " (UTC) geprobeerd " strong { (banned) } " (" (app) ") te bereiken. Volgens de regels van de gemeente mag een apparaat waarmee dat gebeurt niet bij webmail en iBabs, totdat de app is verwijderd en de browsegeschiedenis is gewist."
            }
            p.ref { "Referentienummer: " strong { (incident) } }
            h2 { "Wat moet u doen?" }
            ol {
                (remove_and_stay_away("nl", app))
                li { "Wis de browsegeschiedenis:" }
            }
            (steps(HISTORY_STEPS_NL))
            form method="post" action=(action) {
                input type="hidden" name="token" value=(token);
                input type="hidden" name="return" value=(return_to);
                p {
                    label {
                        input type="checkbox" name="confirm" value="yes" required;
                        " Ik heb de app verwijderd en mijn browsegeschiedenis gewist. / I have removed the app and cleared my history."
                    }
                }
                p { button type="submit" { "Bevestigen en doorgaan / Confirm and continue" } }
            }
        }
        hr;
        section lang="en" {
            h1 { "No access to " (system) }
            p {
                "On " (when) " (UTC) this device tried to reach " strong { (banned) } " (" (app) "). Under the municipality's rules a device used for that may not connect to webmail and iBabs until the app is removed and the browser history is cleared."
            }
            p.ref { "Reference number: " strong { (incident) } }
            h2 { "What to do" }
            ol {
                (remove_and_stay_away("en", app))
                li { "Clear your browser history:" }
            }
            (steps(HISTORY_STEPS_EN))
            p { "Then confirm with the form above. Your confirmation is recorded." }
        }
    };
    page(&format!("Geen toegang / No access: {system}"), body)
}

/// A short error page in both languages (bad request, unreachable origin).
pub fn error_page(status: u16, nl: &str, en: &str) -> String {
    let body = html! {
        main { h1 { (status) } p { (nl) } }
        hr;
        section lang="en" { p { (en) } }
    };
    page(&status.to_string(), body)
}

/// The page the proxy shows when opened directly (`http://127.0.0.1:3128/`):
/// proof that it runs, and where the PAC file is.
pub fn status_page(version: &str, apps: &[&str], domains: usize) -> String {
    let body = html! {
        main {
            h1 { "weerwal " (version) }
            p { "Deze proxy weert apps die op advies van AIVD, NCSC of IBD niet zijn toegestaan op apparaten voor gemeentelijk werk (" (domains) " domeinen):" }
            ul { @for app in apps { li { (app) } } }
            p { "Browserinstelling: " a href="/proxy.pac" { "/proxy.pac" } }
        }
        hr;
        section lang="en" {
            p { "This proxy keeps out the apps banned on municipal devices on the advice of AIVD, NCSC or IBD. Browser configuration: " a href="/proxy.pac" { "/proxy.pac" } }
        }
    };
    page("weerwal", body)
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
        // maud escapes & < > and "; a ' is harmless in element content and
        // in the double-quoted attributes maud writes.
        assert!(html.contains("x'y"));
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
