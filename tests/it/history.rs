//! `weerwal history` against databases built from each browser's real schema:
//! Chromium's `History` and `Favicons` (as Chromium 156 creates them),
//! Firefox's `places.sqlite` and `favicons.sqlite` (as Firefox ESR 153 creates
//! them) and Safari's `History.db` (macOS 26). Every purge
//! is checked row for row against the same database changed by hand, so
//! "removes exactly the banned entries and leaves every other row alone" is
//! tested, not assumed. Chromium and Firefox themselves writing a profile are
//! tested in `tests/it/history_browsers.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::types::ValueRef;
use rusqlite::Connection;

use weerwal::history::cli::{self, BrowserChoice, Format, HistoryCommand, PurgeArgs, SelectArgs};
use weerwal::history::report::{by_host, HostLine};
use weerwal::history::{purge_profile, scan_profile, Browser, Env, HistoryError, Os, Profile, PurgeOptions};
use weerwal::policy::{load_embedded, Policy, Zone};

// Chromium's schema is shared with tests/it/cli.rs, which runs the binary on it.
use crate::common::history_fixtures;
use history_fixtures::chrome_us;

fn policy() -> Policy {
    load_embedded(&Zone::default()).expect("embedded policy").0
}

// ---------------------------------------------------------------- fixtures

/// 2024-01-01T00:00:00Z in seconds since 1970.
const T0: i64 = 1_704_067_200;

fn firefox_us(unix: i64) -> i64 {
    unix * 1_000_000
}

fn safari_s(unix: i64) -> f64 {
    (unix - 978_307_200) as f64 + 0.25
}

/// Writes a Chromium `History` with banned, allowed and tricky entries.
fn chrome_history(path: &Path) {
    let c = history_fixtures::empty_chrome_history(path);
    let urls: &[(i64, &str, i64)] = &[
        (1, "https://aliexpress.com/item/1005.html", 100),
        (2, "https://nl.aliexpress.com/category/phones", 200),
        (3, "https://example.org/news", 300),
        (4, "https://www.tiktok.com/@gemeente", 400),
        (5, "chrome://settings/", 410),
        (6, "https://notaliexpress.com/", 420),
        (7, "https://aliexpress.com.evil.net/", 430),
        (8, "http://[::1]:8080/", 440),
        (9, "https://user@ALIEXPRESS.US:8443/x", 500),
        (10, "https://www.google.com/search?q=aliexpress", 600),
        (11, "https://ali%65xpress.com/", 610),
        (12, "file:///home/raad/aliexpress.com/index.html", 620),
    ];
    for (id, url, t) in urls {
        c.execute(
            "INSERT INTO urls (id, url, title, visit_count, typed_count, last_visit_time, hidden) VALUES (?1, ?2, 'title', 1, 0, ?3, 0)",
            rusqlite::params![id, url, chrome_us(T0 + t)],
        )
        .unwrap();
    }
    // (id, url, time, from_visit, opener_visit)
    let visits: &[(i64, i64, i64, i64, i64)] = &[
        (1, 1, 50, 0, 0),
        (2, 1, 100, 0, 0),
        (3, 3, 110, 2, 0),
        (4, 2, 200, 3, 0),
        (5, 3, 300, 4, 0),
        (6, 4, 400, 5, 0),
        (7, 6, 420, 6, 6),
        (8, 9, 500, 0, 0),
        (9, 10, 600, 0, 0),
        (10, 5, 410, 0, 0),
        (11, 7, 430, 0, 0),
        (12, 8, 440, 0, 0),
        (13, 11, 610, 0, 0),
        (14, 12, 620, 0, 0),
    ];
    for (id, url, t, from, opener) in visits {
        c.execute(
            "INSERT INTO visits (id, url, visit_time, from_visit, transition, segment_id, opener_visit) VALUES (?1, ?2, ?3, ?4, 805306368, 0, ?5)",
            rusqlite::params![id, url, chrome_us(T0 + t), from, opener],
        )
        .unwrap();
    }
    c.execute_batch(&format!(
        "INSERT INTO visit_source VALUES (1, 0), (3, 0), (8, 1);
         INSERT INTO keyword_search_terms VALUES (2, 1, 'Phone Case', 'phone case'), (1, 10, 'aliexpress', 'aliexpress');
         INSERT INTO segments VALUES (1, 'http://aliexpress.com/', 1), (2, 'http://example.org/', 3);
         INSERT INTO segment_usage VALUES (1, 1, 13349000000000000, 2), (2, 2, 13349000000000000, 2);
         INSERT INTO content_annotations (visit_id, annotation_flags, has_url_keyed_image) VALUES (2, 0, 0), (3, 0, 0);
         INSERT INTO context_annotations (visit_id, context_annotation_flags) VALUES (2, 0), (3, 0);
         INSERT INTO clusters VALUES (1, 1, 'shopping', 'shopping', 1, '', 0);
         INSERT INTO clusters_and_visits (cluster_id, visit_id, url_for_deduping, normalized_url, url_for_display)
           VALUES (1, 2, 'aliexpress.com/item', 'https://aliexpress.com/item/1005.html', 'aliexpress.com'),
                  (1, 3, 'example.org/news', 'https://example.org/news', 'example.org');
         INSERT INTO cluster_visit_duplicates VALUES (2, 1), (3, 9);
         INSERT INTO visited_links VALUES
           (1, 3, 'https://aliexpress.com/item/1005.html', 'https://aliexpress.com/item/1005.html', 1),
           (2, 1, 'https://example.org/news', 'https://example.org/news', 1),
           (3, 6, 'https://example.org/news', 'https://example.org/news', 1);
         INSERT INTO history_sync_metadata VALUES ({v2}, x'01'), ({v3}, x'02');
         INSERT INTO journeys VALUES ('j1', 'Shopping', NULL, NULL, NULL, 0);
         INSERT INTO journey_history_entries VALUES ('j1', {v2}), ('j1', {v3});",
        v2 = chrome_us(T0 + 100),
        v3 = chrome_us(T0 + 110),
    ))
    .unwrap();
}

/// The fixture after a correct purge, written by hand.
const CHROME_EXPECTED_PURGE: &str = "
DELETE FROM visits WHERE id IN (1, 2, 4, 6, 8);
UPDATE visits SET from_visit = 0 WHERE id IN (3, 5, 7);
UPDATE visits SET opener_visit = 0 WHERE id = 7;
DELETE FROM visit_source WHERE id IN (1, 8);
DELETE FROM keyword_search_terms WHERE url_id = 1;
DELETE FROM segment_usage WHERE segment_id = 1;
DELETE FROM segments WHERE id = 1;
DELETE FROM content_annotations WHERE visit_id = 2;
DELETE FROM context_annotations WHERE visit_id = 2;
DELETE FROM clusters_and_visits WHERE visit_id = 2;
DELETE FROM cluster_visit_duplicates WHERE visit_id = 2;
DELETE FROM visited_links WHERE id IN (1, 2);
DELETE FROM history_sync_metadata WHERE storage_key = 13348540900000000;
DELETE FROM journey_history_entries WHERE visit_timestamp_micros = 13348540900000000;
DELETE FROM urls WHERE id IN (1, 2, 4, 9);
";

