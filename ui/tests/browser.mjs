// Browser check of the page in headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core: no browser download). Run by tests/ui/test_browser.py, or by hand:
//
//   node ui/tests/browser.mjs --url http://127.0.0.1:8000/ --out /tmp/ui-check
//
// Opens the page, waits for the ladder, waits until the best bid/ask changes (a replay must be
// running), switches to another instrument with the picker, checks the ladder shows it, loads the
// history panel, with --replay-file NAME drives the replay controls (start at a rate, pause,
// resume, stop, progress), and saves <out>/screenshot.png. Prints one JSON line (the summary) on stdout;
// exits 1 on failure (after saving <out>/failure.png).
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const { values: opts } = parseArgs({
  options: {
    url: { type: 'string', default: 'http://127.0.0.1:8000/' },
    out: { type: 'string', default: 'ui-check' },
    chromium: { type: 'string', default: process.env.CHROMIUM_PATH || '/usr/bin/chromium' },
    timeout: { type: 'string', default: '90' },
    'min-instruments': { type: 'string', default: '2' },
    'replay-file': { type: 'string' },
    'replay-rate': { type: 'string', default: '200' },
  },
});
const timeoutMs = Number(opts.timeout) * 1000;
const out = resolve(opts.out);
mkdirSync(out, { recursive: true });
const log = (...args) => console.error('[browser]', ...args);

const userDataDir = mkdtempSync(join(tmpdir(), 'mbo-ui-chromium-'));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: opts.chromium,
  headless: true,
  chromiumSandbox: false,
  viewport: { width: 1440, height: 1100 },
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
const page = context.pages()[0] || await context.newPage();
page.setDefaultTimeout(timeoutMs);
const consoleErrors = [];
const pageErrors = [];
page.on('console', (msg) => { if (msg.type() === 'error') consoleErrors.push(msg.text()); });
page.on('pageerror', (error) => pageErrors.push(String(error)));

const summary = { url: opts.url, out };
const bestText = () => page.evaluate(() => `${document.querySelector('#best-bid').textContent} | ${document.querySelector('#best-ask').textContent}`);
const ladderRows = (side) => page.locator(`#ladder .row[data-side="${side}"]`).count();

