// Browser check of the page in headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core: no browser download). Run by tests/ui/test_browser.py, or by hand:
//
//   node ui/tests/browser.mjs --url http://127.0.0.1:8000/ --out /tmp/ui-check [--replay-file NAME]
//
// Runs the checks of CHECKS in order (each an async function adding what it saw to the summary;
// add a check by writing one more and listing it there): the ladder renders and follows the live
// replay, the instrument picker switches it, prices are padded to the tick, the every-tick ladder
// shows empty rows for the gaps of the book, the depth chart is drawn with a linear price axis,
// the quality badge explains its counters, the history panel loads, charts and inputs fill their
// space, an error shows whole and can be dismissed, and (with --replay-file NAME) the replay
// controls start, pause, resume and stop a replay. Saves screenshot.png, ladder-every-tick.png,
// depth-chart.png, error.png and replay.png in --out. Prints one JSON line (the summary) on
// stdout; exits 1 on failure (after saving <out>/failure.png).
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
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
    // A second file for the same instruments and its final books (`mbo book` JSON): replayed from
    // the page after the first, its ladder must be exactly its own book.
    'second-file': { type: 'string' },
    'second-books': { type: 'string' },
  },
});
const timeoutMs = Number(opts.timeout) * 1000;
const out = resolve(opts.out);
mkdirSync(out, { recursive: true });
const log = (...args) => console.error('[browser]', ...args);
const VIEWPORT = { width: 1440, height: 1100 };

const userDataDir = mkdtempSync(join(tmpdir(), 'mbo-ui-chromium-'));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: opts.chromium,
  headless: true,
  chromiumSandbox: false,
  viewport: VIEWPORT,
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

// ------------------------------------------------------------------------------ helpers

const bestText = () => page.evaluate(() => `${document.querySelector('#best-bid').textContent} | ${document.querySelector('#best-ask').textContent}`);
const ladderRows = (side) => page.locator(`#ladder .row[data-side="${side}"]`).count();
const fractionDigits = (text) => (text.includes('.') ? text.length - text.indexOf('.') - 1 : 0);
const check = (ok, message) => { if (!ok) throw new Error(message); };

async function screenshot(summary, name, locator = null) {
  const path = join(out, name);
  // Without the ladder's flash of changed levels: it restarts at every update (10 a second) and
  // would tint half the rows in a picture.
  if (!summary.screenshots) await page.addStyleTag({ content: '.ladder .flash { animation: none !important; }' });
  if (locator) await locator.screenshot({ path, animations: 'disabled' });
  else {
    await page.evaluate(() => window.scrollTo(0, 0)); // the sticky header stays on top
    await page.screenshot({ path, fullPage: true, animations: 'disabled' });
  }
  summary.screenshots = [...(summary.screenshots || []), path];
  return path;
}

/** The live ladder as the page shows it, read in one go (it redraws up to 10 times a second). */
function readLadder() {
  return page.evaluate(() => {
    const ladder = document.querySelector('#ladder');
    const rows = [...ladder.querySelectorAll('.row[data-units], .gap.marker')].map((row) => (row.classList.contains('gap')
      ? { marker: row.textContent }
      : {
        units: row.dataset.units,
        side: row.dataset.side || '',
        price: row.querySelector('.price').textContent,
        sizes: [...row.querySelectorAll('.size span')].map((s) => s.textContent).join(''),
      }));
    return { mode: ladder.dataset.mode, tick: ladder.dataset.tick, decimals: Number(ladder.dataset.decimals), rows };
  });
}

// ------------------------------------------------------------------------------- checks

/** The ladder renders rows of the first instrument. */
async function checkLadder(summary) {
  await page.waitForFunction(() => document.querySelectorAll('#ladder .row[data-side]').length > 0);
  summary.first_instrument = await page.getAttribute('#ladder', 'data-instrument-id');
  summary.first_symbol = await page.getAttribute('#ladder', 'data-symbol');
  summary.first_rows = { asks: await ladderRows('ask'), bids: await ladderRows('bid') };
  log('ladder of', summary.first_symbol, summary.first_instrument, summary.first_rows);
}

/** It updates live: the WebSocket is up and the best bid/ask text changes. */
async function checkLiveUpdates(summary) {
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
}

