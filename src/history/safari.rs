//! Safari: the `History.db` database (`~/Library/Safari/History.db`).
//!
//! `history_items` holds one row per URL, `history_visits` one row per visit
//! (`history_item` → `history_items.id`). Visits chain redirects through
//! `redirect_source`/`redirect_destination`, declared `ON DELETE CASCADE`:
//! with foreign keys on, removing a banned visit would also remove an allowed
//! visit it redirected to. Foreign keys stay off and those links are cleared
//! instead. Times are seconds (REAL) since 2001-01-01 UTC.

use rusqlite::Connection;

use super::sqlite::{has_column, has_table, int_or, require_tables, temp_ids, text};
use super::{banned_host, time, Finding, HistoryError, Profile, Removed};
use crate::policy::Policy;

/// The history entries whose host the policy bans.
pub fn find(conn: &Connection, profile: &Profile, policy: &Policy) -> Result<Vec<Finding>, HistoryError> {
    require_tables(conn, profile, &["history_items", "history_visits"])?;
    find_rows(conn, policy).map_err(HistoryError::sqlite(&profile.db))
}

fn find_rows(conn: &Connection, policy: &Policy) -> rusqlite::Result<Vec<Finding>> {
    let mut found = Vec::new();
    let mut stmt = conn.prepare("SELECT id, url FROM history_items")?;
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
            last_visit: None,
            bookmarked: false,
        });
    }
    let mut visits = conn.prepare("SELECT count(*), max(visit_time) FROM history_visits WHERE history_item = ?1")?;
    for f in &mut found {
        let (count, last) = visits.query_row([f.id], |r| {
            let last = match r.get_ref(1)? {
                rusqlite::types::ValueRef::Real(x) => Some(x),
                rusqlite::types::ValueRef::Integer(i) => Some(i as f64),
                _ => None,
            };
            Ok((int_or(r, 0, 0)?, last))
        })?;
        f.visits = count.max(0) as u64;
        f.last_visit = last.and_then(time::safari);
    }
    Ok(found)
}

/// Removes `found` and its visits, inside the caller's transaction.
pub fn delete(
    conn: &Connection,
    profile: &Profile,
    _policy: &Policy,
    found: &[Finding],
) -> Result<Removed, HistoryError> {
    delete_rows(conn, found).map_err(HistoryError::sqlite(&profile.db))
}

fn delete_rows(conn: &Connection, found: &[Finding]) -> rusqlite::Result<Removed> {
    temp_ids(conn, "weerwal_items", found.iter().map(|f| f.id))?;
    let visit_ids: Vec<i64> = {
        let mut stmt = conn.prepare("SELECT id FROM history_visits WHERE history_item IN temp.weerwal_items")?;
        let ids = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
        ids
    };
    temp_ids(conn, "weerwal_visits", visit_ids)?;
    for column in ["redirect_source", "redirect_destination"] {
        if has_column(conn, "history_visits", column)? {
            conn.execute(
                &format!(
                    "UPDATE history_visits SET {column} = NULL \
                     WHERE {column} IN temp.weerwal_visits AND id NOT IN temp.weerwal_visits"
                ),
                [],
            )?;
        }
    }
    let visits = conn.execute("DELETE FROM history_visits WHERE id IN temp.weerwal_visits", [])? as u64;
    if has_table(conn, "history_items_to_tags")? {
        conn.execute("DELETE FROM history_items_to_tags WHERE history_item IN temp.weerwal_items", [])?;
    }
    let entries = conn.execute("DELETE FROM history_items WHERE id IN temp.weerwal_items", [])? as u64;
    Ok(Removed { entries, visits, icon_links: 0 })
}
