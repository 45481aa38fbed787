//! `GET /charts`: pictures for officers who would rather look than read —
//! attempts per day per app over the selected period (stacked bars) and the
//! top subjects (horizontal bars) — as server-rendered SVG, no scripts. Each
//! chart is an image with a text alternative and is followed by a table of
//! the same numbers, so a screen reader loses nothing.
//!
//! The numbers come from [`crate::audit::report::report`], the function of
//! `weerwal logs report`: the per-day totals are `logs report --by day`, an
//! app's days are `logs report --by day --app APP`, the subjects are
//! `logs report --by user` (or `--by device` when no attempt has a user).

use super::auth::Officer;
use super::pages::{filter_form, layout};
use super::source::Source;
use crate::audit::query::Filter;
use crate::audit::report::{report_lines, GroupBy};
use maud::{html, Markup, PreEscaped};

/// Apps drawn as their own series; the rest are summed as "other".
const MAX_APPS: usize = 6;
/// Subjects in the top list.
const TOP_SUBJECTS: usize = 10;
/// Colours with enough contrast on white, told apart by the legend and the table too.
const PALETTE: [&str; 7] = ["#154273", "#d52b1e", "#39870c", "#e17000", "#673327", "#8fcae7", "#767676"];

/// What the charts show, computed with `logs report`'s own function.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Charts {
    /// UTC days with attempts, in order.
    pub days: Vec<String>,
    /// The series: the apps with most attempts, then "other" when needed.
    pub series: Vec<String>,
    /// `counts[day][series]`.
    pub counts: Vec<Vec<u64>>,
    /// Attempts per day (`logs report --by day`).
    pub day_totals: Vec<u64>,
    /// Whether the subjects are users (else devices or addresses).
    pub subjects_are_users: bool,
    /// The subjects with most attempts, most first.
    pub top: Vec<(String, u64)>,
}

/// Reads the log once per series (a handful) and once for the subjects.
/// Blocking: run it off the async runtime.
pub fn gather(source: &Source, filter: &Filter) -> Result<Charts, String> {
    let err = |e: crate::audit::query::RunError| e.to_string();
    let report = |files: &Source, filter: &Filter, by: GroupBy| {
        report_lines(|visit| files.each(&filter.range, visit), filter, by)
    };
    let files = source;
    let (days, _) = report(files, filter, GroupBy::Day).map_err(err)?;
    let (apps, _) = report(files, filter, GroupBy::App).map_err(err)?;
    let day_index = |d: &str| days.iter().position(|g| g.key == d);
    let mut series = Vec::new();
    let mut counts = vec![Vec::new(); days.len()];
    for app in apps.iter().filter(|a| a.key != "-").take(MAX_APPS) {
        let mut f = filter.clone();
        f.app = Some(app.key.clone());
        let (per_day, _) = report(files, &f, GroupBy::Day).map_err(err)?;
        for row in counts.iter_mut() {
            row.push(0);
        }
        for d in per_day {
            if let Some(i) = day_index(&d.key) {
                if let Some(c) = counts[i].last_mut() {
                    *c = d.attempts;
                }
            }
        }
        series.push(app.key.clone());
    }
    let day_totals: Vec<u64> = days.iter().map(|d| d.attempts).collect();
    let shown: Vec<u64> = counts.iter().map(|r| r.iter().sum()).collect();
    if day_totals.iter().zip(&shown).any(|(t, s)| t > s) {
        series.push("overig / other".to_string());
        for (i, row) in counts.iter_mut().enumerate() {
            row.push(day_totals[i].saturating_sub(shown[i]));
        }
    }
    let (mut subjects, _) = report(files, filter, GroupBy::User).map_err(err)?;
    let subjects_are_users = subjects.iter().any(|g| g.key != "-");
    if !subjects_are_users {
        subjects = report(files, filter, GroupBy::Device).map_err(err)?.0;
    }
    let top = subjects.into_iter().take(TOP_SUBJECTS).map(|g| (g.key, g.attempts)).collect();
    Ok(Charts { days: days.into_iter().map(|d| d.key).collect(), series, counts, day_totals, subjects_are_users, top })
}

/// A round upper bound for an axis: 1, 2, 5 × 10ⁿ.
fn nice_max(max: u64) -> u64 {
    let mut step = 1;
    loop {
        for m in [1, 2, 5] {
            if m * step >= max.max(1) {
                return m * step;
            }
        }
        step *= 10;
    }
}