/// Chromium 156's `Favicons` database.
const CHROME_FAVICONS_SCHEMA: &str = "
CREATE TABLE meta(key LONGVARCHAR NOT NULL UNIQUE PRIMARY KEY, value LONGVARCHAR);
CREATE TABLE icon_mapping(id INTEGER PRIMARY KEY,page_url LONGVARCHAR NOT NULL,icon_id INTEGER,page_url_type INTEGER DEFAULT 0);
CREATE TABLE favicons(id INTEGER PRIMARY KEY,url LONGVARCHAR NOT NULL,icon_type INTEGER DEFAULT 1);
CREATE TABLE favicon_bitmaps(id INTEGER PRIMARY KEY,icon_id INTEGER NOT NULL,last_updated INTEGER DEFAULT 0,image_data BLOB,width INTEGER DEFAULT 0,height INTEGER DEFAULT 0,last_requested INTEGER DEFAULT 0);
CREATE INDEX icon_mapping_page_url_idx ON icon_mapping(page_url);
CREATE INDEX icon_mapping_icon_id_idx ON icon_mapping(icon_id);
CREATE INDEX favicons_url ON favicons(url);
CREATE INDEX favicon_bitmaps_icon_id ON favicon_bitmaps(icon_id);
";

/// `Favicons` beside the `History` of [`chrome_history`]: icons of banned
/// pages, of allowed pages, one banned-host icon an allowed page uses, and
/// one unused banned-host icon.
fn chrome_favicons(path: &Path) {
    let c = Connection::open(path).unwrap();
    c.execute_batch(CHROME_FAVICONS_SCHEMA).unwrap();
    c.execute_batch(
        "INSERT INTO meta VALUES ('version', '8'), ('last_compatible_version', '7');
         INSERT INTO favicons VALUES (1, 'https://aliexpress.com/favicon.ico', 1), (2, 'https://example.org/favicon.ico', 1),
           (3, 'https://aliexpress.com/shared-icon.ico', 1), (4, 'https://www.tiktok.com/favicon.ico', 1),
           (5, 'https://aliexpress.com/unused.ico', 1);
         INSERT INTO favicon_bitmaps (id, icon_id, image_data, width, height) VALUES
           (1, 1, x'89504e47', 16, 16), (2, 2, x'89504e47', 16, 16), (3, 3, x'89504e47', 16, 16),
           (4, 4, x'89504e47', 16, 16), (5, 5, x'89504e47', 16, 16), (6, 1, x'89504e47', 32, 32);
         INSERT INTO icon_mapping VALUES (1, 'https://aliexpress.com/item/1005.html', 1, 0), (2, 'https://example.org/news', 2, 0),
           (3, 'https://nl.aliexpress.com/category/phones', 1, 0), (4, 'https://example.org/shop', 3, 0),
           (5, 'https://www.tiktok.com/@gemeente', 4, 0);",
    )
    .unwrap();
}

const CHROME_FAVICONS_EXPECTED_PURGE: &str = "
DELETE FROM icon_mapping WHERE id IN (1, 3, 5);
DELETE FROM favicon_bitmaps WHERE icon_id IN (1, 4, 5);
DELETE FROM favicons WHERE id IN (1, 4, 5);
";

