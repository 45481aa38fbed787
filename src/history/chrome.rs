//! Chrome, Edge and Chromium: the `History` database.
//!
//! `urls` holds one row per URL, `visits` one row per visit (`visits.url` →
//! `urls.id`). Other tables point at these and would keep a trace of a banned
//! site after its URL row is gone, so purge removes those rows too:
//! `keyword_search_terms` (a search typed on the site), `segments` and
//! `segment_usage` (the "most visited" tiles), `visit_source`, the
//! `content_annotations`/`context_annotations`/`clusters_and_visits` rows
//! of each visit (Journeys), and `visited_links` (the `:visited` colouring,
//! which names both the link and the page it was on). Times are microseconds
//! since 1601-01-01 UTC.

use rusqlite::Connection;

use super::sqlite::{banned_ids, has_column, has_table, icons_attached, int_or, require_tables, temp_ids, text, ICONS};
use super::{banned_host, time, Finding, HistoryError, Profile, Removed};
use crate::policy::Policy;

/// The history entries whose host the policy bans.
pub fn find(conn: &Connection, profile: &Profile, policy: &Policy) -> Result<Vec<Finding>, HistoryError> {
    require_tables(conn, profile, &["urls", "visits"])?;
    find_rows(conn, policy).map_err(HistoryError::sqlite(&profile.db))
}

fn find_rows(conn: &Connection, policy: &Policy) -> rusqlite::Result<Vec<Finding>> {
    let mut found = Vec::new();
    let mut stmt = conn.prepare("SELECT id, url, last_visit_time FROM urls")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let Some((host, m)) = text(row, 1)?.and_then(|u| banned_host(policy, &u)) else {
            continue;
        };
        found.push(Finding {
            id: row.get(0)?,
            host,
            app: m.app.name.clone(),
            rule: m.rule.as_str().to_string(),
            visits: 0,
            last_visit: time::chrome(int_or(row, 2, 0)?),
            bookmarked: false,
        });
    }
    let mut visits = conn.prepare("SELECT count(*), max(visit_time) FROM visits WHERE url = ?1")?;
    for f in &mut found {
        let (count, last) = visits.query_row([f.id], |r| Ok((int_or(r, 0, 0)?, int_or(r, 1, 0)?)))?;
        f.visits = count.max(0) as u64;
        f.last_visit = f.last_visit.max(time::chrome(last));
    }
    Ok(found)
}

/// Removes `found` and every row that depends on it. Runs inside the
/// caller's transaction; any failure leaves the rollback to the caller.
pub fn delete(
    conn: &Connection,
    profile: &Profile,
    policy: &Policy,
    found: &[Finding],
) -> Result<Removed, HistoryError> {
    delete_rows(conn, policy, found).map_err(HistoryError::sqlite(&profile.db))
}