/// A coordinate with one decimal, as the SVG attributes take it.
fn at(v: f64) -> String {
    format!("{v:.1}")
}

/// Stacked bars: one bar per day, one colour per app.
pub fn day_chart(c: &Charts) -> String {
    let (w, h, left, bottom, top) = (760.0f64, 280.0f64, 48.0f64, 40.0f64, 12.0f64);
    let plot_h = h - bottom - top;
    let max = nice_max(c.day_totals.iter().copied().max().unwrap_or(0));
    let total: u64 = c.day_totals.iter().sum();
    let n = c.days.len().max(1) as f64;
    let slot = (w - left - 4.0) / n;
    let bar = (slot * 0.7).max(1.0);
    let label_every = ((c.days.len() as f64) / 12.0).ceil().max(1.0) as usize;
    let base = top + plot_h;
    html! {
        svg.chart role="img" aria-labelledby="chart-days-title chart-days-desc" viewBox={ "0 0 " (w) " " (h) }
            width="100%" style={ "max-width:" (w) "px" } xmlns="http://www.w3.org/2000/svg" {
            title #chart-days-title { "Pogingen per dag per app / Attempts per day per app" }
            desc #chart-days-desc {
                (total) " poging(en) over " (c.days.len()) " dag(en); de tabel hieronder geeft dezelfde getallen."
            }
            @for i in 0..=4u64 {
                @let v = max * i / 4;
                @let y = base - plot_h * (v as f64) / (max as f64);
                line x1=(left) x2=(w) y1=(at(y)) y2=(at(y)) stroke="#ddd" {}
                text x=(at(left - 6.0)) y=(at(y + 4.0)) font-size="11" text-anchor="end" fill="#333" { (v) }
            }
            @for (i, day) in c.days.iter().enumerate() {
                @let x = left + 2.0 + slot * i as f64 + (slot - bar) / 2.0;
                @for (j, count, y, bh) in stack(&c.counts[i], base, plot_h, max) {
                    rect x=(at(x)) y=(at(y)) width=(at(bar)) height=(at(bh)) fill=(PALETTE[j % PALETTE.len()]) {
                        title { (day) " · " (c.series[j]) ": " (count) }
                    }
                }
                @if i % label_every == 0 {
                    text x=(at(x + bar / 2.0)) y=(at(h - bottom + 16.0)) font-size="11" text-anchor="middle" fill="#333" {
                        (day.get(5..).unwrap_or(day))
                    }
                }
            }
            line x1=(left) x2=(w) y1=(at(base)) y2=(at(base)) stroke="#333" {}
        }
        ul.legend aria-hidden="true" {
            @for (j, name) in c.series.iter().enumerate() {
                li {
                    span style={ "display:inline-block;width:.9em;height:.9em;background:" (PALETTE[j % PALETTE.len()]) ";margin-right:.3em" } {}
                    (name)
                }
            }
        }
    }
    .into_string()
}

/// One day's segments, bottom up: (series, count, top y, height); zero
/// counts draw nothing.
fn stack(counts: &[u64], base: f64, plot_h: f64, max: u64) -> Vec<(usize, u64, f64, f64)> {
    let mut y = base;
    let mut out = Vec::new();
    for (j, count) in counts.iter().enumerate().filter(|(_, c)| **c > 0) {
        let bh = plot_h * (*count as f64) / (max as f64);
        y -= bh;
        out.push((j, *count, y, bh));
    }
    out
}

/// Horizontal bars: the subjects with most attempts.
pub fn top_chart(c: &Charts) -> String {
    let row = 26.0f64;
    let (w, left) = (760.0f64, 190.0f64);
    let h = row * c.top.len().max(1) as f64 + 8.0;
    let max = nice_max(c.top.first().map(|t| t.1).unwrap_or(0));
    html! {
        svg.chart role="img" aria-labelledby="chart-top-title" viewBox={ "0 0 " (w) " " (h) }
            width="100%" style={ "max-width:" (w) "px" } xmlns="http://www.w3.org/2000/svg" {
            title #chart-top-title {
                "Meeste pogingen per " (if c.subjects_are_users { "gebruiker" } else { "apparaat" }) " / Top subjects"
            }
            @for (i, (name, count)) in c.top.iter().enumerate() {
                @let y = 4.0 + row * i as f64;
                @let bw = (w - left - 60.0) * (*count as f64) / (max as f64);
                text x=(at(left - 8.0)) y=(at(y + 15.0)) font-size="12" text-anchor="end" fill="#333" {
                    (name.chars().take(28).collect::<String>())
                }
                rect x=(left) y=(at(y)) width=(at(bw)) height=(at(row - 8.0)) fill=(PALETTE[0]) {
                    title { (name) ": " (count) }
                }
                text x=(at(left + bw + 6.0)) y=(at(y + 15.0)) font-size="12" fill="#333" { (count) }
            }
        }
    }
    .into_string()
}