/// The `places.sqlite` schema Firefox ESR 153 creates (user_version 86).
const FIREFOX_SCHEMA: &str = "
CREATE TABLE moz_origins ( id INTEGER PRIMARY KEY, prefix TEXT NOT NULL, host TEXT NOT NULL, frecency INTEGER NOT NULL, recalc_frecency INTEGER NOT NULL DEFAULT 0, alt_frecency INTEGER, recalc_alt_frecency INTEGER NOT NULL DEFAULT 0, block_until_ms INTEGER, block_pages_until_ms INTEGER, UNIQUE (prefix, host) );
CREATE TABLE moz_places (   id INTEGER PRIMARY KEY, url LONGVARCHAR, title LONGVARCHAR, rev_host LONGVARCHAR, visit_count INTEGER DEFAULT 0, hidden INTEGER DEFAULT 0 NOT NULL, typed INTEGER DEFAULT 0 NOT NULL, frecency INTEGER DEFAULT -1 NOT NULL, last_visit_date INTEGER , guid TEXT, foreign_count INTEGER DEFAULT 0 NOT NULL, url_hash INTEGER DEFAULT 0 NOT NULL , description TEXT, preview_image_url TEXT, site_name TEXT, origin_id INTEGER REFERENCES moz_origins(id), recalc_frecency INTEGER NOT NULL DEFAULT 0, alt_frecency INTEGER, recalc_alt_frecency INTEGER NOT NULL DEFAULT 0);
CREATE TABLE moz_places_extra (  place_id INTEGER PRIMARY KEY NOT NULL, sync_json TEXT, FOREIGN KEY (place_id) REFERENCES moz_places(id) ON DELETE CASCADE );
CREATE INDEX moz_places_url_hashindex ON moz_places (url_hash);
CREATE INDEX moz_places_hostindex ON moz_places (rev_host);
CREATE INDEX moz_places_visitcount ON moz_places (visit_count);
CREATE INDEX moz_places_frecencyindex ON moz_places (frecency);
CREATE INDEX moz_places_lastvisitdateindex ON moz_places (last_visit_date);
CREATE UNIQUE INDEX moz_places_guid_uniqueindex ON moz_places (guid);
CREATE INDEX moz_places_originidindex ON moz_places (origin_id);
CREATE INDEX moz_places_altfrecencyindex ON moz_places (alt_frecency);
CREATE TABLE moz_historyvisits (  id INTEGER PRIMARY KEY, from_visit INTEGER, place_id INTEGER, visit_date INTEGER, visit_type INTEGER, session INTEGER, source INTEGER DEFAULT 0 NOT NULL, triggeringPlaceId INTEGER);
CREATE TABLE moz_historyvisits_extra (  visit_id INTEGER PRIMARY KEY NOT NULL, sync_json TEXT, FOREIGN KEY (visit_id) REFERENCES moz_historyvisits(id) ON   DELETE CASCADE);
CREATE INDEX moz_historyvisits_placedateindex ON moz_historyvisits (place_id, visit_date);
CREATE INDEX moz_historyvisits_fromindex ON moz_historyvisits (from_visit);
CREATE INDEX moz_historyvisits_dateindex ON moz_historyvisits (visit_date);
CREATE TABLE moz_inputhistory (  place_id INTEGER NOT NULL, input LONGVARCHAR NOT NULL, use_count INTEGER, PRIMARY KEY (place_id, input));
CREATE TABLE moz_bookmarks (  id INTEGER PRIMARY KEY, type INTEGER, fk INTEGER DEFAULT NULL, parent INTEGER, position INTEGER, title LONGVARCHAR, keyword_id INTEGER, folder_type TEXT, dateAdded INTEGER, lastModified INTEGER, guid TEXT, syncStatus INTEGER NOT NULL DEFAULT 0, syncChangeCounter INTEGER NOT NULL DEFAULT 1);
CREATE TABLE moz_bookmarks_deleted (  guid TEXT PRIMARY KEY, dateRemoved INTEGER NOT NULL DEFAULT 0);
CREATE INDEX moz_bookmarks_itemindex ON moz_bookmarks (fk, type);
CREATE INDEX moz_bookmarks_parentindex ON moz_bookmarks (parent, position);
CREATE INDEX moz_bookmarks_itemlastmodifiedindex ON moz_bookmarks (fk, lastModified);
CREATE INDEX moz_bookmarks_dateaddedindex ON moz_bookmarks (dateAdded);
CREATE UNIQUE INDEX moz_bookmarks_guid_uniqueindex ON moz_bookmarks (guid);
CREATE TABLE moz_keywords (  id INTEGER PRIMARY KEY AUTOINCREMENT, keyword TEXT UNIQUE, place_id INTEGER, post_data TEXT);
CREATE UNIQUE INDEX moz_keywords_placepostdata_uniqueindex ON moz_keywords (place_id, post_data);
CREATE TABLE moz_anno_attributes (  id INTEGER PRIMARY KEY, name VARCHAR(32) UNIQUE NOT NULL);
CREATE TABLE moz_annos (  id INTEGER PRIMARY KEY, place_id INTEGER NOT NULL, anno_attribute_id INTEGER, content LONGVARCHAR, flags INTEGER DEFAULT 0, expiration INTEGER DEFAULT 0, type INTEGER DEFAULT 0, dateAdded INTEGER DEFAULT 0, lastModified INTEGER DEFAULT 0);
CREATE UNIQUE INDEX moz_annos_placeattributeindex ON moz_annos (place_id, anno_attribute_id);
CREATE TABLE moz_items_annos (  id INTEGER PRIMARY KEY, item_id INTEGER NOT NULL, anno_attribute_id INTEGER, content LONGVARCHAR, flags INTEGER DEFAULT 0, expiration INTEGER DEFAULT 0, type INTEGER DEFAULT 0, dateAdded INTEGER DEFAULT 0, lastModified INTEGER DEFAULT 0);
CREATE UNIQUE INDEX moz_items_annos_itemattributeindex ON moz_items_annos (item_id, anno_attribute_id);
CREATE TABLE moz_meta (key TEXT PRIMARY KEY, value NOT NULL) WITHOUT ROWID ;
CREATE TABLE moz_places_metadata (id INTEGER PRIMARY KEY, place_id INTEGER NOT NULL, referrer_place_id INTEGER, created_at INTEGER NOT NULL DEFAULT 0, updated_at INTEGER NOT NULL DEFAULT 0, total_view_time INTEGER NOT NULL DEFAULT 0, typing_time INTEGER NOT NULL DEFAULT 0, key_presses INTEGER NOT NULL DEFAULT 0, scrolling_time INTEGER NOT NULL DEFAULT 0, scrolling_distance INTEGER NOT NULL DEFAULT 0, document_type INTEGER NOT NULL DEFAULT 0, search_query_id INTEGER, FOREIGN KEY (place_id) REFERENCES moz_places(id) ON DELETE CASCADE, FOREIGN KEY (referrer_place_id) REFERENCES moz_places(id) ON DELETE CASCADE, FOREIGN KEY(search_query_id) REFERENCES moz_places_metadata_search_queries(id) ON DELETE CASCADE CHECK(place_id != referrer_place_id) );
CREATE UNIQUE INDEX moz_places_metadata_placecreated_uniqueindex ON moz_places_metadata (place_id, created_at);
CREATE INDEX moz_places_metadata_referrerindex ON moz_places_metadata (referrer_place_id);
CREATE TABLE moz_places_metadata_search_queries ( id INTEGER PRIMARY KEY, terms TEXT NOT NULL UNIQUE );
CREATE TABLE moz_previews_tombstones (   hash TEXT PRIMARY KEY ) WITHOUT ROWID;
CREATE TABLE moz_newtab_story_click (   feature TEXT NOT NULL,   timestamp_s INTEGER NOT NULL,   card_format_enum INTEGER NOT NULL,   position INTEGER NOT NULL,   section_position INTEGER NOT NULL,   feature_value REAL NOT NULL DEFAULT 1 );
CREATE TABLE moz_newtab_story_impression (   feature TEXT NOT NULL,   timestamp_s INTEGER NOT NULL,   card_format_enum INTEGER NOT NULL,   position INTEGER NOT NULL,   section_position INTEGER NOT NULL,   feature_value REAL NOT NULL DEFAULT 1 );
CREATE INDEX moz_newtab_story_click_newtab_click_timestampindex ON moz_newtab_story_click (timestamp_s);
CREATE INDEX moz_newtab_story_impression_newtab_impression_timestampindex ON moz_newtab_story_impression (timestamp_s);
CREATE TABLE moz_newtab_shortcuts_interaction (   id INTEGER PRIMARY KEY,   place_id INTEGER NOT NULL REFERENCES moz_places(id) ON DELETE CASCADE,   event_type INTEGER NOT NULL,   timestamp_s INTEGER NOT NULL,   pinned INTEGER NOT NULL CHECK (pinned IN (0, 1)),   tile_position INTEGER NOT NULL);
CREATE INDEX moz_newtab_shortcuts_interaction_timestampindex ON moz_newtab_shortcuts_interaction (timestamp_s);
CREATE INDEX moz_newtab_shortcuts_interaction_placeidindex ON moz_newtab_shortcuts_interaction (place_id);
";

/// Writes a Firefox `places.sqlite` (WAL, as Firefox keeps it).
fn firefox_places(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let c = Connection::open(path).unwrap();
    c.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(())).unwrap();
    c.execute_batch(FIREFOX_SCHEMA).unwrap();
    c.execute_batch("PRAGMA user_version = 86;").unwrap();
    c.execute_batch(
        "INSERT INTO moz_origins (id, prefix, host, frecency) VALUES
           (1, 'https://', 'aliexpress.com', 100), (2, 'https://', 'example.org', 100),
           (3, 'https://', 'm.aliexpress.com', 50), (4, 'https://', 'www.tiktok.com', 10);",
    )
    .unwrap();
    // (id, url, visit_count, last visit, foreign_count, origin)
    type Place<'a> = (i64, &'a str, i64, Option<i64>, i64, Option<i64>);
    let places: &[Place] = &[
        (1, "https://aliexpress.com/item/1", 2, Some(100), 0, Some(1)),
        (2, "https://aliexpress.com/", 1, Some(150), 1, Some(1)),
        (3, "https://example.org/", 2, Some(300), 0, Some(2)),
        (4, "https://m.aliexpress.com/p?id=7", 1, Some(200), 0, Some(3)),
        (5, "https://www.tiktok.com/@x", 0, None, 0, Some(4)),
        (6, "place:sort=8&maxResults=10", 0, None, 1, None),
        (7, "https://aliexpress.com/bookmark-only", 0, None, 1, Some(1)),
    ];
    for (id, url, vc, last, fc, origin) in places {
        c.execute(
            "INSERT INTO moz_places (id, url, title, rev_host, visit_count, typed, frecency, last_visit_date, guid, foreign_count, url_hash, origin_id)
             VALUES (?1, ?2, 't', 'moc.sserpxeila.', ?3, 1, 100, ?4, ?5, ?6, 0, ?7)",
            rusqlite::params![id, url, vc, last.map(|t| firefox_us(T0 + t)), format!("guid{id}"), fc, origin],
        )
        .unwrap();
    }
    // (id, from, place, time, triggering place)
    let visits: &[(i64, i64, i64, i64, Option<i64>)] = &[
        (1, 0, 1, 50, None),
        (2, 0, 1, 100, None),
        (3, 2, 3, 110, None),
        (4, 0, 2, 150, None),
        (5, 3, 4, 200, None),
        (6, 5, 3, 300, Some(4)),
    ];
    for (id, from, place, t, trig) in visits {
        c.execute(
            "INSERT INTO moz_historyvisits (id, from_visit, place_id, visit_date, visit_type, session, source, triggeringPlaceId)
             VALUES (?1, ?2, ?3, ?4, 1, 0, 0, ?5)",
            rusqlite::params![id, from, place, firefox_us(T0 + t), trig],
        )
        .unwrap();
    }
    c.execute_batch(
        "INSERT INTO moz_inputhistory VALUES (1, 'ali', 3.0), (3, 'exa', 1.0);
         INSERT INTO moz_anno_attributes VALUES (1, 'test/anno');
         INSERT INTO moz_annos (id, place_id, anno_attribute_id, content) VALUES (1, 1, 1, 'x'), (2, 3, 1, 'y');
         INSERT INTO moz_places_metadata (id, place_id, referrer_place_id, created_at) VALUES (1, 1, NULL, 1), (2, 3, 1, 2), (3, 3, NULL, 3);
         INSERT INTO moz_bookmarks (id, type, fk, parent, position, title, guid) VALUES
           (1, 2, NULL, 0, 0, '', 'root________'), (2, 1, 2, 1, 0, 'AliExpress', 'bookmark0001'),
           (3, 1, 7, 1, 1, 'Old', 'bookmark0002'), (4, 1, 6, 1, 2, 'Recent', 'bookmark0003');
         INSERT INTO moz_places_extra VALUES (1, '{}'), (3, '{}');
         INSERT INTO moz_historyvisits_extra VALUES (1, '{}'), (3, '{}');
         INSERT INTO moz_meta VALUES ('origin_frecency_count', 4);
         INSERT INTO moz_newtab_shortcuts_interaction VALUES (1, 1, 0, 1700000000, 0, 0), (2, 3, 0, 1700000000, 1, 1);",
    )
    .unwrap();
}

