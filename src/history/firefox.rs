//! Firefox: the `places.sqlite` database.
//!
//! `moz_places` holds one row per URL (history *and* bookmarks share it),
//! `moz_historyvisits` one row per visit (`place_id` → `moz_places.id`),
//! `moz_origins` one row per scheme+host (`moz_places.origin_id`). Firefox
//! keeps its clean-up triggers in memory (TEMP triggers created when it opens
//! the file), so they do not run for us: purge does their work itself,
//! removing `moz_inputhistory` (address-bar completions), `moz_annos`,
//! `moz_places_metadata`, the new-tab shortcut interactions and the origin
//! row once no place uses it.
//!
//! A bookmarked banned page keeps its `moz_places` row, because the bookmark
//! points at it; its visits are removed and its counters reset, the same as
//! Firefox's own "Forget About This Site". Times are microseconds since
//! 1970-01-01 UTC.

use rusqlite::Connection;

use super::sqlite::{banned_ids, has_column, has_table, icons_attached, int_or, require_tables, temp_ids, text, ICONS};
use super::{banned_host, time, Finding, HistoryError, Profile, Removed};
use crate::policy::Policy;

/// The history entries whose host the policy bans. A bookmarked page with
/// no visits is a bookmark, not history, and is not listed.
pub fn find(conn: &Connection, profile: &Profile, policy: &Policy) -> Result<Vec<Finding>, HistoryError> {
    require_tables(conn, profile, &["moz_places", "moz_historyvisits"])?;
    find_rows(conn, policy).map_err(HistoryError::sqlite(&profile.db))
}

fn find_rows(conn: &Connection, policy: &Policy) -> rusqlite::Result<Vec<Finding>> {
    let foreign = if has_column(conn, "moz_places", "foreign_count")? { "foreign_count" } else { "0" };
    let mut found = Vec::new();
    let mut stmt = conn.prepare(&format!("SELECT id, url, last_visit_date, visit_count, {foreign} FROM moz_places"))?;
    let mut rows = stmt.query([])?;
    let mut counts = Vec::new();
    while let Some(row) = rows.next()? {
        let Some((host, m)) = text(row, 1)?.and_then(|u| banned_host(policy, &u)) else {
            continue;
        };
        counts.push((int_or(row, 3, 0)?, int_or(row, 4, 0)?));
        found.push(Finding {
            id: row.get(0)?,
            host,
            app: m.app.name.clone(),
            rule: m.rule.as_str().to_string(),
            visits: 0,
            last_visit: time::firefox(int_or(row, 2, 0)?),
            bookmarked: false,
        });
    }
    let mut visits = conn.prepare("SELECT count(*), max(visit_date) FROM moz_historyvisits WHERE place_id = ?1")?;
    let mut history = Vec::with_capacity(found.len());
    for (f, (visit_count, foreign_count)) in found.iter_mut().zip(counts) {
        let (count, last) = visits.query_row([f.id], |r| Ok((int_or(r, 0, 0)?, int_or(r, 1, 0)?)))?;
        f.visits = count.max(0) as u64;
        f.last_visit = f.last_visit.max(time::firefox(last));
        f.bookmarked = foreign_count > 0;
        // A bookmark with no history at all is a bookmark, not history.
        history.push(!(f.bookmarked && f.visits == 0 && visit_count <= 0 && f.last_visit.is_none()));
    }
    let mut keep = history.into_iter();
    found.retain(|_| keep.next().unwrap_or(true));
    Ok(found)
}

/// Removes `found` and every row that depends on it, inside the caller's
/// transaction.
pub fn delete(
    conn: &Connection,
    profile: &Profile,
    policy: &Policy,
    found: &[Finding],
) -> Result<Removed, HistoryError> {
    delete_rows(conn, policy, found).map_err(HistoryError::sqlite(&profile.db))
}

