// Drives Debian's headless Chromium through the officers' dashboard for
// tests/it/admin_browser.rs, with playwright-core (a library: it starts the
// browser given, never downloads one).
//
// Input on stdin, one JSON object:
//   {"base": "http://127.0.0.1:PORT", "user": "...", "password": "...",
//    "host": "aliexpress.com", "chromium": "/usr/bin/chromium",
//    "profile": "/tmp/fresh-profile-dir"}
// Output on stdout, one JSON object: what the browser saw at each step.
//
// Everything is done as a person would, from the keyboard: the fields are
// found by their labels (so the labels must be right), the form is sent
// with Enter, the attempts page is reached through the menu link.
import { readFileSync } from 'node:fs';
import { launch } from './chromium.mjs';

const input = JSON.parse(readFileSync(0, 'utf8'));
const STEP = 30_000;
const seen = {};

const { context, page } = await launch(input, STEP);
try {
  // Not logged in: the attempts page sends the browser to the login page.
  await page.goto(`${input.base}/attempts`);
  seen.before_login_url = new URL(page.url()).pathname;

  // The fields by their labels; the form sent with Enter.
  await page.getByLabel('Gebruikersnaam').fill(input.user);
  await page.getByLabel('Wachtwoord').fill(input.password);
  await Promise.all([page.waitForURL('**/attempts'), page.getByLabel('Wachtwoord').press('Enter')]);
  seen.after_login_url = new URL(page.url()).pathname;

  // The session cookie is invisible to scripts (HttpOnly).
  seen.script_cookies = await page.evaluate(() => document.cookie);
  const cookies = await context.cookies();
  seen.session_cookie = cookies
    .filter((c) => c.name === 'weerwal_admin')
    .map((c) => ({ httpOnly: c.httpOnly, sameSite: c.sameSite, secure: c.secure, path: c.path }))[0] ?? null;

  // Through the menu to another page and back to the attempts, by keyboard.
  await page.getByRole('link', { name: 'Gemarkeerd' }).focus();
  await Promise.all([page.waitForURL('**/flags'), page.keyboard.press('Enter')]);
  await page.getByRole('link', { name: 'Pogingen' }).focus();
  await Promise.all([page.waitForURL('**/attempts'), page.keyboard.press('Enter')]);

  // The attempts table: the blocked host in a cell of a row.
  const table = page.getByRole('table');
  seen.caption = (await table.locator('caption').innerText()).trim();
  seen.column_headers = await table.getByRole('columnheader').allInnerTexts();
  const row = table.getByRole('row').filter({ hasText: input.host });
  seen.rows_with_host = await row.count();
  seen.row_text = seen.rows_with_host > 0 ? (await row.first().innerText()).replace(/\s+/g, ' ').trim() : '';
  seen.page_title = await page.title();
  seen.h1 = (await page.getByRole('heading', { level: 1 }).innerText()).trim();

  // The first Tab lands on the skip link.
  await page.keyboard.press('Tab');
  seen.first_tab = await page.evaluate(() => document.activeElement?.textContent?.trim() ?? '');

  // Filtering by host through the form, sent with Enter.
  await page.getByLabel('Host of domein').fill(input.host);
  await Promise.all([page.waitForURL(/host=/), page.getByLabel('Host of domein').press('Enter')]);
  seen.filtered_status = (await page.getByRole('status').first().innerText()).trim();
  seen.filtered_url = page.url().replace(input.base, '');

  console.log(JSON.stringify({ ok: true, seen }));
} catch (e) {
  let body = "";
  try { body = (await context.pages()[0].innerText("body")).slice(0, 2000); } catch {}
  console.log(JSON.stringify({ ok: false, error: String(e && e.stack ? e.stack : e), body, seen }));
  process.exitCode = 1;
} finally {
  await context.close();
}