let failed = null;
try {
  log('open', opts.url);
  await page.goto(opts.url, { waitUntil: 'domcontentloaded' });
  await page.waitForSelector('body[data-ready="true"]');
  summary.charts = await page.getAttribute('body', 'data-charts');
  if (summary.charts !== 'ready') throw new Error('lightweight-charts did not load (ui/dist missing?)');

  // 1. The ladder renders rows of the first instrument.
  await page.waitForFunction(() => document.querySelectorAll('#ladder .row[data-side]').length > 0);
  summary.first_instrument = await page.getAttribute('#ladder', 'data-instrument-id');
  summary.first_symbol = await page.getAttribute('#ladder', 'data-symbol');
  summary.first_rows = { asks: await ladderRows('ask'), bids: await ladderRows('bid') };
  log('ladder of', summary.first_symbol, summary.first_instrument, summary.first_rows);

  // 2. It updates live: the WebSocket is up and the best bid/ask text changes.
  await page.waitForSelector('#conn[data-state="live"]');
  summary.best_before = await bestText();
  const updatesBefore = Number(await page.getAttribute('#ladder', 'data-updates'));
  await page.waitForFunction((before) => {
    const now = `${document.querySelector('#best-bid').textContent} | ${document.querySelector('#best-ask').textContent}`;
    return now !== before && !now.includes('–');
  }, summary.best_before);
  summary.best_after = await bestText();
  summary.live_updates = Number(await page.getAttribute('#ladder', 'data-updates')) - updatesBefore;
  log('best changed:', summary.best_before, '→', summary.best_after);

  // 3. Switch instrument with the picker.
  await page.waitForFunction((n) => document.querySelectorAll('#instrument option[value]:not([value=""])').length >= n,
    Number(opts['min-instruments']));
  const options = await page.$$eval('#instrument option', (els) => els.map((o) => ({ value: o.value, text: o.textContent })));
  summary.instruments = options.map((o) => o.text);
  const target = options.find((o) => o.value && o.value !== summary.first_instrument);
  if (!target) throw new Error(`no second instrument to switch to: ${JSON.stringify(options)}`);
  await page.selectOption('#instrument', target.value);
  await page.waitForFunction((id) => {
    const ladder = document.querySelector('#ladder');
    return ladder.dataset.instrumentId === id && ladder.querySelectorAll('.row[data-side]').length > 0;
  }, target.value);
  summary.second_instrument = await page.getAttribute('#ladder', 'data-instrument-id');
  summary.second_symbol = await page.getAttribute('#ladder', 'data-symbol');
  summary.second_title = await page.textContent('#ladder-title');
  if (!summary.second_title.includes(target.value)) throw new Error(`ladder title ${summary.second_title} does not name ${target.value}`);
  await page.waitForSelector('#conn[data-state="live"]');
  const afterSwitch = Number(await page.getAttribute('#ladder', 'data-updates'));
  await page.waitForFunction((n) => Number(document.querySelector('#ladder').dataset.updates) > n, afterSwitch)
    .catch(() => log('no further update after the switch (the instrument may be quiet)'));
  summary.second_best = await bestText();
  log('switched to', summary.second_symbol, summary.second_instrument, summary.second_best);

  // 4. History panel (not required: ClickHouse may lag behind the live view).
  try {
    await page.click('#hist-recent');
    await page.waitForFunction(() => !/loading/.test(document.querySelector('#history-text').textContent), null, { timeout: 20000 });
    summary.history = await page.textContent('#history-text');
    await page.click('#bookat-form button[type="submit"]');
    await page.waitForFunction(() => !/loading/.test(document.querySelector('#bookat-text').textContent), null, { timeout: 20000 });
    summary.book_at = await page.textContent('#bookat-text');
    summary.book_at_rows = await page.locator('#bookat-ladder .row[data-side]').count();
  } catch (error) {
    summary.history_error = String(error.message || error).split('\n')[0];
  }
  await page.waitForTimeout(1500); // let the charts draw a few more points
  summary.screenshot = join(out, 'screenshot.png');
  await page.screenshot({ path: summary.screenshot, fullPage: true });

  // 5. Replay controls: start a replay of a file through the API at a rate, see records sent,
  //    pause, resume, stop. (After the main screenshot, and refused until mbo run's own replay
  //    has ended: two replays of the same instruments at once would mix their books.)
  if (opts['replay-file']) {
    const replayState = (want) => page.waitForFunction((w) => document.querySelector('#replay-state').textContent === w, want);
    const sent = () => page.evaluate(() => Number(document.querySelector('#replay-text').dataset.recordsSent || 0));
    summary.replay_states = [];
    await page.fill('#replay-file', opts['replay-file']);
    await page.keyboard.press('Escape'); // close the file suggestions
    await page.fill('#replay-rate', opts['replay-rate']);
    // While another replay into the records topic runs (mbo run's own), the API refuses a
    // second one (409: two replays would mix the books) and the page shows why; start again
    // until that replay has ended.
    const startDeadline = Date.now() + timeoutMs;
    for (;;) {
      await page.click('#replay-start');
      const outcome = await page.waitForFunction(() => {
        if (document.querySelector('#replay-state').textContent === 'running') return 'running';
        const error = document.querySelector('#error').textContent;
        return error.includes('another replay') ? error : null;
      });
      const seen = await outcome.jsonValue();
      if (seen === 'running') break;
      if (!summary.replay_refused) log('replay refused:', seen);
      summary.replay_refused = seen;
      if (Date.now() > startDeadline) throw new Error(`replay still refused: ${seen}`);
      await page.evaluate(() => { document.querySelector('#error').textContent = ''; });
      await page.waitForTimeout(2000);
    }
    summary.replay_states.push('running');
    await page.waitForFunction(() => Number(document.querySelector('#replay-text').dataset.recordsSent || 0) > 0);
    await page.click('#replay-pause');
    await replayState('paused');
    summary.replay_states.push('paused');
    await page.click('#replay-resume');
    await replayState('running');
    summary.replay_states.push('running');
    const resumedAt = await sent();
    await page.waitForFunction((n) => Number(document.querySelector('#replay-text').dataset.recordsSent || 0) > n, resumedAt);
    summary.replay_progress = await page.evaluate(() => document.querySelector('#replay-text').dataset.progress);
    summary.replay = await page.textContent('#replay-text');
    summary.replay_screenshot = join(out, 'replay.png');
    await page.locator('.replay-panel').screenshot({ path: summary.replay_screenshot });
    await page.click('#replay-stop');
    await replayState('stopped');
    summary.replay_states.push('stopped');
  }
} catch (error) {
  failed = error;
  summary.error = String(error.message || error);
  summary.failure_screenshot = join(out, 'failure.png');
  await page.screenshot({ path: summary.failure_screenshot, fullPage: true }).catch(() => {});
} finally {
  summary.console_errors = consoleErrors;
  summary.page_errors = pageErrors;
  await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
if (!failed && pageErrors.length) {
  failed = new Error('uncaught errors in the page');
  summary.error = failed.message;
}
console.log(JSON.stringify(summary));
process.exit(failed ? 1 : 0);