fn delete_rows(conn: &Connection, policy: &Policy, found: &[Finding]) -> rusqlite::Result<Removed> {
    temp_ids(conn, "weerwal_places", found.iter().map(|f| f.id))?;
    temp_ids(conn, "weerwal_drop", found.iter().filter(|f| !f.bookmarked).map(|f| f.id))?;
    let visit_ids: Vec<i64> = {
        let mut stmt = conn.prepare("SELECT id FROM moz_historyvisits WHERE place_id IN temp.weerwal_places")?;
        let ids = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
        ids
    };
    temp_ids(conn, "weerwal_visits", visit_ids)?;
    let has_origins = has_table(conn, "moz_origins")? && has_column(conn, "moz_places", "origin_id")?;
    if has_origins {
        let origins: Vec<i64> = {
            let mut stmt = conn.prepare(
                "SELECT DISTINCT origin_id FROM moz_places \
                 WHERE id IN temp.weerwal_drop AND origin_id IS NOT NULL",
            )?;
            let ids = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
            ids
        };
        temp_ids(conn, "weerwal_origins", origins)?;
    }

    conn.execute(
        "UPDATE moz_historyvisits SET from_visit = 0 \
         WHERE from_visit IN temp.weerwal_visits AND id NOT IN temp.weerwal_visits",
        [],
    )?;
    if has_column(conn, "moz_historyvisits", "triggeringPlaceId")? {
        conn.execute(
            "UPDATE moz_historyvisits SET triggeringPlaceId = NULL WHERE triggeringPlaceId IN temp.weerwal_drop",
            [],
        )?;
    }
    if has_table(conn, "moz_historyvisits_extra")? {
        conn.execute("DELETE FROM moz_historyvisits_extra WHERE visit_id IN temp.weerwal_visits", [])?;
    }
    let visits = conn.execute("DELETE FROM moz_historyvisits WHERE id IN temp.weerwal_visits", [])? as u64;

    // Bookmarked pages stay, without their history.
    let recalc = if has_column(conn, "moz_places", "recalc_frecency")? { ", recalc_frecency = 1" } else { "" };
    let kept = conn.execute(
        &format!(
            "UPDATE moz_places SET visit_count = 0, last_visit_date = NULL, typed = 0{recalc} \
             WHERE id IN temp.weerwal_places AND id NOT IN temp.weerwal_drop"
        ),
        [],
    )? as u64;

    for table in
        ["moz_inputhistory", "moz_annos", "moz_places_metadata", "moz_places_extra", "moz_newtab_shortcuts_interaction"]
    {
        if has_table(conn, table)? && has_column(conn, table, "place_id")? {
            conn.execute(&format!("DELETE FROM {table} WHERE place_id IN temp.weerwal_drop"), [])?;
        }
    }
    // Declared ON DELETE CASCADE in Firefox's schema: an interaction that
    // came *from* a banned page goes with it.
    if has_table(conn, "moz_places_metadata")? && has_column(conn, "moz_places_metadata", "referrer_place_id")? {
        conn.execute("DELETE FROM moz_places_metadata WHERE referrer_place_id IN temp.weerwal_drop", [])?;
    }
    let dropped = conn.execute("DELETE FROM moz_places WHERE id IN temp.weerwal_drop", [])? as u64;
    if has_origins {
        conn.execute(
            "DELETE FROM moz_origins WHERE id IN temp.weerwal_origins \
             AND id NOT IN (SELECT origin_id FROM moz_places WHERE origin_id IS NOT NULL)",
            [],
        )?;
    }
    let icon_links = if icons_attached(conn)? { delete_icons(conn, policy)? } else { 0 };
    Ok(Removed { entries: dropped + kept, visits, icon_links })
}

/// `favicons.sqlite`: `moz_pages_w_icons` names each page that showed an
/// icon, `moz_icons_to_pages` links it to `moz_icons`. Banned pages and
/// their links go, and so does every icon no remaining page uses that served
/// them or that lives on a banned host (root icons such as
/// `https://aliexpress.com/favicon.ico`).
fn delete_icons(conn: &Connection, policy: &Policy) -> rusqlite::Result<u64> {
    let pages = banned_ids(conn, &format!("SELECT id, page_url FROM {ICONS}.moz_pages_w_icons"), policy)?;
    temp_ids(conn, "weerwal_icon_pages", pages)?;
    let mut icons = banned_ids(conn, &format!("SELECT id, icon_url FROM {ICONS}.moz_icons"), policy)?;
    {
        let mut stmt = conn.prepare(&format!(
            "SELECT icon_id FROM {ICONS}.moz_icons_to_pages WHERE page_id IN temp.weerwal_icon_pages"
        ))?;
        icons.extend(stmt.query_map([], |r| r.get::<_, i64>(0))?.collect::<rusqlite::Result<Vec<_>>>()?);
    }
    temp_ids(conn, "weerwal_icons", icons)?;
    let links =
        conn.execute(&format!("DELETE FROM {ICONS}.moz_icons_to_pages WHERE page_id IN temp.weerwal_icon_pages"), [])?;
    conn.execute(&format!("DELETE FROM {ICONS}.moz_pages_w_icons WHERE id IN temp.weerwal_icon_pages"), [])?;
    conn.execute(
        &format!(
            "DELETE FROM {ICONS}.moz_icons WHERE id IN temp.weerwal_icons \
             AND id NOT IN (SELECT icon_id FROM {ICONS}.moz_icons_to_pages)"
        ),
        [],
    )?;
    Ok(links as u64)
}