/** Switch instrument with the picker: the ladder shows the new one. */
async function checkSwitchInstrument(summary) {
  await page.waitForFunction((n) => document.querySelectorAll('#instrument option[value]:not([value=""])').length >= n,
    Number(opts['min-instruments']));
  const options = await page.$$eval('#instrument option', (els) => els.map((o) => ({ value: o.value, text: o.textContent })));
  summary.instruments = options.map((o) => o.text);
  const target = options.find((o) => o.value && o.value !== summary.first_instrument);
  check(target, `no second instrument to switch to: ${JSON.stringify(options)}`);
  await page.selectOption('#instrument', target.value);
  await page.waitForFunction((id) => {
    const ladder = document.querySelector('#ladder');
    return ladder.dataset.instrumentId === id && ladder.querySelectorAll('.row[data-side]').length > 0;
  }, target.value);
  summary.second_instrument = await page.getAttribute('#ladder', 'data-instrument-id');
  summary.second_symbol = await page.getAttribute('#ladder', 'data-symbol');
  summary.second_title = await page.textContent('#ladder-title');
  check(summary.second_title.includes(target.value), `ladder title ${summary.second_title} does not name ${target.value}`);
  await page.waitForSelector('#conn[data-state="live"]');
  const afterSwitch = Number(await page.getAttribute('#ladder', 'data-updates'));
  await page.waitForFunction((n) => Number(document.querySelector('#ladder').dataset.updates) > n, afterSwitch)
    .catch(() => log('no further update after the switch (the instrument may be quiet)'));
  summary.second_best = await bestText();
  log('switched to', summary.second_symbol, summary.second_instrument, summary.second_best);
}

/** "levels" mode: every price (ladder and the best bid/ask line) has the tick's decimals, the mid
 *  one more, whatever the instrument. */
async function checkTickPadding(summary) {
  await page.waitForFunction(() => Number(document.querySelector('#ladder').dataset.tick || 0) > 0);
  const ladder = await readLadder();
  const summaryLine = await page.evaluate(() => ['best-bid', 'best-ask', 'mid', 'spread']
    .map((id) => document.getElementById(id).textContent.split(' × ')[0]));
  const digits = ladder.rows.filter((r) => r.price).map((r) => fractionDigits(r.price));
  summary.tick_padding = {
    mode: ladder.mode, tick_units: ladder.tick, decimals: ladder.decimals,
    row_decimals: [...new Set(digits)], line: summaryLine,
  };
  check(ladder.mode === 'levels', `the ladder starts in levels mode, not ${ladder.mode}`);
  check(digits.length && digits.every((d) => d === ladder.decimals),
    `ladder prices not padded to ${ladder.decimals} decimals: ${ladder.rows.map((r) => r.price).join(' ')}`);
  const [bid, ask, mid, spread] = summaryLine;
  for (const [name, text, want] of [['best bid', bid, ladder.decimals], ['best ask', ask, ladder.decimals],
    ['spread', spread, ladder.decimals], ['mid', mid, ladder.decimals + 1]]) {
    check(text === '–' || fractionDigits(text) === want, `${name} "${text}" does not have ${want} decimals`);
  }
  log('tick padding:', summary.tick_padding);
}

/** "every tick" mode: one row per tick price, empty rows where the book has no level, between
 *  levels of the same side too; every price with the tick's decimals. */