const FIREFOX_EXPECTED_PURGE: &str = "
DELETE FROM moz_historyvisits WHERE id IN (1, 2, 4, 5);
UPDATE moz_historyvisits SET from_visit = 0 WHERE id IN (3, 6);
UPDATE moz_historyvisits SET triggeringPlaceId = NULL WHERE id = 6;
DELETE FROM moz_historyvisits_extra WHERE visit_id = 1;
UPDATE moz_places SET visit_count = 0, last_visit_date = NULL, typed = 0, recalc_frecency = 1 WHERE id = 2;
DELETE FROM moz_inputhistory WHERE place_id = 1;
DELETE FROM moz_annos WHERE place_id = 1;
DELETE FROM moz_places_metadata WHERE id IN (1, 2);
DELETE FROM moz_places_extra WHERE place_id = 1;
DELETE FROM moz_newtab_shortcuts_interaction WHERE place_id = 1;
DELETE FROM moz_places WHERE id IN (1, 4, 5);
DELETE FROM moz_origins WHERE id IN (3, 4);
";

/// The `favicons.sqlite` schema Firefox ESR 153 creates.
const FIREFOX_FAVICONS_SCHEMA: &str = "
CREATE TABLE moz_icons ( id INTEGER PRIMARY KEY, icon_url TEXT NOT NULL, fixed_icon_url_hash INTEGER NOT NULL, width INTEGER NOT NULL DEFAULT 0, root INTEGER NOT NULL DEFAULT 0, color INTEGER, expire_ms INTEGER NOT NULL DEFAULT 0, flags INTEGER NOT NULL DEFAULT 0, data BLOB );
CREATE TABLE moz_pages_w_icons ( id INTEGER PRIMARY KEY, page_url TEXT NOT NULL, page_url_hash INTEGER NOT NULL ) ;
CREATE TABLE moz_icons_to_pages ( page_id INTEGER NOT NULL, icon_id INTEGER NOT NULL, expire_ms INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (page_id, icon_id), FOREIGN KEY (page_id) REFERENCES moz_pages_w_icons ON DELETE CASCADE, FOREIGN KEY (icon_id) REFERENCES moz_icons ON DELETE CASCADE ) WITHOUT ROWID ;
CREATE INDEX moz_icons_iconurlhashindex ON moz_icons (fixed_icon_url_hash);
CREATE INDEX moz_pages_w_icons_urlhashindex ON moz_pages_w_icons (page_url_hash);
";

fn firefox_favicons(path: &Path) {
    let c = Connection::open(path).unwrap();
    c.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(())).unwrap();
    c.execute_batch(FIREFOX_FAVICONS_SCHEMA).unwrap();
    c.execute_batch(
        "INSERT INTO moz_pages_w_icons VALUES (1, 'https://aliexpress.com/item/1', 11), (2, 'https://example.org/', 12),
           (3, 'https://m.aliexpress.com/p?id=7', 13);
         INSERT INTO moz_icons (id, icon_url, fixed_icon_url_hash, width, root, data) VALUES
           (1, 'https://aliexpress.com/favicon.ico', 21, 16, 1, x'00'), (2, 'https://example.org/favicon.ico', 22, 16, 1, x'00'),
           (3, 'https://m.aliexpress.com/icon.png', 23, 32, 0, x'00');
         INSERT INTO moz_icons_to_pages (page_id, icon_id) VALUES (1, 1), (2, 2), (3, 3), (3, 1);",
    )
    .unwrap();
}

const FIREFOX_FAVICONS_EXPECTED_PURGE: &str = "
DELETE FROM moz_icons_to_pages WHERE page_id IN (1, 3);
DELETE FROM moz_pages_w_icons WHERE id IN (1, 3);
DELETE FROM moz_icons WHERE id IN (1, 3);
";

