// Drives Debian's headless Chromium for tests/it/directory.rs: an officer
// from the directory's officer group logs in from the keyboard, opens the
// charts through the menu and reports what the chart and its table say;
// then waits until the test has removed them from the group and clicks
// once more.
//
// Input on stdin, one JSON object:
//   {"base": "http://127.0.0.1:PORT", "user": "...", "password": "...",
//    "chromium": "/usr/bin/chromium", "profile": "/tmp/fresh-profile-dir",
//    "continue_file": "/tmp/.../go"}
// Output on stdout: one JSON line after the charts ({"phase": 1, ...}),
// one after the click that follows the removal ({"phase": 2, ...}).
import { existsSync, readFileSync } from 'node:fs';
import { launch } from './chromium.mjs';

const input = JSON.parse(readFileSync(0, 'utf8'));
const STEP = 30_000;
const seen = {};

const { context, page } = await launch(input, STEP);
try {
  await page.goto(`${input.base}/attempts`);
  await page.getByLabel('Gebruikersnaam').fill(input.user);
  await page.getByLabel('Wachtwoord').fill(input.password);
  await Promise.all([page.waitForURL('**/attempts'), page.getByLabel('Wachtwoord').press('Enter')]);
  seen.after_login_url = new URL(page.url()).pathname;

  // To the charts through the menu, by keyboard.
  await page.getByRole('link', { name: 'Grafieken' }).focus();
  await Promise.all([page.waitForURL('**/charts'), page.keyboard.press('Enter')]);
  const chart = page.getByRole('img', { name: /Pogingen per dag per app/ });
  seen.chart_visible = await chart.isVisible();
  const box = await chart.boundingBox();
  seen.chart_width = box ? Math.round(box.width) : 0;
  seen.bars = await chart.locator('rect').count();
  seen.top_chart_visible = await page.getByRole('img', { name: /Top subjects/ }).isVisible();
  const table = page.getByRole('table').first();
  seen.table_caption = (await table.locator('caption').innerText()).trim();
  seen.table_rows = (await table.getByRole('row').allInnerTexts()).map((t) => t.replace(/\s+/g, ' ').trim());
  console.log(JSON.stringify({ phase: 1, ok: true, seen }));

  // The test removes the officer from the group, then lets us go on.
  const deadline = Date.now() + 60_000;
  while (!existsSync(input.continue_file)) {
    if (Date.now() > deadline) throw new Error('no go-ahead from the test within 60 s');
    await new Promise((r) => setTimeout(r, 50));
  }
  await page.getByRole('link', { name: 'Pogingen' }).focus();
  const [response] = await Promise.all([page.waitForEvent('response'), page.keyboard.press('Enter')]);
  await page.waitForLoadState();
  const after = {
    status: response.status(),
    h1: (await page.getByRole('heading', { level: 1 }).innerText()).trim(),
    menu_links: await page.getByRole('link', { name: 'Grafieken' }).count(),
  };
  console.log(JSON.stringify({ phase: 2, ok: true, after }));
} catch (e) {
  let body = '';
  try { body = (await context.pages()[0].innerText('body')).slice(0, 2000); } catch {}
  console.log(JSON.stringify({ phase: 0, ok: false, error: String(e && e.stack ? e.stack : e), body, seen }));
  process.exitCode = 1;
} finally {
  await context.close();
}
