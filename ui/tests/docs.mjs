// The API's docs pages in headless Chromium with the network cut off: every request that does not
// go to the API itself is aborted, so /docs (Swagger UI) and /redoc (ReDoc) must render from the
// assets the API serves. Run by tests/api/test_docs.py, or by hand:
//
//   node ui/tests/docs.mjs --url http://127.0.0.1:8000
//
// Prints one JSON line (what rendered, which requests were refused); exits 1 on failure.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const { values: opts } = parseArgs({
  options: {
    url: { type: 'string', default: 'http://127.0.0.1:8000' },
    chromium: { type: 'string', default: process.env.CHROMIUM_PATH || '/usr/bin/chromium' },
    timeout: { type: 'string', default: '60' },
  },
});
const origin = new URL(opts.url).origin;
const userDataDir = mkdtempSync(join(tmpdir(), 'mbo-docs-chromium-'));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: opts.chromium,
  headless: true,
  chromiumSandbox: false,
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync'],
});
const refused = [];
await context.route('**/*', (route) => {
  const url = route.request().url();
  if (url.startsWith(origin) || url.startsWith('data:') || url.startsWith('blob:')) return route.continue();
  refused.push(url);
  return route.abort('internetdisconnected');
});
const page = context.pages()[0] || await context.newPage();
page.setDefaultTimeout(Number(opts.timeout) * 1000);
const summary = { url: opts.url };
let failed = null;
try {
  await page.goto(`${opts.url}/docs`);
  summary.swagger_title = (await page.locator('.swagger-ui .info .title').first().textContent()).trim();
  summary.swagger_operations = await page.locator('.swagger-ui .opblock').count();
  await page.goto(`${opts.url}/redoc`);
  await page.waitForSelector('h1');
  summary.redoc_title = (await page.locator('h1').first().textContent()).trim();
  summary.redoc_operations = await page.locator('[data-section-id^="operation/"]').count();
} catch (error) {
  failed = String(error);
}
summary.refused = refused;
await context.close();
rmSync(userDataDir, { recursive: true, force: true });
if (failed) summary.error = failed;
console.log(JSON.stringify(summary));
process.exit(failed ? 1 : 0);