/// The whole `/charts` page: filter form, each chart followed by its table.
pub fn charts_page(
    officer: &Officer,
    pairs: &[(String, String)],
    result: &Result<Charts, String>,
    origin: &super::source::Origin,
    zone: &crate::calendar::Zone,
) -> String {
    let filters = filter_form("/charts", pairs, &["user", "app", "host", "client", "since", "until"], "", zone);
    let body = html! {
        p {
            "Pogingen (geblokkeerd, uitgezonderd, toegang geweigerd) als grafiek, met onder elke grafiek dezelfde getallen als tabel; dezelfde telling als "
            code { "weerwal logs report" } "."
            span.en lang="en" {
                "Attempts as charts, each followed by a table of the same numbers, as " code { "weerwal logs report" } " counts them."
            }
        }
        (PreEscaped(filters))
        (super::pages::origin_note(origin))
        @match result {
            Err(e) => p.bad role="alert" { (e) },
            Ok(c) => (charts(c)),
        }
    };
    layout("Grafieken", "Charts", Some(officer), "/charts", &body.into_string())
}

/// Both charts, each followed by its table.
fn charts(c: &Charts) -> Markup {
    let (nl, en) = if c.subjects_are_users { ("gebruiker", "user") } else { ("apparaat of adres", "device") };
    html! {
        h2 { "Pogingen per dag per app " span.en lang="en" { "Attempts per day per app" } }
        @if c.days.is_empty() {
            p role="status" { "Geen pogingen gevonden. " span lang="en" { "No attempts found." } }
        } @else {
            figure { (PreEscaped(day_chart(c))) }
            table {
                caption { "Pogingen per dag (UTC) per app " span lang="en" { "/ Attempts per day per app" } }
                thead { tr {
                    th scope="col" { "Dag" }
                    @for name in &c.series { th.num scope="col" { (name) } }
                    th.num scope="col" { "Totaal" }
                } }
                tbody {
                    @for (i, day) in c.days.iter().enumerate() {
                        tr {
                            th scope="row" { (day) }
                            @for n in &c.counts[i] { td.num { (n) } }
                            td.num { (c.day_totals[i]) }
                        }
                    }
                }
            }
        }
        h2 { "Meeste pogingen per " (nl) " " span.en lang="en" { "Top subjects (" (en) ")" } }
        @if !c.top.is_empty() {
            figure { (PreEscaped(top_chart(c))) }
            table {
                caption { "Meeste pogingen per " (nl) " " span lang="en" { "/ Top subjects" } }
                thead { tr {
                    th scope="col" { (if c.subjects_are_users { "Gebruiker" } else { "Apparaat" }) }
                    th.num scope="col" { "Pogingen" }
                } }
                tbody {
                    @for (name, count) in &c.top {
                        tr { th scope="row" { (name) } td.num { (count) } }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Charts {
        Charts {
            days: vec!["2026-12-01".into(), "2026-12-02".into()],
            series: vec!["TikTok".into(), "<script>".into()],
            counts: vec![vec![3, 1], vec![0, 2]],
            day_totals: vec![4, 2],
            subjects_are_users: true,
            top: vec![("jdevries".into(), 4), ("a&b".into(), 2)],
        }
    }

    #[test]
    fn charts_are_svg_with_text_alternatives_and_escaped_names() {
        let svg = day_chart(&sample());
        assert!(svg.starts_with("<svg") && svg.contains("role=\"img\"") && svg.contains("<title id="));
        assert!(svg.contains("TikTok: 3") && !svg.contains("<script>") && svg.contains("&lt;script&gt;"));
        // Zero counts draw nothing; three non-zero segments.
        assert_eq!(svg.matches("<rect").count(), 3);
        let top = top_chart(&sample());
        assert!(top.contains("a&amp;b") && top.contains("jdevries: 4"));
    }

    #[test]
    fn axis_maximum_is_round() {
        assert_eq!(nice_max(0), 1);
        assert_eq!(nice_max(3), 5);
        assert_eq!(nice_max(17), 20);
        assert_eq!(nice_max(480), 500);
        assert_eq!(nice_max(1000), 1000);
    }
}
