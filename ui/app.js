// mbo-pipeline web page: plain ES module, no framework. Talks to the API gateway with relative
// URLs (so it works wherever the gateway mounts it) and draws charts with TradingView
// lightweight-charts, loaded from the local build (ui/dist/vendor) or, when the gateway serves
// ui/ unbuilt, from ui/node_modules. Prices stay the exact decimal strings the API sends; they are
// turned into numbers only for the charts.

const DEPTH = 10;
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

/** Exact mid and spread of two decimal strings (either may be missing). */
function midSpread(bid, ask) {
  if (bid == null || ask == null) return { mid: null, spread: null };
  const b = decToUnits(bid);
  const a = decToUnits(ask);
  return { mid: unitsToDec((a + b) * 5n, 10), spread: unitsToDec(a - b) };
}

const esc = (value) => String(value ?? '').replace(/[&<>"']/g,
  (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));

const fmtInt = (n) => (n === null || n === undefined ? '–' : Number(n).toLocaleString('en-US'));

let errorTimer = null;
function showError(message) {
  const el = $('error');
  el.textContent = message ? String(message) : '';
  el.title = el.textContent;
  clearTimeout(errorTimer);
  if (message) errorTimer = setTimeout(() => { el.textContent = ''; }, 10000);
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

const chartTheme = () => ({
  autoSize: true,
  layout: { background: { type: 'solid', color: '#171e26' }, textColor: '#9aa7b5', fontSize: 11, attributionLogo: false },
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
  if (!LW) {
    ['mid-chart', 'depth-chart', 'history-chart'].forEach(noChart);
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

  // Depth: a price-based horizontal scale (options chart), cumulative size per side.
  const depth = LW.createOptionsChart($('depth-chart'), {
    ...chartTheme(),
    timeScale: { borderColor: '#263140' },
  });
  charts.depth = {
    chart: depth,
    bids: depth.addSeries(LW.AreaSeries, {
      lineColor: '#26a69a', topColor: 'rgba(38,166,154,0.45)', bottomColor: 'rgba(38,166,154,0.05)',
      lineWidth: 2, lineType: 1, title: 'bids', priceLineVisible: false, lastValueVisible: false,
      priceFormat: { type: 'volume' },
    }),
    asks: depth.addSeries(LW.AreaSeries, {
      lineColor: '#ef5350', topColor: 'rgba(239,83,80,0.45)', bottomColor: 'rgba(239,83,80,0.05)',
      lineWidth: 2, lineType: 1, title: 'asks', priceLineVisible: false, lastValueVisible: false,
      priceFormat: { type: 'volume' },
    }),
  };

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
  charts.depth.chart.applyOptions({ localization: { precision } });
}

function resetLiveCharts() {
  live.points = { bid: [], ask: [], mid: [], spread: [] };
  live.lastTime = null;
  if (!charts.mid) return;
  for (const key of ['bid', 'ask', 'mid', 'spread']) charts.mid[key].setData([]);
  charts.depth.bids.setData([]);
  charts.depth.asks.setData([]);
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
  const p = Math.max(...[bid, ask].filter((x) => x != null).map(decimals), 0);
  setPrecision(Math.max(p, live.precision ?? 0));
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

function cumulative(levels) {
  let total = 0;
  return levels.map((level) => {
    total += Number(level.size);
    return { time: Number(level.price), value: total };
  });
}

function feedDepth(book) {
  if (!charts.depth) return;
  const bids = cumulative(book.bids || []).sort((a, b) => a.time - b.time);
  const asks = cumulative(book.asks || []).sort((a, b) => a.time - b.time);
  const unique = (points) => points.filter((pt, i) => i === 0 || pt.time !== points[i - 1].time);
  charts.depth.bids.setData(unique(bids));
  charts.depth.asks.setData(unique(asks));
  charts.depth.chart.timeScale().fitContent();
}

// ---------------------------------------------------------------------------- ladder

function renderLadder(el, book, depth = DEPTH, previous = null) {
  const asks = (book.asks || []).slice(0, depth);
  const bids = (book.bids || []).slice(0, depth);
  const maxSize = Math.max(1, ...asks.map((l) => Number(l.size)), ...bids.map((l) => Number(l.size)));
  const before = new Map();
  if (previous) {
    for (const l of previous.asks || []) before.set(`a${l.price}`, `${l.size}/${l.count}`);
    for (const l of previous.bids || []) before.set(`b${l.price}`, `${l.size}/${l.count}`);
  }
  const changed = (side, l) => previous && before.get(`${side}${l.price}`) !== `${l.size}/${l.count}`;
  const bar = (size) => `<div class="fill" style="width:${((Number(size) / maxSize) * 100).toFixed(1)}%"></div>`;
  const rows = ['<div class="row head"><span class="cnt">orders</span><span style="text-align:right;padding-right:4px">bid size</span><span class="price">price</span><span style="padding-left:4px">ask size</span><span class="cnt">orders</span></div>'];
  if (!asks.length && !bids.length) {
    rows.push('<div class="empty">empty book</div>');
    el.innerHTML = rows.join('');
    return;
  }
  asks.slice().reverse().forEach((l, i) => {
    const best = i === asks.length - 1;
    rows.push(`<div class="row ask${best ? ' best' : ''}${changed('a', l) ? ' flash' : ''}" data-side="ask" data-price="${esc(l.price)}">`
      + '<span class="cnt"></span><span class="size bidsize"></span>'
      + `<span class="price">${esc(l.price)}</span>`
      + `<span class="size asksize">${bar(l.size)}<span>${fmtInt(l.size)}</span></span>`
      + `<span class="cnt">${fmtInt(l.count)}</span></div>`);
  });
  const { spread } = midSpread(bids[0]?.price, asks[0]?.price);
  let gap = 'one side empty';
  let gapClass = '';
  if (book.crossed) { gap = `crossed by ${spread?.replace('-', '')}`; gapClass = ' crossed'; }
  else if (book.locked) { gap = 'locked'; gapClass = ' crossed'; }
  else if (spread !== null) gap = `spread ${spread}`;
  rows.push(`<div class="gap${gapClass}">${esc(gap)}</div>`);
  bids.forEach((l, i) => {
    rows.push(`<div class="row bid${i === 0 ? ' best' : ''}${changed('b', l) ? ' flash' : ''}" data-side="bid" data-price="${esc(l.price)}">`
      + `<span class="cnt">${fmtInt(l.count)}</span>`
      + `<span class="size bidsize">${bar(l.size)}<span>${fmtInt(l.size)}</span></span>`
      + `<span class="price">${esc(l.price)}</span>`
      + '<span class="size asksize"></span><span class="cnt"></span></div>');
  });
  el.innerHTML = rows.join('');
}

function setBadge(el, on, cls, text) {
  el.className = `badge ${on ? cls : 'off'}`;
  if (text !== undefined) el.textContent = text;
}

function renderQuality(quality) {
  const el = $('badge-quality');
  const entries = Object.entries(quality || {});
  const total = entries.reduce((sum, [, v]) => sum + Number(v || 0), 0);
  setBadge(el, true, total ? 'on-warn' : 'good', total ? `quality: ${fmtInt(total)} issue${total === 1 ? '' : 's'}` : 'quality: clean');
  el.title = entries.length
    ? `Data-quality counters of this book:\n${entries.map(([k, v]) => `${k}: ${fmtInt(v)}`).join('\n')}`
    : 'no data-quality counters';
}

const levelText = (level) => (level ? `${level.price} × ${fmtInt(level.size)}` : '–');

/** Everything that shows the current (live) book. */
function showBook(book, bbo = null) {
  if (!book || String(book.instrument_id) !== String(state.instrumentId)) return;
  const ladder = $('ladder');
  renderLadder(ladder, book, DEPTH, state.book);
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
    const first = list.find((item) => String(item.instrument_id) === wanted) || list[0];
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
  state.updates = 0;
  const ladder = $('ladder');
  ladder.dataset.instrumentId = '';
  ladder.dataset.updates = '0';
  ladder.innerHTML = '<div class="empty">loading…</div>';
  $('best-bid').textContent = '–';
  $('best-ask').textContent = '–';
  history.replaceState(null, '', `#instrument=${encodeURIComponent(id)}`);
  fillPublishers();
  resetLiveCharts();
  prefillHistory(false);
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

async function loadHistory() {
  if (state.instrumentId === null) return;
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
  $('history-text').textContent = 'loading…';
  try {
    const data = await api(`v1/instruments/${encodeURIComponent(state.instrumentId)}/bbo/history?${params}`);
    const bars = (data?.bars || [])
      .map((bar) => ({ time: nsToSeconds(bar.t), bar }))
      .filter((x) => x.time !== null && x.bar.open != null && x.bar.close != null)
      .sort((a, b) => a.time - b.time)
      .filter((x, i, all) => i === 0 || x.time !== all[i - 1].time);
    if (charts.history) {
      charts.history.candles.setData(bars.map(({ time, bar }) => ({
        time, open: Number(bar.open), high: Number(bar.high ?? bar.open), low: Number(bar.low ?? bar.open), close: Number(bar.close),
      })));
      charts.history.spread.setData(bars.filter(({ bar }) => bar.spread != null).map(({ time, bar }) => ({ time, value: Number(bar.spread) })));
      const p = Math.max(0, ...bars.slice(0, 50).map(({ bar }) => (typeof bar.close === 'string' ? decimals(bar.close) : 0)));
      if (p) charts.history.candles.applyOptions({ priceFormat: { type: 'price', precision: p, minMove: 1 / 10 ** p } });
      charts.history.chart.timeScale().fitContent();
    }
    $('history-text').textContent = bars.length
      ? `${bars.length} bars of ${$('hist-bucket').value}, ${nsToIso(start)} → ${nsToIso(end)}; click a bar for its book`
      : 'no BBO data in this range';
  } catch (error) {
    $('history-text').textContent = error.message;
  }
}

async function loadBookAt() {
  if (state.instrumentId === null) return;
  let ts;
  try {
    ts = parseTimeToNs($('bookat-ts').value);
  } catch (error) {
    showError(error.message);
    return;
  }
  const params = bookQuery();
  params.set('ts', String(ts));
  $('bookat-text').textContent = 'loading…';
  try {
    const book = await api(`v1/instruments/${encodeURIComponent(state.instrumentId)}/book/at?${params}`);
    renderLadder($('bookat-ladder'), book, DEPTH);
    const flags = [book.crossed ? 'CROSSED' : '', book.locked ? 'LOCKED' : ''].filter(Boolean).join(' ');
    $('bookat-text').textContent = `${book.symbol ?? '?'} as of ${nsToIso(ts)}: last event ${nsToIso(book.ts_event)}, seq ${book.sequence ?? '–'} ${flags}`;
  } catch (error) {
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
}

async function main() {
  wire();
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