/// Safari's `History.db` (macOS 26), tables and triggers as Safari creates them.
const SAFARI_SCHEMA: &str = "
CREATE TABLE history_client_versions (client_version INTEGER PRIMARY KEY,last_seen REAL NOT NULL);
CREATE TABLE history_event_listeners (listener_name TEXT PRIMARY KEY NOT NULL UNIQUE,last_seen REAL NOT NULL);
CREATE TABLE history_events (id INTEGER PRIMARY KEY AUTOINCREMENT,event_type TEXT NOT NULL,event_time REAL NOT NULL,pending_listeners TEXT NOT NULL,value BLOB);
CREATE TABLE history_items (id INTEGER PRIMARY KEY AUTOINCREMENT,url TEXT NOT NULL UNIQUE,domain_expansion TEXT NULL,visit_count INTEGER NOT NULL,daily_visit_counts BLOB NOT NULL,weekly_visit_counts BLOB NULL,autocomplete_triggers BLOB NULL,should_recompute_derived_visit_counts INTEGER NOT NULL,visit_count_score INTEGER NOT NULL,status_code INTEGER NOT NULL DEFAULT 0);
CREATE TABLE history_items_to_tags (history_item INTEGER NOT NULL,tag_id INTEGER NOT NULL,timestamp REAL NOT NULL,FOREIGN KEY(tag_id) REFERENCES history_tags(id) ON DELETE CASCADE,FOREIGN KEY(history_item) REFERENCES history_items(id) ON DELETE CASCADE,UNIQUE(history_item, tag_id) ON CONFLICT REPLACE);
CREATE TABLE history_tags (id INTEGER PRIMARY KEY,type INTEGER NOT NULL,level INTEGER NOT NULL,identifier TEXT NOT NULL,title TEXT NOT NULL,modification_timestamp REAL NOT NULL,item_count INTEGER NOT NULL DEFAULT 0);
CREATE TABLE history_tombstones (id INTEGER PRIMARY KEY AUTOINCREMENT,start_time REAL NOT NULL,end_time REAL NOT NULL,url TEXT,generation INTEGER NOT NULL DEFAULT 0, udid TEXT, attributes INTEGER NOT NULL DEFAULT 0);
CREATE TABLE history_visits (id INTEGER PRIMARY KEY AUTOINCREMENT,history_item INTEGER NOT NULL REFERENCES history_items(id) ON DELETE CASCADE,visit_time REAL NOT NULL,title TEXT NULL,load_successful BOOLEAN NOT NULL DEFAULT 1,http_non_get BOOLEAN NOT NULL DEFAULT 0,synthesized BOOLEAN NOT NULL DEFAULT 0,redirect_source INTEGER NULL UNIQUE REFERENCES history_visits(id) ON DELETE CASCADE,redirect_destination INTEGER NULL UNIQUE REFERENCES history_visits(id) ON DELETE CASCADE,origin INTEGER NOT NULL DEFAULT 0,generation INTEGER NOT NULL DEFAULT 0,attributes INTEGER NOT NULL DEFAULT 0,score INTEGER NOT NULL DEFAULT 0);
CREATE TABLE metadata (key TEXT NOT NULL UNIQUE, value);
CREATE INDEX history_items__domain_expansion ON history_items (domain_expansion);
CREATE INDEX history_tombstones__end_time ON history_tombstones (end_time);
CREATE INDEX history_tombstones__generation ON history_tombstones (generation);
CREATE INDEX history_visits__last_visit ON history_visits (history_item, visit_time DESC, synthesized ASC);
CREATE INDEX history_visits__origin ON history_visits (origin, generation);
CREATE TRIGGER decrement_count_on_delete BEFORE DELETE ON history_items_to_tags BEGIN  UPDATE history_tags SET item_count = item_count - 1 WHERE id = OLD.tag_id;END;
CREATE TRIGGER increment_count_on_insert AFTER INSERT ON history_items_to_tags BEGIN  UPDATE history_tags SET item_count = item_count + 1 WHERE id = NEW.tag_id;END;
";

fn safari_history(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let c = Connection::open(path).unwrap();
    c.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(())).unwrap();
    c.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
    c.execute_batch(SAFARI_SCHEMA).unwrap();
    let items: &[(i64, &str)] = &[
        (1, "https://aliexpress.com/"),
        (2, "https://nl.aliexpress.com/item/1.html"),
        (3, "https://example.org/"),
        (4, "https://www.tiktok.com/@x"),
        (5, "http://tiktok.com.example.org/"),
    ];
    for (id, url) in items {
        c.execute(
            "INSERT INTO history_items (id, url, domain_expansion, visit_count, daily_visit_counts, should_recompute_derived_visit_counts, visit_count_score)
             VALUES (?1, ?2, NULL, 1, x'00', 0, 100)",
            rusqlite::params![id, url],
        )
        .unwrap();
    }
    // (id, item, time, redirect_source, redirect_destination): aliexpress.com
    // redirects to nl.aliexpress.com, which redirects to example.org.
    type Visit = (i64, i64, i64, Option<i64>, Option<i64>);
    let visits: &[Visit] = &[
        (1, 1, 100, None, Some(2)),
        (2, 2, 101, Some(1), Some(3)),
        (3, 3, 102, Some(2), None),
        (4, 3, 300, None, None),
        (5, 4, 400, None, None),
        (6, 5, 500, None, None),
    ];
    for (id, item, t, src, dst) in visits {
        c.execute(
            "INSERT INTO history_visits (id, history_item, visit_time, title, redirect_source, redirect_destination)
             VALUES (?1, ?2, ?3, 't', ?4, ?5)",
            rusqlite::params![id, item, safari_s(T0 + t), src, dst],
        )
        .unwrap();
    }
    c.execute_batch(
        "INSERT INTO history_tags VALUES (1, 0, 0, 'shopping', 'Shopping', 0, 0);
         INSERT INTO history_items_to_tags VALUES (1, 1, 0), (3, 1, 0);
         INSERT INTO metadata VALUES ('version', 20);",
    )
    .unwrap();
}

const SAFARI_EXPECTED_PURGE: &str = "
UPDATE history_visits SET redirect_source = NULL WHERE id = 3;
DELETE FROM history_visits WHERE id IN (1, 2, 5);
DELETE FROM history_items_to_tags WHERE history_item = 1;
DELETE FROM history_items WHERE id IN (1, 2, 4);
";

// ----------------------------------------------------------------- helpers

/// Every row of every table, as text, for comparing whole databases.
fn dump(db: &Path) -> BTreeMap<String, Vec<String>> {
    let c = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut out = BTreeMap::new();
    for t in tables {
        let mut stmt = c.prepare(&format!("SELECT * FROM \"{t}\"")).unwrap();
        let n = stmt.column_count();
        let mut rows: Vec<String> = stmt
            .query_map([], |r| {
                let cells: Vec<String> = (0..n)
                    .map(|i| match r.get_ref(i).unwrap() {
                        ValueRef::Null => "NULL".to_string(),
                        ValueRef::Integer(v) => v.to_string(),
                        ValueRef::Real(v) => format!("{v:?}"),
                        ValueRef::Text(t) => format!("{:?}", String::from_utf8_lossy(t)),
                        ValueRef::Blob(b) => format!("x'{}'", hex(b)),
                    })
                    .collect();
                Ok(cells.join("|"))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        rows.sort();
        out.insert(t, rows);
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A copy of `db` changed by `sql`: what a correct purge must produce.
fn expected_after(db: &Path, sql: &str) -> BTreeMap<String, Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("expected.sqlite");
    let src = Connection::open(db).unwrap();
    src.execute("VACUUM INTO ?1", [copy.to_str().unwrap()]).unwrap();
    drop(src);
    let c = Connection::open(&copy).unwrap();
    // rusqlite's bundled SQLite turns foreign keys on; the browsers' files
    // are written and purged with them off.
    c.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
    c.execute_batch(sql).unwrap();
    drop(c);
    dump(&copy)
}

fn integrity_ok(db: &Path) {
    let c = Connection::open(db).unwrap();
    let r: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(r, "ok");
}

fn hosts(lines: &[HostLine]) -> Vec<(&str, &str, usize, u64, Option<&str>)> {
    lines.iter().map(|l| (l.host.as_str(), l.app.as_str(), l.entries, l.visits, l.last_visit.as_deref())).collect()
}

fn backups(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".weerwal-backup-"))
        .collect();
    v.sort();
    v
}

// ------------------------------------------------------------------ Chrome

#[test]
fn chrome_scan_finds_exactly_the_banned_entries() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("Default/History");
    chrome_history(&db);
    let before = dump(&db);
    let scan = scan_profile(&Profile::new(Browser::Chrome, db.clone()), &policy()).unwrap();
    // Chrome's file is never read in place: the browser may be running.
    assert!(scan.copied);
    assert_eq!(
        hosts(&by_host(&scan.findings)),
        vec![
            ("aliexpress.com", "AliExpress", 1, 2, Some("2024-01-01T00:01:40Z")),
            ("aliexpress.us", "AliExpress", 1, 1, Some("2024-01-01T00:08:20Z")),
            ("nl.aliexpress.com", "AliExpress", 1, 1, Some("2024-01-01T00:03:20Z")),
            ("www.tiktok.com", "TikTok", 1, 1, Some("2024-01-01T00:06:40Z")),
        ]
    );
    assert_eq!(dump(&db), before, "a scan must not change the database");
}

