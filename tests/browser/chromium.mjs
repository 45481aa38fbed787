// Starts Debian's headless Chromium for the browser tests, the same way for
// each: the executable and a fresh profile the test gives (playwright-core
// never downloads a browser), no proxy, nothing in the background.
import { chromium } from 'playwright-core';

/// The browser context and its first page, every step waiting up to `step` ms.
export async function launch(input, step) {
  const context = await chromium.launchPersistentContext(input.profile, {
    executablePath: input.chromium,
    headless: true,
    timeout: step,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--disable-dev-shm-usage',
      '--no-proxy-server',
    ],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(step);
  return { context, page };
}