async function checkEveryTickLadder(summary) {
  await page.click('#ladder-mode button[data-mode="ticks"]');
  await page.waitForSelector('#ladder[data-mode="ticks"]');
  // Wait for a moment when the book has a gap between two levels of one side (it usually has).
  const seen = await page.waitForFunction(() => {
    const ladder = document.querySelector('#ladder');
    if (ladder.dataset.mode !== 'ticks') return null;
    const rows = [...ladder.querySelectorAll('.row[data-units]')].map((r) => ({ side: r.dataset.side || '', units: r.dataset.units }));
    const has = (list, side) => list.some((r) => r.side === side || r.side === 'both');
    const between = (i, side) => has(rows.slice(0, i), side) && has(rows.slice(i + 1), side);
    const gap = rows.findIndex((r, i) => !r.side && (between(i, 'ask') || between(i, 'bid')));
    return gap >= 0 ? rows[gap].units : null;
  }, null, { timeout: 30000 }).then((handle) => handle.jsonValue()).catch(() => null);
  const ladder = await readLadder();
  const step = BigInt(ladder.tick);
  const priced = ladder.rows.filter((r) => r.units !== undefined);
  const breaks = [];
  for (let i = 1; i < ladder.rows.length; i += 1) {
    const [a, b] = [ladder.rows[i - 1], ladder.rows[i]];
    if (a.units !== undefined && b.units !== undefined && BigInt(a.units) - BigInt(b.units) !== step) breaks.push(`${a.price}→${b.price}`);
  }
  const empty = priced.filter((r) => !r.side);
  summary.every_tick = {
    tick_units: ladder.tick, decimals: ladder.decimals, rows: priced.length, empty_rows: empty.length,
    gap_seen_at: seen, markers: ladder.rows.filter((r) => r.marker).map((r) => r.marker),
    row_decimals: [...new Set(priced.map((r) => fractionDigits(r.price)))],
    note: await page.textContent('#ladder-note'),
  };
  log('every tick:', summary.every_tick);
  check(step > 0n, 'every-tick mode without a tick');
  check(!breaks.length, `rows are not one tick apart: ${breaks.join(', ')}`);
  check(summary.every_tick.row_decimals.length === 1 && summary.every_tick.row_decimals[0] === ladder.decimals,
    `every-tick prices not padded alike: ${priced.map((r) => r.price).join(' ')}`);
  check(empty.every((r) => r.sizes === ''), 'an empty row shows a size');
  check(seen !== null, `no empty row between two levels within 30 s: ${priced.map((r) => `${r.price}${r.side[0] || '·'}`).join(' ')}`);
  await page.evaluate(() => new Promise((done) => requestAnimationFrame(() => done())));
  await screenshot(summary, 'ladder-every-tick.png', page.locator('.ladder-panel'));
}

/** The depth chart is drawn (both sides' areas on the canvas), fills its pane, and its price axis
 *  is linear with labels padded to the tick. */
async function checkDepthChart(summary) {
  await page.waitForFunction(() => Number(document.querySelector('#depth-chart').dataset.levels || 0) > 0
    && JSON.parse(document.querySelector('#depth-chart').dataset.axis || '[]').length >= 3);
  const depth = await page.evaluate(() => {
    const el = document.querySelector('#depth-chart');
    const canvas = el.querySelector('canvas');
    const image = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    let bid = 0;
    let ask = 0;
    for (let i = 0; i < image.length; i += 4) {
      const [r, g, b, a] = [image[i], image[i + 1], image[i + 2], image[i + 3]];
      if (a && g > 120 && r < 90 && b > 100) bid += 1;
      else if (a && r > 180 && g < 120) ask += 1;
    }
    const box = el.getBoundingClientRect();
    const panel = el.closest('.panel').getBoundingClientRect();
    const c = canvas.getBoundingClientRect();
    return {
      labels: JSON.parse(el.dataset.labels), axis: JSON.parse(el.dataset.axis), decimals: Number(el.dataset.decimals),
      pixels: { bid, ask }, chart: [Math.round(box.width), Math.round(box.height)],
      canvas: [Math.round(c.width), Math.round(c.height)],
      slack_below: Math.round(panel.bottom - box.bottom),
    };
  });
  const [[u0, x0], ...rest] = depth.axis.map(([u, x]) => [Number(BigInt(u) - BigInt(depth.axis[0][0])), x]);
  const [uN, xN] = rest[rest.length - 1];
  const slope = (xN - x0) / (uN - u0);
  depth.max_axis_error_px = Math.max(...rest.map(([u, x]) => Math.abs(x - (x0 + slope * (u - u0)))));
  // The hover read-out names the tick price under the pointer.
  const box = await page.locator('#depth-chart canvas').boundingBox();
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  depth.hover = await page.textContent('#depth-chart .depth-tip');
  await page.mouse.move(0, 0);
  summary.depth = depth;
  log('depth chart:', depth);
  check(depth.pixels.bid > 500 && depth.pixels.ask > 500, `depth areas not drawn: ${JSON.stringify(depth.pixels)}`);
  check(depth.max_axis_error_px < 0.6, `price axis not linear (off by ${depth.max_axis_error_px} px)`);
  check(depth.labels.every((t) => fractionDigits(t) === depth.decimals), `depth labels not tick-padded: ${depth.labels}`);
  check(Math.abs(depth.canvas[0] - depth.chart[0]) <= 1 && Math.abs(depth.canvas[1] - depth.chart[1]) <= 1,
    `canvas ${depth.canvas} does not fill the chart ${depth.chart}`);
  check(depth.slack_below <= 16, `${depth.slack_below}px empty under the depth chart`);
  check(/^\d+\.\d+ · bids/.test(depth.hover) && fractionDigits(depth.hover.split(' ')[0]) === depth.decimals,
    `depth hover: ${depth.hover}`);
  await screenshot(summary, 'depth-chart.png', page.locator('.depth-panel'));
}