#[test]
fn chrome_purge_removes_the_banned_entries_and_their_traces_only() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("Default/History");
    chrome_history(&db);
    let icons = dir.path().join("Default/Favicons");
    chrome_favicons(&icons);
    let before = dump(&db);
    let icons_before = dump(&icons);
    let expected = expected_after(&db, CHROME_EXPECTED_PURGE);
    let icons_expected = expected_after(&icons, CHROME_FAVICONS_EXPECTED_PURGE);
    let profile = Profile::new(Browser::Chrome, db.clone());
    let out = purge_profile(&profile, &policy(), PurgeOptions::default()).unwrap();
    assert_eq!(out.findings.len(), 4);
    assert_eq!((out.removed.entries, out.removed.visits, out.removed.icon_links), (4, 5, 3));
    assert_eq!(dump(&db), expected);
    assert_eq!(dump(&icons), icons_expected);
    integrity_ok(&db);
    integrity_ok(&icons);
    assert!(scan_profile(&profile, &policy()).unwrap().findings.is_empty());

    // The backups hold both databases as they were, and are private.
    let mut written = out.backups.clone();
    written.sort();
    assert_eq!(backups(db.parent().unwrap()), written);
    assert_eq!(out.backups.len(), 2);
    assert!(out.backups[0].to_string_lossy().contains("History.weerwal-backup-"));
    assert!(out.backups[1].to_string_lossy().contains("Favicons.weerwal-backup-"));
    assert_eq!(dump(&out.backups[0]), before);
    assert_eq!(dump(&out.backups[1]), icons_before);
    #[cfg(unix)]
    for backup in &out.backups {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(backup).unwrap().permissions().mode() & 0o777, 0o600);
    }

    // A second purge finds nothing and writes no more backups.
    let again = purge_profile(&profile, &policy(), PurgeOptions::default()).unwrap();
    assert!(again.findings.is_empty() && again.backups.is_empty());
    assert_eq!(backups(db.parent().unwrap()).len(), 2);
}

#[test]
fn purge_refuses_while_the_browser_holds_the_lock_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("Default/History");
    chrome_history(&db);
    let before = dump(&db);
    let profile = Profile::new(Browser::Chrome, db.clone());

    // The browser: an exclusive transaction, as Chrome's exclusive locking mode holds.
    let browser = Connection::open(&db).unwrap();
    browser.execute_batch("BEGIN EXCLUSIVE; UPDATE meta SET value = value WHERE key = 'version';").unwrap();

    let err = purge_profile(&profile, &policy(), PurgeOptions::default()).unwrap_err();
    assert!(matches!(err, HistoryError::Locked { browser: Browser::Chrome, .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("Google Chrome is still running") && msg.contains("Close every Google Chrome window"),
        "{msg}"
    );
    assert!(backups(db.parent().unwrap()).is_empty(), "no backup when refusing");

    // Scanning still works meanwhile, from a copy; the hot journal copied
    // along undoes the browser's uncommitted change in the copy.
    let scan = scan_profile(&profile, &policy()).unwrap();
    assert!(scan.copied);
    assert_eq!(scan.findings.len(), 4);

    // Safari's database, read in place, falls back to a copy when locked.
    let safari = dir.path().join("History.db");
    safari_history(&safari);
    let safari_browser = Connection::open(&safari).unwrap();
    safari_browser.query_row("PRAGMA locking_mode = EXCLUSIVE", [], |_| Ok(())).unwrap();
    safari_browser.execute_batch("BEGIN EXCLUSIVE; UPDATE metadata SET value = value;").unwrap();
    let scan = scan_profile(&Profile::new(Browser::Safari, safari.clone()), &policy()).unwrap();
    assert!(scan.copied);
    assert_eq!(scan.findings.len(), 3);
    drop(safari_browser);

    browser.execute_batch("ROLLBACK").unwrap();
    drop(browser);
    assert_eq!(dump(&db), before);

    // The browser holding only its icon database stops a purge as well.
    let icons = dir.path().join("Default/Favicons");
    chrome_favicons(&icons);
    let icons_before = dump(&icons);
    let browser = Connection::open(&icons).unwrap();
    browser.execute_batch("BEGIN EXCLUSIVE; UPDATE meta SET value = value;").unwrap();
    let err = purge_profile(&profile, &policy(), PurgeOptions::default()).unwrap_err();
    assert!(matches!(err, HistoryError::Locked { .. }), "{err:?}");
    browser.execute_batch("ROLLBACK").unwrap();
    drop(browser);
    assert_eq!(dump(&db), before);
    assert_eq!(dump(&icons), icons_before);
    assert!(backups(db.parent().unwrap()).is_empty(), "no backup when refusing");
}

#[test]
fn purge_refuses_while_a_wal_database_is_merely_open_elsewhere() {
    // Firefox and Safari use WAL; an idle browser holds no write lock, but
    // its open connection must still stop a purge.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("places.sqlite");
    firefox_places(&db);
    let before = dump(&db);
    let browser = Connection::open(&db).unwrap();
    let _: i64 = browser.query_row("SELECT count(*) FROM moz_places", [], |r| r.get(0)).unwrap();
    let err =
        purge_profile(&Profile::new(Browser::Firefox, db.clone()), &policy(), PurgeOptions::default()).unwrap_err();
    assert!(matches!(err, HistoryError::Locked { browser: Browser::Firefox, .. }), "{err:?}");
    drop(browser);
    assert_eq!(dump(&db), before);
}

#[test]
fn an_interrupted_purge_leaves_the_database_as_it_was() {
    // A failing statement injected at the first delete and at the last one:
    // in both cases nothing of the purge may remain.
    // Also in Chrome's icon database, whose deletes come between the two,
    // and in Safari's tag links, between its visits and its items (Safari's
    // first delete comes after it has already cleared the redirect links
    // of an allowed visit: that update must be undone as well).
    for (browser, file, table, when) in [
        (Browser::Chrome, "History", "visits", "first"),
        (Browser::Chrome, "Favicons", "favicons", "icons"),
        (Browser::Chrome, "History", "urls", "last"),
        (Browser::Safari, "History.db", "history_visits", "first"),
        (Browser::Safari, "History.db", "history_items_to_tags", "tags"),
        (Browser::Safari, "History.db", "history_items", "last"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("Default");
        let (db, icons) = match browser {
            Browser::Safari => {
                let db = folder.join("History.db");
                safari_history(&db);
                (db, None)
            }
            _ => {
                let db = folder.join("History");
                chrome_history(&db);
                chrome_favicons(&folder.join("Favicons"));
                (db, Some(folder.join("Favicons")))
            }
        };
        let c = Connection::open(folder.join(file)).unwrap();
        c.execute_batch(&format!(
            "CREATE TRIGGER weerwal_test_abort BEFORE DELETE ON {table} BEGIN SELECT RAISE(ABORT, 'injected failure'); END;"
        ))
        .unwrap();
        drop(c);
        let (before, icons_before) = (dump(&db), icons.as_deref().map(dump));
        let err =
            purge_profile(&Profile::new(browser, db.clone()), &policy(), PurgeOptions { backup: false }).unwrap_err();
        assert!(err.to_string().contains("injected failure"), "{browser} {when}: {err}");
        assert_eq!(dump(&db), before, "{browser} {when} statement failed: the history must be unchanged");
        integrity_ok(&db);
        if let Some(icons) = &icons {
            assert_eq!(Some(dump(icons)), icons_before, "{when} statement failed: the icons must be unchanged");
            integrity_ok(icons);
        }
    }
}

#[test]
fn a_missing_table_or_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("History");
    Connection::open(&db).unwrap().execute_batch("CREATE TABLE other (x);").unwrap();
    let err = scan_profile(&Profile::new(Browser::Edge, db), &policy()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: not a Microsoft Edge history database (table urls is missing)",
            dir.path().join("History").display()
        )
    );
    let err = scan_profile(&Profile::new(Browser::Chrome, dir.path().join("nope")), &policy()).unwrap_err();
    assert!(matches!(err, HistoryError::Io { .. }), "{err:?}");
    // Purging a missing file does not create one.
    assert!(purge_profile(&Profile::new(Browser::Chrome, dir.path().join("nope")), &policy(), PurgeOptions::default())
        .is_err());
    assert!(!dir.path().join("nope").exists());
}

