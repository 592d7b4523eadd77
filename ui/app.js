// mbo-pipeline web page: plain ES module, no framework. Talks to the API gateway with relative
// URLs (so it works wherever the gateway mounts it) and draws the time charts with TradingView
// lightweight-charts, loaded from the local build (ui/dist/vendor) or, when the gateway serves
// ui/ unbuilt, from ui/node_modules; the depth chart is its own canvas (linear in price). Prices
// stay exact: the API's decimal strings are read as BigInt 1e-9 units, shown padded to the tick
// the page learns from the data, and turned into numbers only for the charts.

const DEPTH = 10;
const MAX_TICK_ROWS = 40; // every-tick ladder: rows a side at most (and half the spread's each)
const LADDER_MODE_KEY = 'mbo-pipeline.ladder-mode';
const INSTRUMENTS_EVERY_MS = 3000;
const REPLAY_EVERY_MS = 1000;
const POLL_BOOK_EVERY_MS = 2000;
const LIVE_MAX_HZ = 10;
const MAX_LIVE_POINTS = 20000;
const TOKEN_KEY = 'mbo-pipeline.token';

const $ = (id) => document.getElementById(id);

const state = {
  instruments: [],
  instrumentKey: '',
  instrumentId: null,
  publisherId: '',
  book: null,
  lastTsNs: null,
  token: sessionStorage.getItem(TOKEN_KEY) || '',
  replay: null,
  replayFileTouched: false,
  updates: 0,
  bookAt: null,
  ladderMode: (() => { try { return localStorage.getItem(LADDER_MODE_KEY) === 'ticks' ? 'ticks' : 'levels'; } catch { return 'levels'; } })(),
};

// ----------------------------------------------------------------------------- helpers

/** JSON.parse keeping integers beyond 2^53 (nanosecond timestamps) exact, as BigInt. */
function parseJson(text) {
  return JSON.parse(text, (key, value, context) => {
    if (typeof value === 'number' && !Number.isSafeInteger(value) && Number.isInteger(value)
        && context && typeof context.source === 'string' && /^-?\d+$/.test(context.source)) {
      return BigInt(context.source);
    }
    return value;
  });
}

function toBigNs(value) {
  if (value === null || value === undefined || value === '') return null;
  if (typeof value === 'bigint') return value;
  if (typeof value === 'number') return BigInt(Math.round(value));
  const text = String(value).trim();
  if (/^-?\d+$/.test(text)) return BigInt(text);
  return parseTimeToNs(text);
}

/** ns since the epoch → "2025-09-24T21:59:59.999707295Z". */
function nsToIso(value) {
  const ns = toBigNs(value);
  if (ns === null) return '–';
  const ms = ns / 1000000n;
  const fraction = (((ns % 1000000000n) + 1000000000n) % 1000000000n).toString().padStart(9, '0');
  const date = new Date(Number(ms));
  if (Number.isNaN(date.getTime())) return String(value);
  return `${date.toISOString().slice(0, 19)}.${fraction}Z`;
}

/** "ns" digits, or an ISO time (UTC unless it names a zone) with up to 9 fraction digits → BigInt ns. */
function parseTimeToNs(input) {
  const text = String(input).trim().replace(' ', 'T');
  if (/^\d+$/.test(text)) return BigInt(text);
  const match = /^(\d{4}-\d\d-\d\d(?:T\d\d:\d\d(?::\d\d)?)?)(?:\.(\d{1,9})\d*)?(Z|[+-]\d\d:?\d\d)?$/i.exec(text);
  if (match) {
    const base = match[1].includes('T') ? match[1] : `${match[1]}T00:00:00`;
    const ms = Date.parse(base + (match[3] || 'Z'));
    if (!Number.isNaN(ms)) return BigInt(ms) * 1000000n + BigInt((match[2] || '').padEnd(9, '0'));
  }
  const ms = Date.parse(text);
  if (Number.isNaN(ms)) throw new Error(`not a time: "${input}" (use ISO, e.g. 2025-09-24T21:00:00Z, or ns)`);
  return BigInt(ms) * 1000000n;
}

const nsToSeconds = (value) => {
  const ns = toBigNs(value);
  return ns === null ? null : Number(ns / 1000000000n);
};

/** Exact decimal string → BigInt in units of 10^-scale. */
function decToUnits(value, scale = 9) {
  let text = String(value).trim();
  const negative = text.startsWith('-');
  if (negative || text.startsWith('+')) text = text.slice(1);
  const [whole, fraction = ''] = text.split('.');
  const units = BigInt(whole || '0') * 10n ** BigInt(scale)
    + BigInt((fraction + '0'.repeat(scale)).slice(0, scale) || '0');
  return negative ? -units : units;
}

function unitsToDec(units, scale = 9) {
  const negative = units < 0n;
  const abs = negative ? -units : units;
  const unit = 10n ** BigInt(scale);
  const fraction = (abs % unit).toString().padStart(scale, '0').replace(/0+$/, '');
  return `${negative ? '-' : ''}${abs / unit}${fraction ? `.${fraction}` : ''}`;
}

const decimals = (price) => {
  const text = String(price);
  const dot = text.indexOf('.');
  return dot < 0 ? 0 : text.length - dot - 1;
};

/** Fraction digits a value in units of 10^-scale needs (trailing zeros dropped). */
function unitDecimals(units, scale = 9) {
  const abs = units < 0n ? -units : units;
  const fraction = (abs % 10n ** BigInt(scale)).toString().padStart(scale, '0').replace(/0+$/, '');
  return fraction.length;
}

/** Units of 10^-scale → decimal string with exactly `places` fraction digits (more only if the
 *  value needs them: digits are never dropped). */
function unitsToFixed(units, scale, places) {
  const negative = units < 0n;
  const abs = negative ? -units : units;
  const unit = 10n ** BigInt(scale);
  let fraction = (abs % unit).toString().padStart(scale, '0').replace(/0+$/, '');
  if (fraction.length < places) fraction = fraction.padEnd(places, '0');
  return `${negative ? '-' : ''}${abs / unit}${fraction ? `.${fraction}` : ''}`;
}

const bigAbs = (x) => (x < 0n ? -x : x);
function bigGcd(a, b) {
  let x = bigAbs(a);
  let y = bigAbs(b);
  while (y) [x, y] = [y, x % y];
  return x;
}

// ------------------------------------------------------------------------------ tick
// The instrument's tick, learned from the data: the greatest common divisor of the differences
// between the distinct prices seen (exact, in 1e-9 units), reset when the instrument changes.
// Every price the page shows is padded to the tick's decimals; mids get one more.

const tick = { anchor: null, step: 0n, decimals: 0, prices: new Set() };
const MAX_TICK_PRICES = 5000; // distinct prices remembered for the count shown (the gcd needs none)

function resetTick() {
  tick.anchor = null;
  tick.step = 0n;
  tick.decimals = 0;
  tick.prices = new Set();
}

/** Learn from decimal-string prices; true when the tick or its decimals changed. */
function learnPrices(prices) {
  const before = `${tick.step}/${tick.decimals}`;
  for (const price of prices) {
    if (price === null || price === undefined || price === '') continue;
    let units;
    try { units = decToUnits(price); } catch { continue; }
    if (tick.prices.size < MAX_TICK_PRICES) tick.prices.add(units);
    if (tick.anchor === null) tick.anchor = units;
    else if (units !== tick.anchor) tick.step = bigGcd(tick.step, units - tick.anchor);
  }
  if (tick.anchor !== null) {
    // Prices are anchor + k·step: the step's decimals, or the anchor's offset from the grid's.
    tick.decimals = tick.step
      ? Math.max(unitDecimals(tick.step), unitDecimals(tick.anchor % tick.step))
      : unitDecimals(tick.anchor);
  }
  return `${tick.step}/${tick.decimals}` !== before;
}

function learnBook(book, bbo = null) {
  const prices = [];
  for (const level of book?.asks || []) prices.push(level.price);
  for (const level of book?.bids || []) prices.push(level.price);
  if (bbo?.bid?.price != null) prices.push(bbo.bid.price);
  if (bbo?.ask?.price != null) prices.push(bbo.ask.price);
  return learnPrices(prices);
}