/** The quality badge opens a list of every counter with what it counts. */
async function checkQualityBadge(summary) {
  await page.click('#badge-quality');
  await page.waitForSelector('#quality-pop:not([hidden])');
  const rows = await page.$$eval('#quality-rows tr[data-counter]', (trs) => trs.map((tr) => ({
    counter: tr.dataset.counter, count: tr.children[1].textContent, meaning: tr.children[2].textContent,
  })));
  await page.keyboard.press('Escape');
  await page.waitForSelector('#quality-pop', { state: 'hidden' });
  summary.quality = rows;
  check(rows.length >= 8, `quality popover lists ${rows.length} counters`);
  check(rows.every((r) => r.meaning.length > 20 && !r.meaning.includes('does not know')), 'a counter without its meaning');
  check(/not in the book/.test(rows.find((r) => r.counter === 'cancel_unknown_order')?.meaning || ''), 'cancel_unknown_order unexplained');
}

/** History panel: a hint before anything is loaded; then bars and a book (not required: ClickHouse
 *  may lag behind the live view). */
async function checkHistory(summary) {
  summary.history_hint = await page.evaluate(() => document.querySelector('#history-chart .note.hint')?.textContent ?? null);
  check(/Load bars/.test(summary.history_hint || ''), `no hint in the empty history chart: ${summary.history_hint}`);
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
}

/** Charts fill their panes, also after the window changes size; time inputs show a whole ISO time
 *  with nine fraction digits. */
async function checkLayout(summary) {
  const measure = () => page.evaluate(() => {
    const fit = {};
    for (const id of ['mid-chart', 'depth-chart', 'history-chart']) {
      const el = document.getElementById(id);
      const box = el.getBoundingClientRect();
      const drawn = (el.querySelector('.tv-lightweight-charts') || el.querySelector('canvas')).getBoundingClientRect();
      // The pane: the chart's column, less its padding (and, for the history chart, the caption).
      const column = el.parentElement;
      const style = getComputedStyle(column);
      const inner = column.getBoundingClientRect();
      const below = [...column.children].filter((c) => c !== el && c.getBoundingClientRect().top >= box.bottom)
        .reduce((sum, c) => sum + c.getBoundingClientRect().height + parseFloat(getComputedStyle(c).marginTop || 0), 0);
      fit[id] = {
        size: [Math.round(box.width), Math.round(box.height)],
        drawn: [Math.round(drawn.width), Math.round(drawn.height)],
        width_slack: Math.round(inner.width - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight)
          - parseFloat(style.borderLeftWidth) - parseFloat(style.borderRightWidth) - box.width),
        height_slack: Math.round(inner.bottom - parseFloat(style.paddingBottom) - parseFloat(style.borderBottomWidth)
          - below - box.bottom),
      };
    }
    return fit;
  });
  const wide = await measure();
  await page.setViewportSize({ width: 1100, height: 900 });
  await page.waitForTimeout(500);
  const narrow = await measure();
  await page.setViewportSize(VIEWPORT);
  await page.waitForTimeout(500);
  const iso = '2025-09-24T21:59:59.999707295Z';
  const inputs = {};
  for (const id of ['hist-start', 'hist-end', 'bookat-ts']) {
    const before = await page.inputValue(`#${id}`);
    await page.fill(`#${id}`, iso);
    inputs[id] = await page.$eval(`#${id}`, (el) => ({ scroll: el.scrollWidth, client: el.clientWidth }));
    await page.fill(`#${id}`, before);
  }
  summary.layout = { wide, narrow, inputs };
  log('layout:', JSON.stringify(summary.layout));
  for (const [name, fit] of [...Object.entries(wide), ...Object.entries(narrow)]) {
    check(Math.abs(fit.drawn[0] - fit.size[0]) <= 2 && Math.abs(fit.drawn[1] - fit.size[1]) <= 2,
      `${name} draws ${fit.drawn} in ${fit.size}`);
    check(fit.width_slack <= 2 && fit.height_slack <= 8, `${name} leaves part of its pane empty: ${JSON.stringify(fit)}`);
  }
  check(narrow['depth-chart'].size[0] < wide['depth-chart'].size[0], 'the depth chart did not follow the window');
  for (const [id, fit] of Object.entries(inputs)) check(fit.scroll <= fit.client, `${id} cuts a 30-character time off`);
}