// ----------------------------------------------------------------- Firefox

#[test]
fn firefox_scan_and_purge() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("abcd.default-release/places.sqlite");
    firefox_places(&db);
    let icons = dir.path().join("abcd.default-release/favicons.sqlite");
    firefox_favicons(&icons);
    let expected = expected_after(&db, FIREFOX_EXPECTED_PURGE);
    let icons_expected = expected_after(&icons, FIREFOX_FAVICONS_EXPECTED_PURGE);
    let profile = Profile::new(Browser::Firefox, db.clone());

    let scan = scan_profile(&profile, &policy()).unwrap();
    assert_eq!(
        hosts(&by_host(&scan.findings)),
        vec![
            // place 1 (2 visits) and the bookmarked place 2 (1 visit); the
            // bookmark without history (place 7) is not history.
            ("aliexpress.com", "AliExpress", 2, 3, Some("2024-01-01T00:02:30Z")),
            ("m.aliexpress.com", "AliExpress", 1, 1, Some("2024-01-01T00:03:20Z")),
            ("www.tiktok.com", "TikTok", 1, 0, None),
        ]
    );
    assert!(scan.findings.iter().any(|f| f.bookmarked));

    let out = purge_profile(&profile, &policy(), PurgeOptions { backup: false }).unwrap();
    assert_eq!((out.removed.entries, out.removed.visits, out.removed.icon_links), (4, 4, 3));
    assert!(out.backups.is_empty());
    assert!(backups(db.parent().unwrap()).is_empty());
    assert_eq!(dump(&db), expected);
    assert_eq!(dump(&icons), icons_expected);
    integrity_ok(&db);
    integrity_ok(&icons);
    assert!(scan_profile(&profile, &policy()).unwrap().findings.is_empty());
}

#[test]
fn firefox_purge_of_a_database_with_an_injected_failure_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("places.sqlite");
    firefox_places(&db);
    Connection::open(&db)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER t BEFORE DELETE ON moz_origins BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
        )
        .unwrap();
    let before = dump(&db);
    assert!(purge_profile(&Profile::new(Browser::Firefox, db.clone()), &policy(), PurgeOptions::default()).is_err());
    assert_eq!(dump(&db), before);
}

// ------------------------------------------------------------------ Safari

#[test]
fn safari_scan_and_purge_keep_the_allowed_end_of_a_redirect() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("Safari/History.db");
    safari_history(&db);
    let expected = expected_after(&db, SAFARI_EXPECTED_PURGE);
    let profile = Profile::new(Browser::Safari, db.clone());

    let scan = scan_profile(&profile, &policy()).unwrap();
    assert!(!scan.copied, "Safari's WAL database is read in place");
    assert_eq!(
        hosts(&by_host(&scan.findings)),
        vec![
            ("aliexpress.com", "AliExpress", 1, 1, Some("2024-01-01T00:01:40Z")),
            ("nl.aliexpress.com", "AliExpress", 1, 1, Some("2024-01-01T00:01:41Z")),
            ("www.tiktok.com", "TikTok", 1, 1, Some("2024-01-01T00:06:40Z")),
        ]
    );
    let out = purge_profile(&profile, &policy(), PurgeOptions::default()).unwrap();
    assert_eq!((out.removed.entries, out.removed.visits), (3, 3));
    assert_eq!(dump(&db), expected);
    // Safari's own trigger kept the tag's count right.
    let count: i64 = Connection::open(&db)
        .unwrap()
        .query_row("SELECT item_count FROM history_tags WHERE id = 1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 1);
    integrity_ok(&db);
}

#[test]
fn safari_purge_refuses_while_safari_has_the_history_open_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("Safari/History.db");
    safari_history(&db);
    let before = dump(&db);
    let profile = Profile::new(Browser::Safari, db.clone());
    let refused = |what: &str| {
        let err = purge_profile(&profile, &policy(), PurgeOptions::default()).unwrap_err();
        assert!(matches!(err, HistoryError::Locked { browser: Browser::Safari, .. }), "{what}: {err:?}");
        let msg = err.to_string();
        assert!(msg.contains("Safari is still running") && msg.contains("Safari > Quit"), "{what}: {msg}");
        assert!(backups(db.parent().unwrap()).is_empty(), "{what}: no backup when refusing");
    };

    // Safari writing: a write transaction on its WAL database.
    let safari = Connection::open(&db).unwrap();
    safari.execute_batch("BEGIN EXCLUSIVE; UPDATE metadata SET value = value;").unwrap();
    refused("while Safari writes");
    // The scan still works meanwhile (WAL readers do not wait for writers).
    assert_eq!(scan_profile(&profile, &policy()).unwrap().findings.len(), 3);
    safari.execute_batch("ROLLBACK").unwrap();

    // Safari idle with the database open holds no write lock; still refused.
    let _: i64 = safari.query_row("SELECT count(*) FROM history_items", [], |r| r.get(0)).unwrap();
    refused("while Safari has it open");
    drop(safari);
    assert_eq!(dump(&db), before);
    integrity_ok(&db);

    // Safari quit: the purge goes ahead.
    let out = purge_profile(&profile, &policy(), PurgeOptions::default()).unwrap();
    assert_eq!((out.removed.entries, out.removed.visits), (3, 3));
    assert_eq!(backups(db.parent().unwrap()).len(), 1);
}

// --------------------------------------------------------------------- CLI

fn select(profiles: Vec<PathBuf>, format: Format) -> SelectArgs {
    SelectArgs { browser: BrowserChoice::All, profiles, format }
}