/** A price (decimal string or 1e-9 units) with the tick's decimals: "64.8" → "64.80". */
function fmtPrice(price) {
  if (price === null || price === undefined) return '–';
  const units = typeof price === 'bigint' ? price : decToUnits(price);
  return unitsToFixed(units, 9, tick.decimals);
}

const tickText = () => (tick.step ? unitsToFixed(tick.step, 9, tick.decimals) : null);

/** Exact mid and spread of two decimal strings (either may be missing): the spread with the
 *  tick's decimals, the mid with one more (half a tick needs at most one more digit). */
function midSpread(bid, ask) {
  if (bid == null || ask == null) return { mid: null, spread: null, spreadUnits: null };
  const b = decToUnits(bid);
  const a = decToUnits(ask);
  return {
    mid: unitsToFixed((a + b) * 5n, 10, tick.decimals + 1),
    spread: unitsToFixed(a - b, 9, tick.decimals),
    spreadUnits: a - b,
  };
}

const esc = (value) => String(value ?? '').replace(/[&<>"']/g,
  (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));

const fmtInt = (n) => (n === null || n === undefined ? '–' : Number(n).toLocaleString('en-US'));

/** The error banner under the header: the whole message (wrapped), until dismissed or replaced;
 *  the same message again counts up instead of flickering. */
const errorState = { message: '', repeats: 0 };
function showError(message) {
  const banner = $('error');
  const text = message ? String(message) : '';
  if (!text) {
    errorState.message = '';
    banner.hidden = true;
    $('error-text').textContent = '';
    return;
  }
  errorState.repeats = text === errorState.message && !banner.hidden ? errorState.repeats + 1 : 1;
  errorState.message = text;
  const time = new Date().toISOString().slice(11, 19);
  $('error-text').textContent = text;
  $('error-meta').textContent = `${time} UTC${errorState.repeats > 1 ? ` · ${errorState.repeats}×` : ''}`;
  banner.hidden = false;
}

// ------------------------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function detailText(detail) {
  if (typeof detail === 'string') return detail;
  if (Array.isArray(detail)) return detail.map((d) => d.msg || JSON.stringify(d)).join('; ');
  return JSON.stringify(detail);
}