/** An error (here: a replay of a file that is not there, named at length) shows whole, wrapped,
 *  below the header and not under it, and goes when dismissed. */
async function checkErrorBanner(summary) {
  const name = `no-such-file/${'a-rather-long-directory-name/'.repeat(7)}missing.dbn`;
  await page.fill('#replay-file', name);
  await page.keyboard.press('Escape');
  await page.click('#replay-start');
  await page.waitForSelector('#error:not([hidden])');
  const banner = await page.evaluate(() => {
    const text = document.querySelector('#error-text');
    const box = text.getBoundingClientRect();
    const visible = [[0.02, 0.5], [0.5, 0.5], [0.98, 0.85]].every(([fx, fy]) => {
      const hit = document.elementFromPoint(box.left + box.width * fx, box.top + box.height * fy);
      return hit && document.querySelector('#error').contains(hit);
    });
    const lineHeight = parseFloat(getComputedStyle(text).lineHeight) || 18;
    return {
      text: text.textContent, visible, lines: Math.round(box.height / lineHeight),
      clipped: text.scrollWidth > text.clientWidth + 1 || text.scrollHeight > text.clientHeight + 1,
      inside_viewport: box.top >= 0 && box.bottom <= window.innerHeight,
    };
  });
  await screenshot(summary, 'error.png', page.locator('.topbar'));
  await page.click('#error-close');
  await page.waitForSelector('#error', { state: 'hidden' });
  await page.fill('#replay-file', '');
  summary.error_banner = banner;
  log('error banner:', banner);
  check(banner.text.includes(name), `the error does not show the whole message: ${banner.text}`);
  check(banner.visible && !banner.clipped && banner.inside_viewport, `the error is cut off or covered: ${JSON.stringify(banner)}`);
}

/** The main screenshot, after everything above has drawn. */
async function takeScreenshot(summary) {
  await page.waitForTimeout(1500); // let the charts draw a few more points
  summary.screenshot = await screenshot(summary, 'screenshot.png');
}

/** Replay controls: start a replay of a file through the API at a rate, see records sent, pause,
 *  resume, stop. (Refused until mbo run's own replay has ended: two replays of the same
 *  instruments at once would mix their books.) */