fn execute(cmd: HistoryCommand, env: &Env) -> (u8, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = cli::execute(cmd, &policy(), env, &mut out, &mut err);
    (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
}

#[test]
fn cli_scan_exits_3_purge_cleans_scan_exits_0() {
    let home = tempfile::tempdir().unwrap();
    let env = Env::with_home(Os::Linux, home.path());
    let chrome = home.path().join(".config/google-chrome/Default/History");
    let firefox = home.path().join(".mozilla/firefox/abcd.default-release/places.sqlite");
    chrome_history(&chrome);
    firefox_places(&firefox);
    std::fs::write(
        home.path().join(".mozilla/firefox/profiles.ini"),
        "[Profile0]\nName=default-release\nIsRelative=1\nPath=abcd.default-release\n",
    )
    .unwrap();

    let (code, out, err) = execute(HistoryCommand::Scan(select(vec![], Format::Table)), &env);
    assert_eq!(code, 3, "{out}{err}");
    assert!(err.is_empty(), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("BROWSER") && lines[0].contains("LAST VISIT"), "{out}");
    let row = |browser: &str, host: &str| -> Vec<String> {
        let line = lines
            .iter()
            .find(|l| l.split_whitespace().take(2).eq([browser, host]))
            .unwrap_or_else(|| panic!("no line for {browser} {host}:\n{out}"));
        line.split_whitespace().map(String::from).collect()
    };
    assert_eq!(
        row("chrome", "aliexpress.com"),
        [
            "chrome",
            "aliexpress.com",
            "AliExpress",
            "2",
            "2024-01-01T00:01:40Z",
            &chrome.parent().unwrap().display().to_string()
        ]
    );
    assert_eq!(row("firefox", "www.tiktok.com")[2..5], ["TikTok", "0", "-"]);
    assert!(out.contains("Found visits to 7 banned site(s) in 2 of 2 browser profile(s)."), "{out}");
    assert!(out.contains("weerwal history purge"), "{out}");

    let (code, out, err) = execute(HistoryCommand::Scan(select(vec![], Format::Json)), &env);
    assert_eq!(code, 3, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["command"], "scan");
    // Entries are URL rows: 4 in Chrome, 4 in Firefox (two for aliexpress.com).
    assert_eq!(json["banned_entries"], 8);
    assert_eq!(json["profiles"][0]["browser"], "chrome");
    assert_eq!(json["profiles"][0]["hosts"][0]["host"], "aliexpress.com");
    assert_eq!(json["profiles"][0]["hosts"][0]["visits"], 2);
    assert_eq!(json["profiles"][1]["browser"], "firefox");
    assert_eq!(json["errors"], serde_json::json!([]));

    let purge = |format, no_backup| HistoryCommand::Purge(PurgeArgs { select: select(vec![], format), no_backup });
    let (code, out, err) = execute(purge(Format::Table, true), &env);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Removed from the browser history:"), "{out}");
    assert!(out.contains("removed 4 entries and 5 visit(s)"), "{out}");
    assert!(out.contains("Bookmarks of banned sites were kept"), "{out}");
    assert!(!out.contains("Backup"), "{out}");
    assert!(backups(chrome.parent().unwrap()).is_empty());

    let (code, out, _) = execute(HistoryCommand::Scan(select(vec![], Format::Table)), &env);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("No visits to banned sites in 2 browser profile(s)"), "{out}");
    let (code, out, _) = execute(purge(Format::Json, false), &env);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["banned_entries"], 0);
    assert_eq!(json["profiles"][0]["backups"], serde_json::json!([]));
}

#[test]
fn cli_profile_paths_browser_filter_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let safari = dir.path().join("Safari/History.db");
    safari_history(&safari);
    let chrome = dir.path().join("User Data/Default/History");
    chrome_history(&chrome);
    let env = Env::with_home(Os::Linux, dir.path().join("empty-home"));

    // Nothing installed: clean.
    let (code, out, _) = execute(HistoryCommand::Scan(select(vec![], Format::Table)), &env);
    assert_eq!(code, 0);
    assert!(out.contains("No browser history found"), "{out}");

    // --profile: a database file and a "User Data" folder.
    let (code, out, _) =
        execute(HistoryCommand::Scan(select(vec![safari.clone(), dir.path().join("User Data")], Format::Json)), &env);
    assert_eq!(code, 3);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["profiles"][0]["browser"], "safari");
    assert_eq!(json["profiles"][1]["browser"], "chromium");
    assert_eq!(json["banned_entries"], 7);

    // The same database named as a file and as its folder is scanned once.
    let (code, out, _) = execute(
        HistoryCommand::Scan(select(vec![safari.clone(), safari.parent().unwrap().to_path_buf()], Format::Json)),
        &env,
    );
    assert_eq!(code, 3);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["profiles"].as_array().unwrap().len(), 1);

    // --browser narrows what a folder means.
    let mut args = select(vec![dir.path().join("User Data")], Format::Json);
    args.browser = BrowserChoice::Firefox;
    let (code, out, err) = execute(HistoryCommand::Scan(args), &env);
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("no browser history database"), "{err}");

    // Found and an error: 3 wins, the error is still reported.
    let (code, out, err) =
        execute(HistoryCommand::Scan(select(vec![safari.clone(), dir.path().join("missing")], Format::Json)), &env);
    assert_eq!(code, 3);
    assert!(err.contains("missing"), "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["errors"].as_array().unwrap().len(), 1);

    // A purge refused by a running browser: exit 1, told to close it, the
    // other profile purged.
    let browser = Connection::open(&chrome).unwrap();
    browser.execute_batch("BEGIN EXCLUSIVE; UPDATE meta SET value = value;").unwrap();
    let (code, out, err) = execute(
        HistoryCommand::Purge(PurgeArgs {
            select: select(vec![safari.clone(), chrome.clone()], Format::Table),
            no_backup: false,
        }),
        &env,
    );
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("Chromium is still running") && err.contains("Close every Chromium window"), "{err}");
    assert!(out.contains("Safari"), "{out}");
    assert!(out.contains("Backup of the old history"), "{out}");
    assert_eq!(backups(safari.parent().unwrap()).len(), 1);
    assert!(backups(chrome.parent().unwrap()).is_empty());
    browser.execute_batch("ROLLBACK").unwrap();
    drop(browser);
    let (code, _, _) = execute(HistoryCommand::Scan(select(vec![safari.clone()], Format::Json)), &env);
    assert_eq!(code, 0);
    let (code, _, _) = execute(HistoryCommand::Scan(select(vec![chrome.clone()], Format::Json)), &env);
    assert_eq!(code, 3);
}

#[test]
fn the_command_line_parses_as_main_rs_will_wire_it() {
    use clap::Parser;
    #[derive(Parser)]
    struct Top {
        #[command(subcommand)]
        history: HistoryCommand,
    }
    let top = Top::try_parse_from([
        "history",
        "scan",
        "--browser",
        "edge",
        "--profile",
        "/a",
        "--profile",
        "/b",
        "--format",
        "json",
    ])
    .unwrap();
    match top.history {
        HistoryCommand::Scan(s) => {
            assert_eq!(s.browser, BrowserChoice::Edge);
            assert_eq!(s.profiles, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
            assert_eq!(s.format, Format::Json);
        }
        _ => panic!("scan expected"),
    }
    let top = Top::try_parse_from(["history", "purge", "--no-backup"]).unwrap();
    match top.history {
        HistoryCommand::Purge(p) => {
            assert!(p.no_backup);
            assert_eq!(p.select.browser, BrowserChoice::All);
            assert_eq!(p.select.format, Format::Table);
        }
        _ => panic!("purge expected"),
    }
    assert!(Top::try_parse_from(["history", "scan", "--browser", "opera"]).is_err());
}