fn delete_rows(conn: &Connection, policy: &Policy, found: &[Finding]) -> rusqlite::Result<Removed> {
    temp_ids(conn, "weerwal_urls", found.iter().map(|f| f.id))?;
    let visit_ids: Vec<i64> = {
        let mut stmt = conn.prepare("SELECT id FROM visits WHERE url IN temp.weerwal_urls")?;
        let ids = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
        ids
    };
    temp_ids(conn, "weerwal_visits", visit_ids.iter().copied())?;

    // Remaining visits that came from a removed one lose that link (Chrome
    // uses 0 for "no referring visit"), rather than point at nothing.
    for column in ["from_visit", "opener_visit"] {
        if has_column(conn, "visits", column)? {
            conn.execute(
                &format!(
                    "UPDATE visits SET {column} = 0 WHERE {column} IN temp.weerwal_visits \
                     AND id NOT IN temp.weerwal_visits"
                ),
                [],
            )?;
        }
    }
    let by_visit: &[(&str, &str)] = &[
        ("visit_source", "id"),
        ("content_annotations", "visit_id"),
        ("context_annotations", "visit_id"),
        ("clusters_and_visits", "visit_id"),
        ("cluster_visit_duplicates", "visit_id"),
        ("cluster_visit_duplicates", "duplicate_visit_id"),
    ];
    for (table, column) in by_visit {
        if has_table(conn, table)? && has_column(conn, table, column)? {
            conn.execute(&format!("DELETE FROM {table} WHERE {column} IN temp.weerwal_visits"), [])?;
        }
    }
    // Sync metadata and Journeys entries are keyed by the visit's time.
    for (table, column) in
        [("history_sync_metadata", "storage_key"), ("journey_history_entries", "visit_timestamp_micros")]
    {
        if has_table(conn, table)? && has_column(conn, table, column)? {
            conn.execute(
                &format!(
                    "DELETE FROM {table} WHERE {column} IN \
                     (SELECT visit_time FROM visits WHERE id IN temp.weerwal_visits)"
                ),
                [],
            )?;
        }
    }
    let visits = conn.execute("DELETE FROM visits WHERE id IN temp.weerwal_visits", [])? as u64;

    if has_table(conn, "keyword_search_terms")? {
        conn.execute("DELETE FROM keyword_search_terms WHERE url_id IN temp.weerwal_urls", [])?;
    }
    if has_table(conn, "segments")? {
        if has_table(conn, "segment_usage")? {
            conn.execute(
                "DELETE FROM segment_usage WHERE segment_id IN \
                 (SELECT id FROM segments WHERE url_id IN temp.weerwal_urls)",
                [],
            )?;
        }
        conn.execute("DELETE FROM segments WHERE url_id IN temp.weerwal_urls", [])?;
    }
    if has_table(conn, "visited_links")? {
        delete_visited_links(conn, policy)?;
    }
    let icon_links = if icons_attached(conn)? { delete_icons(conn, policy)? } else { 0 };
    let entries = conn.execute("DELETE FROM urls WHERE id IN temp.weerwal_urls", [])? as u64;
    Ok(Removed { entries, visits, icon_links })
}

/// `Favicons`: `icon_mapping` links a page URL to an icon in `favicons`
/// (whose images are in `favicon_bitmaps`). Links from banned pages go, and
/// so does every icon no remaining page uses that served them or that lives
/// on a banned host.
fn delete_icons(conn: &Connection, policy: &Policy) -> rusqlite::Result<u64> {
    let pages = banned_ids(conn, &format!("SELECT id, page_url FROM {ICONS}.icon_mapping"), policy)?;
    temp_ids(conn, "weerwal_icon_pages", pages)?;
    let mut icons = banned_ids(conn, &format!("SELECT id, url FROM {ICONS}.favicons"), policy)?;
    {
        let mut stmt = conn.prepare(&format!(
            "SELECT icon_id FROM {ICONS}.icon_mapping WHERE id IN temp.weerwal_icon_pages AND icon_id IS NOT NULL"
        ))?;
        icons.extend(stmt.query_map([], |r| r.get::<_, i64>(0))?.collect::<rusqlite::Result<Vec<_>>>()?);
    }
    temp_ids(conn, "weerwal_icons", icons)?;
    let links = conn.execute(&format!("DELETE FROM {ICONS}.icon_mapping WHERE id IN temp.weerwal_icon_pages"), [])?;
    let in_use = format!("(SELECT icon_id FROM {ICONS}.icon_mapping WHERE icon_id IS NOT NULL)");
    conn.execute(
        &format!("DELETE FROM {ICONS}.favicon_bitmaps WHERE icon_id IN temp.weerwal_icons AND icon_id NOT IN {in_use}"),
        [],
    )?;
    conn.execute(&format!("DELETE FROM {ICONS}.favicons WHERE id IN temp.weerwal_icons AND id NOT IN {in_use}"), [])?;
    Ok(links as u64)
}

/// `visited_links` rows for a removed URL, and rows recording a link seen
/// *on* a banned page (their `top_level_url` or `frame_url`).
fn delete_visited_links(conn: &Connection, policy: &Policy) -> rusqlite::Result<()> {
    let mut ids = Vec::new();
    {
        let mut stmt =
            conn.prepare("SELECT id, link_url_id IN temp.weerwal_urls, top_level_url, frame_url FROM visited_links")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let removed_link = int_or(row, 1, 0)? != 0;
            let on_banned_page = [2, 3]
                .into_iter()
                .any(|i| text(row, i).ok().flatten().is_some_and(|u| banned_host(policy, &u).is_some()));
            if removed_link || on_banned_page {
                ids.push(row.get::<_, i64>(0)?);
            }
        }
    }
    temp_ids(conn, "weerwal_links", ids)?;
    conn.execute("DELETE FROM visited_links WHERE id IN temp.weerwal_links", [])?;
    Ok(())
}