async function checkReplayControls(summary) {
  if (!opts['replay-file']) return;
  const replayState = (want) => page.waitForFunction((w) => document.querySelector('#replay-state').textContent === w, want);
  const sent = () => page.evaluate(() => Number(document.querySelector('#replay-text').dataset.recordsSent || 0));
  summary.replay_states = [];
  await page.fill('#replay-file', opts['replay-file']);
  await page.keyboard.press('Escape'); // close the file suggestions
  await page.fill('#replay-rate', opts['replay-rate']);
  // While another replay into the records topic runs (mbo run's own), the API refuses a second
  // one (409: two replays would mix the books) and the page shows why; dismiss, start again until
  // that replay has ended.
  const startDeadline = Date.now() + timeoutMs;
  for (;;) {
    await page.click('#replay-start');
    const outcome = await page.waitForFunction(() => {
      if (document.querySelector('#replay-state').textContent === 'running') return 'running';
      const error = document.querySelector('#error').hidden ? '' : document.querySelector('#error-text').textContent;
      return error.includes('another replay') ? error : null;
    });
    const seen = await outcome.jsonValue();
    if (seen === 'running') break;
    if (!summary.replay_refused) log('replay refused:', seen);
    summary.replay_refused = seen;
    if (Date.now() > startDeadline) throw new Error(`replay still refused: ${seen}`);
    await page.click('#error-close');
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
  summary.replay_screenshot = await screenshot(summary, 'replay.png', page.locator('.replay-panel'));
  await page.click('#replay-stop');
  await replayState('stopped');
  summary.replay_states.push('stopped');
}

/** Units of a decimal price string (1e-9), as the page's data-units. */
function priceUnits(text) {
  const [whole, fraction = ''] = text.split('.');
  return String(BigInt(whole) * 1000000000n + BigInt((fraction + '000000000').slice(0, 9)));
}

/** The ladder rows (levels mode) as [side, units, size, count], asks best last then bids. */
function ladderLevels() {
  return page.evaluate(() => [...document.querySelectorAll('#ladder .row[data-side]')].map((row) => {
    const side = row.dataset.side;
    const number = (selector) => Number((row.querySelector(selector)?.textContent || '').replace(/,/g, ''));
    const cnt = [...row.querySelectorAll('.cnt')].map((c) => c.textContent).filter(Boolean);
    return [side, row.dataset.units, number(side === 'ask' ? '.asksize span' : '.bidsize span'), Number(cnt[0] || 0)];
  }));
}

/** A second replay from the page, of another file of the same instruments, after the first one
 *  (stopped halfway, its books full of resting orders): it starts from empty books, so once it
 *  has ended the ladder is exactly the second file's final book, no level or order of the
 *  first, and the quality counters are the second file's own. */
async function checkSecondReplayStartsClean(summary) {
  if (!opts['second-file']) return;
  const books = JSON.parse(readFileSync(opts['second-books'], 'utf8')).books;
  await page.click('#ladder-mode button[data-mode="levels"]');
  await page.waitForSelector('#ladder[data-mode="levels"]');
  const shown = await page.evaluate(() => document.querySelector('#ladder').dataset.instrumentId);
  const book = books.find((b) => String(b.instrument_id) === shown);
  check(book, `no final book of instrument ${shown} in ${opts['second-books']}`);
  const expected = [
    ...book.asks.slice(0, 10).reverse().map((l) => ['ask', priceUnits(l.price), l.size, l.count]),
    ...book.bids.slice(0, 10).map((l) => ['bid', priceUnits(l.price), l.size, l.count]),
  ];
  const before = await ladderLevels();
  await page.fill('#replay-file', opts['second-file']);
  await page.keyboard.press('Escape');
  await page.fill('#replay-rate', '');
  await page.fill('#replay-speed', '');
  await page.click('#replay-start');
  await page.waitForFunction(() => document.querySelector('#replay-state').textContent === 'finished',
    null, { timeout: timeoutMs });
  const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
  let shownLevels = null;
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    shownLevels = await ladderLevels();
    if (same(shownLevels, expected)) break;
    await page.waitForTimeout(500);
  }
  const firstUnits = new Set(before.map((l) => `${l[0]}${l[1]}`));
  summary.second_replay = {
    instrument: shown,
    levels: shownLevels.length,
    exact: same(shownLevels, expected),
    levels_of_the_first_run_left: shownLevels.filter((l) => firstUnits.has(`${l[0]}${l[1]}`)
      && !expected.some((e) => e[0] === l[0] && e[1] === l[1])).length,
  };
  check(summary.second_replay.exact,
    `after the second replay the ladder is not the second file's book:\n${JSON.stringify(shownLevels)}\nexpected\n${JSON.stringify(expected)}`);
  // The counters the page shows for the book: those of the second file alone (a leftover book
  // of the first run would show e.g. add_existing_order climbing).
  const counters = await page.evaluate(() => Object.fromEntries([...document.querySelectorAll('#quality-rows tr[data-counter]')]
    .map((row) => [row.dataset.counter, Number(row.querySelector('td.num').textContent.replace(/,/g, ''))])));
  summary.second_replay.quality = counters;
  const sorted = (o) => JSON.stringify(Object.entries(o).sort());
  check(sorted(counters) === sorted(book.quality),
    `quality counters ${JSON.stringify(counters)} are not the second file's ${JSON.stringify(book.quality)}`);
  summary.second_replay_screenshot = await screenshot(summary, 'second-replay.png', page.locator('#ladder'));
  log('second replay:', summary.second_replay);
}

// In this order: the replay check comes last (after the main screenshot), as it waits for mbo
// run's own replay to end.
const CHECKS = [
  checkLadder,
  checkLiveUpdates,
  checkSwitchInstrument,
  checkTickPadding,
  checkEveryTickLadder,
  checkDepthChart,
  checkQualityBadge,
  checkHistory,
  checkLayout,
  takeScreenshot,
  checkErrorBanner,
  checkReplayControls,
  checkSecondReplayStartsClean,
];

// --------------------------------------------------------------------------------- run

const summary = { url: opts.url, out, checks: [] };
let failed = null;
try {
  log('open', opts.url);
  await page.goto(opts.url, { waitUntil: 'domcontentloaded' });
  await page.waitForSelector('body[data-ready="true"]');
  summary.charts = await page.getAttribute('body', 'data-charts');
  check(summary.charts === 'ready', 'lightweight-charts did not load (ui/dist missing?)');
  for (const run of CHECKS) {
    summary.current_check = run.name;
    await run(summary);
    summary.checks.push(run.name);
  }
  delete summary.current_check;
} catch (error) {
  failed = error;
  summary.error = `${summary.current_check ?? 'open'}: ${String(error.message || error)}`;
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