async function api(path, { method = 'GET', body } = {}) {
  const headers = { Accept: 'application/json' };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(new URL(path, document.baseURI), {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store',
  });
  if (response.status === 401) {
    $('token-form').hidden = false;
    throw new ApiError(401, 'the API wants a token: enter it at the top right');
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try { data = parseJson(text); } catch { data = text; }
  }
  if (!response.ok) {
    const why = data && typeof data === 'object' && data.detail !== undefined ? detailText(data.detail) : `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, `${method} ${path}: ${why}`);
  }
  return data;
}

// ---------------------------------------------------------------------------- charts

let LW = null;

async function loadCharts() {
  const candidates = [
    './vendor/lightweight-charts.mjs',
    './node_modules/lightweight-charts/dist/lightweight-charts.standalone.production.mjs',
  ];
  for (const candidate of candidates) {
    try { return await import(candidate); } catch { /* next */ }
  }
  return null;
}

/** Chart prices: the tick's decimals, one more for a value off the tick's decimals (a mid, half
 *  a tick). The charts' price scales format every series of a pane alike, so this decides. */
function chartPrice(value) {
  const places = Math.min(tick.decimals + 1, 9);
  const scaled = Math.round(Number(value) * 10 ** places);
  if (!Number.isFinite(scaled)) return String(value);
  return (scaled / 10 ** places).toFixed(scaled % 10 === 0 ? places - 1 : places);
}

const chartTheme = () => ({
  autoSize: true,
  layout: { background: { type: 'solid', color: '#171e26' }, textColor: '#9aa7b5', fontSize: 11, attributionLogo: false },
  localization: { priceFormatter: chartPrice },
  grid: { vertLines: { color: '#1f2833' }, horzLines: { color: '#1f2833' } },
  rightPriceScale: { borderColor: '#263140' },
  timeScale: { borderColor: '#263140', timeVisible: true, secondsVisible: true },
  crosshair: { mode: 0 },
});

function noChart(id) {
  $(id).innerHTML = '<div class="note">charts unavailable: run <code>npm run build</code> in ui/</div>';
}

const charts = { mid: null, depth: null, history: null };
const live = { points: { bid: [], ask: [], mid: [], spread: [] }, lastTime: null, precision: null };

function setupCharts() {
  charts.depth = new DepthChart($('depth-chart'));
  if (!LW) {
    ['mid-chart', 'history-chart'].forEach(noChart);
    return;
  }
  // Mid / best bid / best ask on top, spread in a second pane.
  const mid = LW.createChart($('mid-chart'), chartTheme());
  charts.mid = {
    chart: mid,
    bid: mid.addSeries(LW.LineSeries, { color: '#26a69a', lineWidth: 1, title: 'bid', lineType: 1, priceLineVisible: false }),
    ask: mid.addSeries(LW.LineSeries, { color: '#ef5350', lineWidth: 1, title: 'ask', lineType: 1, priceLineVisible: false }),
    mid: mid.addSeries(LW.LineSeries, { color: '#4c8dff', lineWidth: 2, title: 'mid' }),
    spread: mid.addSeries(LW.LineSeries, { color: '#f0b429', lineWidth: 1, title: 'spread', lineType: 1 }, 1),
  };
  try { mid.panes()[1].setHeight(70); } catch { /* older API */ }

  // History: mid OHLC candles per bucket, spread below; a click picks the "book as of" time.
  const history = LW.createChart($('history-chart'), chartTheme());
  charts.history = {
    chart: history,
    candles: history.addSeries(LW.CandlestickSeries, {
      upColor: '#26a69a', downColor: '#ef5350', borderVisible: false,
      wickUpColor: '#26a69a', wickDownColor: '#ef5350', title: 'mid',
    }),
    spread: history.addSeries(LW.LineSeries, { color: '#f0b429', lineWidth: 1, title: 'spread', lineType: 1 }, 1),
  };
  try { history.panes()[1].setHeight(60); } catch { /* older API */ }
  setHistoryNote(HISTORY_HINT);
  history.subscribeClick((param) => {
    if (param && param.time !== undefined && typeof param.time === 'number') {
      $('bookat-ts').value = nsToIso(BigInt(param.time) * 1000000000n);
      loadBookAt();
    }
  });
}

function setPrecision(precision) {
  if (!charts.mid || precision === live.precision) return;
  live.precision = precision;
  const format = (p) => ({ type: 'price', precision: p, minMove: 1 / 10 ** p });
  charts.mid.bid.applyOptions({ priceFormat: format(precision) });
  charts.mid.ask.applyOptions({ priceFormat: format(precision) });
  charts.mid.mid.applyOptions({ priceFormat: format(Math.min(precision + 1, 9)) });
  charts.mid.spread.applyOptions({ priceFormat: format(precision) });
}

function resetLiveCharts() {
  live.points = { bid: [], ask: [], mid: [], spread: [] };
  live.lastTime = null;
  if (!charts.mid) return;
  for (const key of ['bid', 'ask', 'mid', 'spread']) charts.mid[key].setData([]);
}

function pushLivePoint(key, time, value) {
  const points = live.points[key];
  const last = points[points.length - 1];
  const point = { time, value };
  if (last && last.time === time) points[points.length - 1] = point;
  else points.push(point);
  if (points.length > MAX_LIVE_POINTS) {
    points.splice(0, points.length - MAX_LIVE_POINTS / 2);
    charts.mid[key].setData(points);
  } else {
    charts.mid[key].update(point);
  }
}

function feedLiveCharts(book, bbo) {
  if (!charts.mid) return;
  const time = nsToSeconds(book.ts_event);
  if (time === null) return;
  if (live.lastTime !== null && time < live.lastTime) resetLiveCharts(); // a new replay or loop
  live.lastTime = time;
  const bid = bbo?.bid?.price ?? book.bids?.[0]?.price ?? null;
  const ask = bbo?.ask?.price ?? book.asks?.[0]?.price ?? null;
  setPrecision(tick.decimals);
  if (bid != null) pushLivePoint('bid', time, Number(bid));
  if (ask != null) pushLivePoint('ask', time, Number(ask));
  const { mid, spread } = midSpread(bid, ask);
  if (mid !== null) {
    pushLivePoint('mid', time, Number(mid));
    pushLivePoint('spread', time, Number(spread));
  }
}

/** The live chart starts with the last few minutes of 1 s bars from ClickHouse (mid, spread). */
async function seedLiveChart(id) {
  const end = toBigNs(currentInstrument()?.last_update_ns);
  if (!charts.mid || end === null || end === undefined) return;
  const params = new URLSearchParams({
    start: String(end - 300n * 1000000000n), end: String(end + 1000000000n), bucket: '1s',
  });
  if (state.publisherId !== '') params.set('publisher_id', state.publisherId);
  let data;
  try {
    data = await api(`v1/instruments/${encodeURIComponent(id)}/bbo/history?${params}`);
  } catch {
    return; // history is a nicety here; the live feed goes on without it
  }
  if (String(id) !== String(state.instrumentId)) return;
  const firstLive = live.points.mid[0]?.time ?? Infinity;
  const bars = (data?.bars || [])
    .map((bar) => ({ time: nsToSeconds(bar.t), bar }))
    .filter(({ time, bar }) => time !== null && time < firstLive && bar.close != null)
    .sort((a, b) => a.time - b.time)
    .filter((x, i, all) => i === 0 || x.time !== all[i - 1].time);
  if (!bars.length) return;
  live.points.mid = [...bars.map(({ time, bar }) => ({ time, value: Number(bar.close) })), ...live.points.mid];
  live.points.spread = [
    ...bars.filter(({ bar }) => bar.spread != null).map(({ time, bar }) => ({ time, value: Number(bar.spread) })),
    ...live.points.spread,
  ];
  charts.mid.mid.setData(live.points.mid);
  charts.mid.spread.setData(live.points.spread);
  if (live.lastTime === null) live.lastTime = bars[bars.length - 1].time;
}

// Depth chart: our own <canvas>, so that x is linear in price (lightweight-charts' price-scaled
// "options" chart spaces its points evenly, whatever their prices). Cumulative size per side as
// stepped areas: at price p the bid curve is the size of the bids at p or above, the ask curve
// the size of the asks at p or below; a gap in the book is a flat stretch as wide as the gap.
// Axis labels fall on multiples of the tick, padded to its decimals.

const DEPTH_STYLE = {
  bid: '#26a69a', bidFill: 'rgba(38, 166, 154, 0.30)',
  ask: '#ef5350', askFill: 'rgba(239, 83, 80, 0.30)',
  text: '#9aa7b5', grid: '#1f2833', axis: '#263140', mid: '#4c8dff', warn: '#ff8a87',
  font: '11px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif',
};

/** 1, 2 or 5 × 10^k, the smallest at least `x` (x > 0). */
function niceNumber(x) {
  const power = 10 ** Math.floor(Math.log10(x));
  for (const m of [1, 2, 5, 10]) if (m * power >= x) return m * power;
  return 10 * power;
}

const mod = (a, m) => ((a % m) + m) % m;

/** Label spacings for a price axis, smallest first: the tick, twice it, and the round prices
 *  (1, 1.25, 2, 2.5, 5 × 10^k) that are whole multiples of it (tick 0.25: 0.25, 0.50, 1.00, 1.25,
 *  2.00, 2.50, 5.00, …; tick 1/64: 0.015625, 0.03125, 0.125, 0.25, …). In 1e-9 units. */
function labelSteps(step) {
  const found = new Set([step, 2n * step]);
  for (let e = 0n; e <= 20n; e += 1n) {
    const base = 10n ** e;
    for (const [num, den] of [[1n, 1n], [5n, 4n], [2n, 1n], [5n, 2n], [5n, 1n]]) {
      const candidate = (base * num) / den;
      if ((base * num) % den === 0n && candidate >= step && candidate % step === 0n) found.add(candidate);
    }
  }
  return [...found].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

class DepthChart {
  constructor(el) {
    this.el = el;
    el.innerHTML = '';
    this.canvas = document.createElement('canvas');
    this.canvas.setAttribute('role', 'img');
    this.canvas.setAttribute('aria-label', 'Depth chart: cumulative size of each side against price');
    this.tip = document.createElement('div');
    this.tip.className = 'depth-tip';
    this.tip.hidden = true;
    el.append(this.canvas, this.tip);
    this.book = null;
    this.hoverX = null;
    this.layout = null;
    new ResizeObserver(() => this.draw()).observe(el);
    this.canvas.addEventListener('mousemove', (event) => { this.hoverX = event.offsetX; this.draw(); });
    this.canvas.addEventListener('mouseleave', () => { this.hoverX = null; this.draw(); });
  }

  setBook(book) {
    this.book = book;
    this.draw();
  }

  /** Sizes the canvas to its pane (CSS pixels × devicePixelRatio); the 2D context in CSS pixels. */
  context() {
    const width = Math.max(0, Math.floor(this.el.clientWidth));
    const height = Math.max(0, Math.floor(this.el.clientHeight));
    const ratio = window.devicePixelRatio || 1;
    if (this.canvas.width !== Math.round(width * ratio) || this.canvas.height !== Math.round(height * ratio)) {
      this.canvas.width = Math.round(width * ratio);
      this.canvas.height = Math.round(height * ratio);
      this.canvas.style.width = `${width}px`;
      this.canvas.style.height = `${height}px`;
    }
    const ctx = this.canvas.getContext('2d');
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    ctx.font = DEPTH_STYLE.font;
    return { ctx, width, height };
  }

  draw() {
    const { ctx, width, height } = this.context();
    const side = (levels) => (levels || []).map((l) => ({ units: decToUnits(l.price), size: Number(l.size) }));
    const bids = side(this.book?.bids).sort((a, b) => (a.units < b.units ? 1 : a.units > b.units ? -1 : 0));
    const asks = side(this.book?.asks).sort((a, b) => (a.units < b.units ? -1 : a.units > b.units ? 1 : 0));
    this.el.dataset.levels = String(bids.length + asks.length);
    if ((!bids.length && !asks.length) || width < 60 || height < 60) {
      this.el.dataset.labels = '[]';
      this.el.dataset.axis = '[]';
      this.tip.hidden = true;
      ctx.fillStyle = DEPTH_STYLE.text;
      ctx.textAlign = 'center';
      ctx.textBaseline = 'middle';
      ctx.fillText(this.book ? 'empty book' : 'waiting for a book…', width / 2, height / 2);
      return;
    }
    let total = 0;
    for (const level of bids) { total += level.size; level.cum = total; }
    const bidTotal = total;
    total = 0;
    for (const level of asks) { total += level.size; level.cum = total; }
    const askTotal = total;

    // Price range: every level shown, padded a little; x is linear in price over it.
    const all = [...bids, ...asks].map((l) => l.units);
    let lo = all.reduce((a, b) => (b < a ? b : a));
    let hi = all.reduce((a, b) => (b > a ? b : a));
    const step = tick.step || (hi > lo ? hi - lo : 1000000000n);
    const pad = (hi - lo) / 40n > step ? (hi - lo) / 40n : step;
    lo -= pad;
    hi += pad;
    const span = Number(hi - lo);

    // Vertical scale: 0 … a round number above the larger side's total.
    const yMaxRaw = Math.max(bidTotal, askTotal, 1) * 1.08;
    const yStep = niceNumber(yMaxRaw / 4);
    const yMax = Math.ceil(yMaxRaw / yStep) * yStep;
    const yLabelWidth = Math.max(...[0, yMax].map((v) => ctx.measureText(fmtInt(v)).width));
    const left = 6;
    const right = width - yLabelWidth - 12;
    const top = 18;
    const bottom = height - 22;
    const plotW = right - left;
    const plotH = bottom - top;
    const X = (units) => left + (Number(units - lo) / span) * plotW;
    const Y = (value) => bottom - (value / yMax) * plotH;
    this.layout = { lo, hi, span, left, right, top, bottom, step, bids, asks };

    // Grid and vertical axis (sizes, right).
    ctx.strokeStyle = DEPTH_STYLE.grid;
    ctx.lineWidth = 1;
    ctx.fillStyle = DEPTH_STYLE.text;
    ctx.textAlign = 'left';
    ctx.textBaseline = 'middle';
    for (let v = 0; v <= yMax + 1e-9; v += yStep) {
      const y = Math.round(Y(v)) + 0.5;
      ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(right, y); ctx.stroke();
      ctx.fillText(fmtInt(v), right + 6, y);
    }

    // Horizontal axis (price): labels on multiples of a round number of ticks, on the tick grid.
    const base = tick.step && tick.anchor !== null ? mod(tick.anchor, tick.step) : 0n;
    const labelWidth = Math.max(ctx.measureText(fmtPrice(lo)).width, ctx.measureText(fmtPrice(hi)).width) + 16;
    const fits = (candidate) => (Number(candidate) / span) * plotW >= labelWidth;
    const labelStep = labelSteps(step).find(fits) ?? step * BigInt(Math.ceil((labelWidth / plotW) * (span / Number(step))));
    const labels = [];
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    for (let units = lo + mod(base - lo, labelStep); units <= hi; units += labelStep) {
      const x = X(units);
      const text = fmtPrice(units);
      const half = ctx.measureText(text).width / 2;
      if (x - half < 0 || x + half > width) continue;
      labels.push({ units: String(units), x, text });
      ctx.strokeStyle = DEPTH_STYLE.grid;
      ctx.beginPath(); ctx.moveTo(Math.round(x) + 0.5, top); ctx.lineTo(Math.round(x) + 0.5, bottom + 4); ctx.stroke();
      ctx.fillStyle = DEPTH_STYLE.text;
      ctx.fillText(text, x, bottom + 6);
    }
    ctx.strokeStyle = DEPTH_STYLE.axis;
    ctx.beginPath(); ctx.moveTo(left, bottom + 0.5); ctx.lineTo(right, bottom + 0.5); ctx.stroke();
    this.el.dataset.labels = JSON.stringify(labels.map((l) => l.text));
    this.el.dataset.axis = JSON.stringify(labels.map((l) => [l.units, Number(l.x.toFixed(3))]));
    this.el.dataset.decimals = String(tick.decimals);

    // The two stepped areas; the outermost level's total runs on to the edge of the range.
    const area = (levels, edge, line, fill) => {
      if (!levels.length) return;
      const points = [[X(levels[0].units), Y(0)]];
      let previous = 0;
      for (const level of levels) {
        const x = X(level.units);
        points.push([x, Y(previous)], [x, Y(level.cum)]);
        previous = level.cum;
      }
      points.push([edge, Y(previous)]);
      ctx.beginPath();
      points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
      ctx.strokeStyle = line;
      ctx.lineWidth = 2;
      ctx.stroke();
      ctx.lineTo(edge, Y(0));
      ctx.closePath();
      ctx.fillStyle = fill;
      ctx.fill();
    };
    ctx.save();
    ctx.beginPath(); ctx.rect(left, top - 2, plotW, plotH + 2); ctx.clip();
    area(bids, left, DEPTH_STYLE.bid, DEPTH_STYLE.bidFill);
    area(asks, right, DEPTH_STYLE.ask, DEPTH_STYLE.askFill);
    ctx.restore();

    // The touch: a dashed line at the mid (exact, one decimal more than the tick).
    ctx.textBaseline = 'top';
    if (bids.length && asks.length) {
      const x = (X(bids[0].units) + X(asks[0].units)) / 2;
      ctx.strokeStyle = DEPTH_STYLE.mid;
      ctx.lineWidth = 1;
      ctx.setLineDash([4, 3]);
      ctx.beginPath(); ctx.moveTo(Math.round(x) + 0.5, top); ctx.lineTo(Math.round(x) + 0.5, bottom); ctx.stroke();
      ctx.setLineDash([]);
      const { mid } = midSpread(unitsToDec(bids[0].units), unitsToDec(asks[0].units));
      const crossed = bids[0].units > asks[0].units;
      const locked = bids[0].units === asks[0].units;
      const text = `mid ${mid}${crossed ? ' · CROSSED' : locked ? ' · LOCKED' : ''}`;
      ctx.fillStyle = crossed || locked ? DEPTH_STYLE.warn : DEPTH_STYLE.mid;
      ctx.textAlign = x < width / 2 ? 'left' : 'right';
      ctx.fillText(text, x + (x < width / 2 ? 4 : -4), 3);
    }
    this.drawHover(ctx, X);
  }

  drawHover(ctx, X) {
    const layout = this.layout;
    if (this.hoverX === null || !layout || this.hoverX < layout.left || this.hoverX > layout.right) {
      this.tip.hidden = true;
      return;
    }
    const raw = layout.lo + BigInt(Math.round(((this.hoverX - layout.left) / (layout.right - layout.left)) * layout.span));
    const base = tick.step && tick.anchor !== null ? mod(tick.anchor, tick.step) : 0n;
    const step = tick.step || 1n;
    const units = base + ((raw - base + step / 2n) / step) * step; // the nearest tick
    const bidSize = layout.bids.filter((l) => l.units >= units).reduce((sum, l) => sum + l.size, 0);
    const askSize = layout.asks.filter((l) => l.units <= units).reduce((sum, l) => sum + l.size, 0);
    const x = Math.round(X(units)) + 0.5;
    ctx.strokeStyle = '#7d8a99';
    ctx.lineWidth = 1;
    ctx.beginPath(); ctx.moveTo(x, layout.top); ctx.lineTo(x, layout.bottom); ctx.stroke();
    this.tip.textContent = `${fmtPrice(units)} · bids at or above: ${fmtInt(bidSize)} · asks at or below: ${fmtInt(askSize)}`;
    this.tip.hidden = false;
  }
}

function feedDepth(book) {
  charts.depth?.setBook(book);
}

// ---------------------------------------------------------------------------- ladder

// Two modes: "levels" lists the book's levels (10 a side) one under the other, whatever their
// prices; "every tick" is a real ladder: one row per tick price around the touch, so empty prices
// are empty rows (a gap of 53 ticks is 53 rows), at most MAX_TICK_ROWS a side (and a side's
// half of the spread), saying what it leaves out. A crossed or locked book is drawn as it is: in every-tick
// mode bids above asks, a price with both a bid and an ask size on one row.

const HEAD_ROW = '<div class="row head"><span class="cnt">orders</span><span class="bidsize-head">bid size</span>'
  + '<span class="price">price</span><span class="asksize-head">ask size</span><span class="cnt">orders</span></div>';
const userScrolled = new WeakMap(); // ladder element → when the user last scrolled it (ms)

const byUnits = (levels) => (levels || []).map((level) => ({ ...level, units: decToUnits(level.price) }));
const plural = (n, word) => `${fmtInt(n)} ${word}${Number(n) === 1 ? '' : 's'}`;

/** The spread in words, with its size in ticks when the tick is known. */
function spreadText(bestBid, bestAsk) {
  if (!bestBid || !bestAsk) return 'one side empty';
  const { spread, spreadUnits } = midSpread(bestBid.price, bestAsk.price);
  const ticks = tick.step ? spreadUnits / tick.step : null;
  const inTicks = (n) => (ticks === null ? '' : ` (${plural(n, 'tick')})`);
  if (spreadUnits < 0n) return `crossed by ${spread.replace('-', '')}${inTicks(-ticks)}`;
  if (spreadUnits === 0n) return 'locked (bid = ask)';
  return `spread ${spread}${inTicks(ticks)}`;
}

function renderLadder(el, book, { previous = null, mode = 'levels' } = {}) {
  const asks = byUnits(book.asks).sort((a, b) => (a.units < b.units ? -1 : a.units > b.units ? 1 : 0));
  const bids = byUnits(book.bids).sort((a, b) => (a.units < b.units ? 1 : a.units > b.units ? -1 : 0));
  const before = new Map();
  if (previous) {
    for (const l of byUnits(previous.asks)) before.set(`a${l.units}`, `${l.size}/${l.count}`);
    for (const l of byUnits(previous.bids)) before.set(`b${l.units}`, `${l.size}/${l.count}`);
  }
  const changed = (side, l) => Boolean(previous && l && before.get(`${side}${l.units}`) !== `${l.size}/${l.count}`);
  const shown = mode === 'ticks' && tick.step ? tickRows(asks, bids) : levelRows(asks, bids);
  const levels = shown.rows.flatMap((r) => [r.ask, r.bid]).filter(Boolean);
  const maxSize = Math.max(1, ...levels.map((l) => Number(l.size)));
  const bar = (size) => `<div class="fill" style="width:${((Number(size) / maxSize) * 100).toFixed(1)}%"></div>`;
  const cells = (level) => (level
    ? [`${bar(level.size)}<span>${fmtInt(level.size)}</span>`, fmtInt(level.count)]
    : ['', '']);
  const html = [HEAD_ROW];
  if (!asks.length && !bids.length) html.push('<div class="empty">empty book</div>');
  for (const row of shown.rows) {
    if (row.note !== undefined) {
      html.push(`<div class="gap${row.warn ? ' crossed' : ''}${row.marker ? ' marker' : ''}">${esc(row.note)}</div>`);
      continue;
    }
    const side = row.ask && row.bid ? 'both' : row.ask ? 'ask' : row.bid ? 'bid' : '';
    const classes = ['row', side || 'none', ...(row.classes || [])];
    if (changed('a', row.ask) || changed('b', row.bid)) classes.push('flash');
    const [bidSize, bidCount] = cells(row.bid);
    const [askSize, askCount] = cells(row.ask);
    html.push(`<div class="${classes.join(' ')}"${side ? ` data-side="${side}"` : ' data-empty="true"'}`
      + ` data-units="${row.units}" data-price="${esc(unitsToDec(row.units))}">`
      + `<span class="cnt">${bidCount}</span><span class="size bidsize">${bidSize}</span>`
      + `<span class="price">${esc(fmtPrice(row.units))}</span>`
      + `<span class="size asksize">${askSize}</span><span class="cnt">${askCount}</span></div>`);
  }
  el.innerHTML = html.join('');
  el.dataset.mode = mode === 'ticks' && tick.step ? 'ticks' : 'levels';
  el.dataset.tick = String(tick.step);
  el.dataset.decimals = String(tick.decimals);
  el.dataset.emptyRows = String(shown.rows.filter((r) => r.units !== undefined && !r.ask && !r.bid).length);
  centerTouch(el);
  return shown.text;
}

/** "levels": the asks (best last), the spread, the bids (best first). */
function levelRows(asks, bids) {
  const rows = [];
  asks.slice(0, DEPTH).reverse().forEach((l, i, all) => {
    rows.push({ units: l.units, ask: l, classes: i === all.length - 1 ? ['best'] : [] });
  });
  if (asks.length || bids.length) {
    const crossedOrLocked = asks.length && bids.length && bids[0].units >= asks[0].units;
    rows.push({ note: spreadText(bids[0], asks[0]), warn: crossedOrLocked });
  }
  bids.slice(0, DEPTH).forEach((l, i) => rows.push({ units: l.units, bid: l, classes: i === 0 ? ['best'] : [] }));
  const text = `levels: ${plural(Math.min(asks.length, DEPTH), 'ask')} and ${plural(Math.min(bids.length, DEPTH), 'bid')}, `
    + `each at its price${tick.step ? ` · tick ${tickText()}` : ''}`;
  return { rows, text };
}

/** "every tick": every price of the tick grid from the deepest ask shown down to the deepest bid
 *  shown, each side at most MAX_TICK_ROWS ticks from its best price, the inside of the spread
 *  (or the crossed zone) elided in its middle beyond 2 × MAX_TICK_ROWS (half to each side). */
function tickRows(asks, bids) {
  const step = tick.step;
  const span = BigInt(MAX_TICK_ROWS - 1) * step;
  const bestAsk = asks[0]?.units ?? null;
  const bestBid = bids[0]?.units ?? null;
  const askTop = asks.length ? (asks[asks.length - 1].units < bestAsk + span ? asks[asks.length - 1].units : bestAsk + span) : null;
  const bidBottom = bids.length ? (bids[bids.length - 1].units > bestBid - span ? bids[bids.length - 1].units : bestBid - span) : null;
  const max = (a, b) => (a === null ? b : b === null ? a : a > b ? a : b);
  const min = (a, b) => (a === null ? b : b === null ? a : a < b ? a : b);
  const top = max(askTop, bestBid);
  const bottom = min(bidBottom, bestAsk);
  const askAt = new Map(asks.map((l) => [l.units, l]));
  const bidAt = new Map(bids.map((l) => [l.units, l]));
  const hiddenAsks = asks.filter((l) => l.units > top);
  const hiddenBids = bids.filter((l) => l.units < bottom);
  // Between the best bid and the best ask (the spread, or the crossed zone): elided in the middle.
  let skipFrom = null;
  let skipTo = null;
  if (bestAsk !== null && bestBid !== null) {
    const hi = max(bestAsk, bestBid);
    const lo = min(bestAsk, bestBid);
    const between = (hi - lo) / step - 1n;
    if (between > BigInt(2 * MAX_TICK_ROWS)) {
      const keep = BigInt(MAX_TICK_ROWS) * step;
      skipFrom = hi - keep - step; // first price left out (descending)
      skipTo = lo + keep + step; // last price left out
    }
  }
  const crossed = bestAsk !== null && bestBid !== null && bestBid >= bestAsk;
  const rows = [];
  if (hiddenAsks.length) {
    rows.push({ note: `▲ ${plural(hiddenAsks.length, 'more ask level')} up to ${fmtPrice(hiddenAsks[hiddenAsks.length - 1].units)}, over ${MAX_TICK_ROWS} ticks above the best ask (capped)`, marker: true });
  }
  for (let units = top; units >= bottom; units -= step) {
    if (skipFrom !== null && units === skipFrom) {
      const count = (skipFrom - skipTo) / step + 1n;
      const from = skipFrom;
      const inside = [...asks, ...bids].filter((l) => l.units <= from && l.units >= skipTo).length;
      rows.push({
        note: `… ${plural(count, 'tick')} from ${fmtPrice(skipFrom)} to ${fmtPrice(skipTo)} not shown`
          + `${inside ? `, with ${plural(inside, 'level')}` : ''} (capped at ${MAX_TICK_ROWS} a side) …`,
        marker: true,
        warn: crossed,
      });
      units = skipTo;
      continue;
    }
    const ask = askAt.get(units);
    const bid = bidAt.get(units);
    const classes = [];
    if (units === bestAsk || units === bestBid) classes.push('best');
    if (crossed && units >= bestAsk && units <= bestBid) classes.push('crossed-zone');
    else if (!ask && !bid) {
      if (bestAsk !== null && units > bestAsk) classes.push('ask-side');
      else if (bestBid !== null && units < bestBid) classes.push('bid-side');
      else classes.push('inside');
    }
    rows.push({ units, ask, bid, classes });
  }
  if (hiddenBids.length) {
    rows.push({ note: `▼ ${plural(hiddenBids.length, 'more bid level')} down to ${fmtPrice(hiddenBids[hiddenBids.length - 1].units)}, over ${MAX_TICK_ROWS} ticks below the best bid (capped)`, marker: true });
  }
  const empty = rows.filter((r) => r.units !== undefined && !r.ask && !r.bid).length;
  const text = `every tick of ${tickText()}: ${plural(rows.filter((r) => r.units !== undefined).length, 'row')}, `
    + `${fmtInt(empty)} empty · ${spreadText(bids[0], asks[0])}`;
  return { rows, text };
}

/** Keeps the touch in the middle of a ladder that scrolls, unless the user scrolled it lately. */
function centerTouch(el) {
  if (el.scrollHeight <= el.clientHeight) return;
  if (Date.now() - (userScrolled.get(el) || 0) < 5000) return;
  const marks = el.querySelectorAll('.row.best, .gap:not(.marker)');
  if (!marks.length) return;
  const first = marks[0];
  const last = marks[marks.length - 1];
  const middle = (first.offsetTop + last.offsetTop + last.offsetHeight) / 2;
  el.scrollTop = Math.max(0, middle - el.clientHeight / 2);
}

function watchLadderScroll(el) {
  const mark = () => userScrolled.set(el, Date.now());
  for (const type of ['wheel', 'touchmove', 'keydown', 'mousedown']) el.addEventListener(type, mark, { passive: true });
}

function setLadderMode(mode) {
  state.ladderMode = mode === 'ticks' ? 'ticks' : 'levels';
  try { localStorage.setItem(LADDER_MODE_KEY, state.ladderMode); } catch { /* private mode */ }
  for (const button of document.querySelectorAll('#ladder-mode button')) {
    button.setAttribute('aria-pressed', String(button.dataset.mode === state.ladderMode));
  }
  for (const el of [$('ladder'), $('bookat-ladder')]) userScrolled.delete(el);
  if (state.book) $('ladder-note').textContent = renderLadder($('ladder'), state.book, { mode: state.ladderMode });
  if (state.bookAt) renderLadder($('bookat-ladder'), state.bookAt, { mode: state.ladderMode });
}

function setBadge(el, on, cls, text) {
  el.className = `badge ${on ? cls : 'off'}`;
  if (text !== undefined) el.textContent = text;
}

// What each data-quality counter of a book counts (mbo_core/quality.py; the kernel's Q_* notes).
const QUALITY_MEANINGS = {
  cancel_unknown_order: 'cancels of orders not in the book (the data starts mid-session, after their add): nothing changes',
  modify_unknown_order: 'modifies of orders not in the book (added before the data starts): applied as an add',
  cancel_exceeds_size: 'cancels of more than the order\'s resting size: the order leaves the book',
  maybe_bad_book: 'records the venue flagged F_MAYBE_BAD_BOOK (its own book may be wrong there)',
  add_existing_order: 'adds of an order id already resting: the old order is replaced',
  modify_changed_side: 'modifies that move an order to the other side of the book',
  invalid_record: 'add, cancel or modify with side N, or an unknown action: not applied',
  unterminated_event_records: 'records of an event never closed by F_LAST (the stream was cut): not applied',
};

function renderQuality(quality) {
  const el = $('badge-quality');
  const entries = Object.entries(quality || {});
  const total = entries.reduce((sum, [, v]) => sum + Number(v || 0), 0);
  setBadge(el, true, total ? 'on-warn' : 'good', total ? `quality: ${fmtInt(total)} issue${total === 1 ? '' : 's'}` : 'quality: clean');
  const meaning = (name) => QUALITY_MEANINGS[name] || 'a counter this page does not know yet';
  el.title = entries.length
    ? `Data-quality counters of this book (click for the list):\n${entries.map(([k, v]) => `${k}: ${fmtInt(v)} — ${meaning(k)}`).join('\n')}`
    : 'no data-quality counters';
  const key = JSON.stringify(entries);
  const pop = $('quality-pop');
  if (pop.dataset.key === key) return;
  pop.dataset.key = key;
  $('quality-rows').innerHTML = entries.length
    ? entries.map(([name, value]) => `<tr data-counter="${esc(name)}" class="${Number(value) ? 'nonzero' : ''}">`
      + `<th scope="row"><code>${esc(name)}</code></th><td class="num">${fmtInt(value)}</td><td>${esc(meaning(name))}</td></tr>`).join('')
    : '<tr><td colspan="3">this book reports no counters</td></tr>';
}

function toggleQuality(open) {
  const pop = $('quality-pop');
  const show = open ?? pop.hidden;
  pop.hidden = !show;
  $('badge-quality').setAttribute('aria-expanded', String(show));
}

const levelText = (level) => (level ? `${fmtPrice(level.price)} × ${fmtInt(level.size)}` : '–');

/** Everything that shows the current (live) book. */
function showBook(book, bbo = null) {
  if (!book || String(book.instrument_id) !== String(state.instrumentId)) return;
  learnBook(book, bbo);
  const ladder = $('ladder');
  $('ladder-note').textContent = renderLadder(ladder, book, { previous: state.book, mode: state.ladderMode });
  state.book = book;
  state.updates += 1;
  ladder.dataset.instrumentId = String(book.instrument_id);
  ladder.dataset.symbol = book.symbol ?? '';
  ladder.dataset.updates = String(state.updates);
  const publisher = book.publisher_id === null || book.publisher_id === undefined ? 'consolidated' : `publisher ${book.publisher_id}`;
  $('ladder-title').textContent = `${book.symbol ?? '?'} · ${book.instrument_id} · ${publisher}`;
  const bestBid = bbo ? bbo.bid : (book.bids || [])[0];
  const bestAsk = bbo ? bbo.ask : (book.asks || [])[0];
  $('best-bid').textContent = levelText(bestBid);
  $('best-ask').textContent = levelText(bestAsk);
  const { mid, spread } = midSpread(bestBid?.price, bestAsk?.price);
  $('mid').textContent = mid ?? '–';
  $('spread').textContent = spread ?? '–';
  $('ts-event').textContent = nsToIso(book.ts_event);
  $('ts-event').title = `ts_event ${book.ts_event} · ts_recv ${book.ts_recv}`;
  $('sequence').textContent = book.sequence ?? '–';
  setBadge($('badge-crossed'), Boolean(book.crossed), 'on-bad', book.crossed ? 'CROSSED' : 'crossed');
  setBadge($('badge-locked'), Boolean(book.locked), 'on-warn', book.locked ? 'LOCKED' : 'locked');
  renderQuality(book.quality);
  state.lastTsNs = toBigNs(book.ts_event);
  feedLiveCharts(book, bbo);
  feedDepth(book);
}

// ------------------------------------------------------------------------ instruments

function instrumentLabel(item) {
  const flags = item.crossed ? ' ⚠ crossed' : item.locked ? ' ⚠ locked' : '';
  return `${item.symbol ?? '?'} · ${item.instrument_id}${flags}`;
}

async function refreshInstruments() {
  let list;
  try {
    list = await api('v1/instruments');
  } catch (error) {
    showError(error.message);
    return;
  }
  if (!Array.isArray(list)) return;
  list.sort((a, b) => String(a.symbol ?? '').localeCompare(String(b.symbol ?? '')) || Number(a.instrument_id) - Number(b.instrument_id));
  state.instruments = list;
  const select = $('instrument');
  const key = JSON.stringify(list.map(instrumentLabel));
  if (key !== state.instrumentKey) {
    state.instrumentKey = key;
    const keep = state.instrumentId;
    select.innerHTML = list.length
      ? list.map((item) => `<option value="${esc(item.instrument_id)}">${esc(instrumentLabel(item))}</option>`).join('')
      : '<option value="">no instruments yet</option>';
    if (keep !== null && list.some((item) => String(item.instrument_id) === String(keep))) {
      select.value = String(keep);
    }
  }
  if (state.instrumentId === null && list.length) {
    const wanted = new URLSearchParams(location.hash.slice(1)).get('instrument');
    // #instrument= takes an id or a symbol (#instrument=CLX5).
    const first = list.find((item) => String(item.instrument_id) === wanted)
      || list.find((item) => item.symbol && item.symbol === wanted) || list[0];
    select.value = String(first.instrument_id);
    selectInstrument(String(first.instrument_id));
  }
}

function currentInstrument() {
  return state.instruments.find((item) => String(item.instrument_id) === String(state.instrumentId));
}

function fillPublishers() {
  const item = currentInstrument();
  const publishers = item?.publishers || [];
  const select = $('publisher');
  select.innerHTML = '<option value="">all (consolidated)</option>'
    + publishers.map((p) => `<option value="${esc(p)}">${esc(p)}</option>`).join('');
  select.value = state.publisherId;
  if (select.value !== state.publisherId) { state.publisherId = ''; select.value = ''; }
  select.disabled = publishers.length <= 1;
}

function bookQuery() {
  const params = new URLSearchParams({ depth: String(DEPTH) });
  if (state.publisherId !== '') params.set('publisher_id', state.publisherId);
  return params;
}

async function loadBookOnce() {
  if (state.instrumentId === null) return;
  const id = state.instrumentId;
  try {
    const book = await api(`v1/instruments/${encodeURIComponent(id)}/book?${bookQuery()}`);
    if (String(id) === String(state.instrumentId) && (!state.book || String(state.book.instrument_id) !== String(id) || live.socketState !== 'live')) {
      showBook(book);
    }
  } catch (error) {
    if (error.status !== 404) showError(error.message);
  }
}

function selectInstrument(id) {
  if (!id) return;
  state.instrumentId = id;
  state.book = null;
  state.bookAt = null;
  state.updates = 0;
  resetTick();
  const ladder = $('ladder');
  ladder.dataset.instrumentId = '';
  ladder.dataset.updates = '0';
  ladder.innerHTML = '<div class="empty">loading…</div>';
  userScrolled.delete(ladder);
  for (const field of ['best-bid', 'best-ask', 'mid', 'spread']) $(field).textContent = '–';
  $('ladder-note').textContent = '';
  $('bookat-ladder').innerHTML = '';
  $('bookat-text').textContent = BOOKAT_HINT;
  history.replaceState(null, '', `#instrument=${encodeURIComponent(id)}`);
  fillPublishers();
  resetLiveCharts();
  resetHistoryChart();
  charts.depth?.setBook(null);
  prefillHistory(false);
  $('hist-run').innerHTML = '<option value="">latest run</option>';
  refreshRuns();
  connectLive();
  loadBookOnce();
  seedLiveChart(id);
}

// ------------------------------------------------------------------------------ live

Object.assign(live, { ws: null, gen: 0, attempt: 0, timer: null, socketState: 'idle' });

function setConn(socketState, detail = '') {
  live.socketState = socketState;
  const el = $('conn');
  el.dataset.state = socketState;
  el.textContent = socketState === 'live' ? '● live' : `${socketState}${detail ? ` (${detail})` : ''}`;
}

function closeLive() {
  live.gen += 1;
  clearTimeout(live.timer);
  if (live.ws) {
    try { live.ws.close(1000, 'switching'); } catch { /* closed */ }
  }
  live.ws = null;
}

function connectLive() {
  closeLive();
  if (state.instrumentId === null) return;
  const gen = live.gen;
  const url = new URL(`v1/instruments/${encodeURIComponent(state.instrumentId)}/live`, document.baseURI);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  url.searchParams.set('max_hz', String(LIVE_MAX_HZ));
  url.searchParams.set('depth', String(DEPTH));
  if (state.publisherId !== '') url.searchParams.set('publisher_id', state.publisherId);
  // Browsers cannot set headers on a WebSocket: the token travels as a query parameter.
  if (state.token) url.searchParams.set('token', state.token);
  setConn(live.attempt ? 'reconnecting' : 'connecting');
  let ws;
  try {
    ws = new WebSocket(url);
  } catch (error) {
    showError(`WebSocket: ${error.message}`);
    scheduleReconnect(gen);
    return;
  }
  live.ws = ws;
  ws.onopen = () => {
    if (gen !== live.gen) return;
    live.attempt = 0;
    setConn('live');
  };
  ws.onmessage = (event) => {
    if (gen !== live.gen) return;
    let message;
    try { message = parseJson(event.data); } catch { return; }
    if (message.type === 'snapshot' || message.type === 'update') {
      if (message.book) showBook(message.book, message.bbo || null);
    } else if (message.type === 'error') {
      showError(`live: ${message.detail || message.message || JSON.stringify(message)}`);
    }
  };
  ws.onclose = (event) => {
    if (gen !== live.gen) return;
    live.ws = null;
    if (event.code === 4401 || event.code === 1008) $('token-form').hidden = false;
    scheduleReconnect(gen);
  };
  ws.onerror = () => { /* onclose follows and reconnects */ };
}

function scheduleReconnect(gen) {
  const delay = Math.min(10000, 500 * 2 ** live.attempt);
  live.attempt += 1;
  setConn('reconnecting', `in ${(delay / 1000).toFixed(1)} s`);
  clearTimeout(live.timer);
  live.timer = setTimeout(() => { if (gen === live.gen) connectLive(); }, delay);
}

// While the socket is down, the REST book keeps the ladder fresh.
setInterval(() => { if (live.socketState !== 'live') loadBookOnce(); }, POLL_BOOK_EVERY_MS);

// ---------------------------------------------------------------------------- replay

function replayNumber(id) {
  const text = $(id).value.trim();
  return text === '' ? null : Number(text);
}

function renderReplay(status) {
  state.replay = status;
  const st = status?.state ?? 'unknown';
  const badge = $('replay-state');
  const cls = { running: 'good', paused: 'on-warn', failed: 'on-bad' }[st] || 'off';
  badge.className = `badge ${cls}`;
  badge.textContent = st;
  let progress = Number(status?.progress);
  if (!Number.isFinite(progress) && Number(status?.records_total) > 0) {
    progress = Number(status.records_sent) / Number(status.records_total);
  }
  if (progress > 1.0001) progress /= 100; // a percentage
  const known = Number.isFinite(progress);
  progress = known ? Math.max(0, Math.min(1, progress)) : 0;
  const bar = $('replay-bar');
  bar.classList.toggle('indeterminate', !known && st === 'running');
  bar.style.width = !known && st === 'running' ? '100%' : `${(progress * 100).toFixed(1)}%`;
  $('replay-text').dataset.recordsSent = String(status?.records_sent ?? 0);
  $('replay-text').dataset.progress = known ? String(progress) : '';
  const parts = [];
  if (st === 'idle' && !status?.file) { /* nothing replayed yet */ } else if (status?.records_total != null) parts.push(`${fmtInt(status.records_sent)} / ${fmtInt(status.records_total)} records (${(progress * 100).toFixed(1)}%)`);
  else if (status?.records_sent != null) parts.push(`${fmtInt(status.records_sent)} records sent (total unknown)`);
  if (status?.rate != null) parts.push(`${fmtInt(status.rate)} rec/s`);
  if (status?.speed != null) parts.push(`${status.speed}× speed`);
  if (status?.file) parts.push(String(status.file));
  if (status?.started_ns) parts.push(`started ${nsToIso(status.started_ns)}`);
  if (status?.error) parts.push(`error: ${status.error}`);
  if (status?.other_replay) {
    // Another process replays (mbo run's own producer, an mbo produce): shown, not controlled.
    badge.className = 'badge good';
    badge.textContent = 'running elsewhere';
    parts.push(`replay by another process: ${status.other_replay} (start, pause and stop act on replays started here)`);
  } else if (st === 'idle') parts.push('no replay started through the API yet');
  $('replay-text').textContent = parts.join(' · ');
  if (status?.file && !state.replayFileTouched && !$('replay-file').value) $('replay-file').value = String(status.file);
  const active = st === 'running' || st === 'paused';
  $('replay-start').disabled = active;
  $('replay-pause').disabled = st !== 'running';
  $('replay-resume').disabled = st !== 'paused';
  $('replay-stop').disabled = !active;
}

async function refreshReplay() {
  try {
    renderReplay(await api('v1/replay'));
  } catch (error) {
    const badge = $('replay-state');
    badge.className = 'badge off';
    badge.textContent = error.status === 404 ? 'not available' : 'unknown';
    $('replay-text').textContent = error.status === 404 ? 'this gateway has no replay control' : error.message;
  }
}

async function refreshReplayFiles() {
  try {
    const data = await api('v1/replay/files');
    const files = Array.isArray(data?.files) ? data.files : [];
    $('replay-files').innerHTML = files.map((f) => `<option value="${esc(f)}"></option>`).join('');
    if (files.length && !$('replay-file').value && !state.replayFileTouched) $('replay-file').value = files[0];
  } catch { /* optional endpoint */ }
}

async function replayAction(path, body) {
  try {
    const result = await api(path, { method: 'POST', body });
    if (result && typeof result === 'object' && 'state' in result) renderReplay(result);
    else refreshReplay();
  } catch (error) {
    showError(error.message);
  }
}

// --------------------------------------------------------------------------- history

function prefillHistory(force) {
  const item = currentInstrument();
  const end = state.lastTsNs ?? toBigNs(item?.last_update_ns);
  if (end === null || end === undefined) return;
  if (!force && ($('hist-start').value || $('hist-end').value)) return;
  $('hist-end').value = nsToIso(end);
  $('hist-start').value = nsToIso(end - 600n * 1000000000n);
  if (!$('bookat-ts').value || force) $('bookat-ts').value = nsToIso(end);
}

const HISTORY_HINT = 'Pick a range (Start, End, Bucket) and press Load bars, or press Last 10 min.';
const BOOKAT_HINT = 'Pick a time (or click a bar of the chart) and press Show book.';

/** The history chart empty, with what to do in its middle. */
function resetHistoryChart(hint = HISTORY_HINT) {
  if (charts.history) {
    charts.history.candles.setData([]);
    charts.history.spread.setData([]);
  }
  setHistoryNote(hint);
  $('history-text').textContent = '';
}

function setHistoryNote(text) {
  if (!charts.history) return;
  const el = $('history-chart');
  let note = el.querySelector('.note.hint');
  if (!text) { note?.remove(); return; }
  if (!note) {
    note = document.createElement('div');
    note.className = 'note hint';
    el.append(note);
  }
  note.textContent = text;
}

// A run is one replay, or one copy of a looped replay: history reads one, the latest unless picked.
function runLabel(run) {
  return `${run.replay_id || '(no replay id)'} · copy ${run.replay_copy}`;
}

function addRunParams(params) {
  const picked = $('hist-run').value;
  if (!picked) return;
  const [replayId, copy] = picked.split('\t');
  params.set('replay_id', replayId);
  params.set('replay_copy', copy);
}

async function refreshRuns() {
  const id = state.instrumentId;
  if (id === null) return;
  let runs = [];
  try {
    runs = (await api(`v1/instruments/${encodeURIComponent(id)}/runs`))?.runs || [];
  } catch (error) {
    if (error.status !== 404) showError(`runs: ${error.message}`);
  }
  if (String(id) !== String(state.instrumentId)) return;
  const select = $('hist-run');
  const kept = select.value;
  const latest = runs.find((r) => r.latest);
  select.innerHTML = [
    `<option value="">latest run${latest ? ` (${esc(runLabel(latest))})` : ''}</option>`,
    ...runs.map((r) => `<option value="${esc(`${r.replay_id}\t${r.replay_copy}`)}">${esc(runLabel(r))}, ${fmtInt(r.bbo_rows)} BBO changes</option>`),
  ].join('');
  select.value = [...select.options].some((o) => o.value === kept) ? kept : '';
}

async function loadHistory() {
  if (state.instrumentId === null) return;
  const id = state.instrumentId;
  let start;
  let end;
  try {
    start = parseTimeToNs($('hist-start').value);
    end = parseTimeToNs($('hist-end').value);
  } catch (error) {
    showError(error.message);
    return;
  }
  const params = new URLSearchParams({ start: String(start), end: String(end), bucket: $('hist-bucket').value });
  if (state.publisherId !== '') params.set('publisher_id', state.publisherId);
  addRunParams(params);
  $('history-text').textContent = 'loading…';
  setHistoryNote('loading…');
  try {
    const data = await api(`v1/instruments/${encodeURIComponent(id)}/bbo/history?${params}`);
    if (String(id) !== String(state.instrumentId)) return;
    const bars = (data?.bars || [])
      .map((bar) => ({ time: nsToSeconds(bar.t), bar }))
      .filter((x) => x.time !== null && x.bar.open != null && x.bar.close != null)
      .sort((a, b) => a.time - b.time)
      .filter((x, i, all) => i === 0 || x.time !== all[i - 1].time);
    if (charts.history) {
      // Prices may be numbers or exact decimal strings: Number() reads both.
      charts.history.candles.setData(bars.map(({ time, bar }) => ({
        time, open: Number(bar.open), high: Number(bar.high ?? bar.open), low: Number(bar.low ?? bar.open), close: Number(bar.close),
      })));
      charts.history.spread.setData(bars.filter(({ bar }) => bar.spread != null).map(({ time, bar }) => ({ time, value: Number(bar.spread) })));
      // Mids are half-ticks: one decimal more than the tick (or what the strings carry).
      const fromStrings = Math.max(0, ...bars.slice(0, 50).map(({ bar }) => (typeof bar.close === 'string' ? decimals(bar.close) : 0)));
      const p = tick.anchor !== null ? Math.min(tick.decimals + 1, 9) : fromStrings;
      const format = (places) => ({ type: 'price', precision: places, minMove: 1 / 10 ** places });
      if (p) charts.history.candles.applyOptions({ priceFormat: format(p) });
      if (tick.anchor !== null) charts.history.spread.applyOptions({ priceFormat: format(tick.decimals) });
      charts.history.chart.timeScale().fitContent();
    }
    setHistoryNote(bars.length ? '' : 'No BBO data in this range: pick another range and press Load bars.');
    const run = data?.run ? ` of run ${runLabel(data.run)}` : '';
    $('history-text').textContent = bars.length
      ? `${bars.length} bars of ${$('hist-bucket').value}${run}, ${nsToIso(start)} → ${nsToIso(end)}; click a bar for its book`
      : `no BBO data in this range${run}`;
    refreshRuns();
  } catch (error) {
    setHistoryNote('Loading failed (below): fix the range and press Load bars again.');
    $('history-text').textContent = error.message;
  }
}

async function loadBookAt() {
  if (state.instrumentId === null) return;
  const id = state.instrumentId;
  let ts;
  try {
    ts = parseTimeToNs($('bookat-ts').value);
  } catch (error) {
    showError(error.message);
    return;
  }
  const params = bookQuery();
  params.set('ts', String(ts));
  addRunParams(params);
  $('bookat-text').textContent = 'loading…';
  try {
    const book = await api(`v1/instruments/${encodeURIComponent(id)}/book/at?${params}`);
    if (String(id) !== String(state.instrumentId)) return;
    learnBook(book);
    state.bookAt = book;
    userScrolled.delete($('bookat-ladder'));
    renderLadder($('bookat-ladder'), book, { mode: state.ladderMode });
    const flags = [book.crossed ? 'CROSSED' : '', book.locked ? 'LOCKED' : ''].filter(Boolean).join(' ');
    const run = book.run ? `, run ${runLabel(book.run)}` : '';
    $('bookat-text').textContent = `${book.symbol ?? '?'} as of ${nsToIso(ts)}: last event ${nsToIso(book.ts_event)}, seq ${book.sequence ?? '–'}${run} ${flags}`;
  } catch (error) {
    state.bookAt = null;
    $('bookat-ladder').innerHTML = '';
    $('bookat-text').textContent = error.message;
  }
}

// ------------------------------------------------------------------------------ wiring

function wire() {
  $('instrument').addEventListener('change', (event) => selectInstrument(event.target.value));
  $('publisher').addEventListener('change', (event) => {
    state.publisherId = event.target.value;
    selectInstrument(state.instrumentId);
  });
  $('token').value = state.token;
  $('token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    state.token = $('token').value.trim();
    sessionStorage.setItem(TOKEN_KEY, state.token);
    showError('');
    refreshInstruments();
    refreshReplay();
    connectLive();
  });
  $('replay-file').addEventListener('input', () => { state.replayFileTouched = true; });
  $('replay-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const file = $('replay-file').value.trim();
    if (!file) { showError('replay: name a file'); return; }
    const body = { file, rate: replayNumber('replay-rate'), speed: replayNumber('replay-speed'), loop: replayNumber('replay-loop') ?? 1 };
    replayAction('v1/replay', body);
  });
  $('replay-pause').addEventListener('click', () => replayAction('v1/replay/pause'));
  $('replay-resume').addEventListener('click', () => replayAction('v1/replay/resume'));
  $('replay-stop').addEventListener('click', () => replayAction('v1/replay/stop'));
  $('history-form').addEventListener('submit', (event) => { event.preventDefault(); loadHistory(); });
  $('hist-recent').addEventListener('click', () => { prefillHistory(true); loadHistory(); });
  $('bookat-form').addEventListener('submit', (event) => { event.preventDefault(); loadBookAt(); });
  $('hist-run').addEventListener('pointerenter', refreshRuns);
  for (const button of document.querySelectorAll('#ladder-mode button')) {
    button.addEventListener('click', () => setLadderMode(button.dataset.mode));
  }
  watchLadderScroll($('ladder'));
  watchLadderScroll($('bookat-ladder'));
  $('error-close').addEventListener('click', () => showError(''));
  $('badge-quality').addEventListener('click', () => toggleQuality());
  $('quality-close').addEventListener('click', () => toggleQuality(false));
  document.addEventListener('keydown', (event) => { if (event.key === 'Escape') toggleQuality(false); });
  document.addEventListener('click', (event) => {
    if (!$('quality-pop').hidden && !event.target.closest('#quality-pop, #badge-quality')) toggleQuality(false);
  });
}

async function main() {
  wire();
  setLadderMode(state.ladderMode);
  $('bookat-text').textContent = BOOKAT_HINT;
  if (state.token) $('token-form').hidden = false;
  LW = await loadCharts();
  setupCharts();
  document.body.dataset.charts = LW ? 'ready' : 'missing';
  await refreshInstruments();
  refreshReplay();
  refreshReplayFiles();
  $('replay-file').addEventListener('focus', refreshReplayFiles);
  setInterval(refreshInstruments, INSTRUMENTS_EVERY_MS);
  setInterval(refreshReplay, REPLAY_EVERY_MS);
  document.body.dataset.ready = 'true';
}

main().catch((error) => showError(`page: ${error.message}`));
