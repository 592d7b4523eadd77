// Open-loop HTTP GET load at a fixed offered rate, for bench/api.py. Prints one JSON object.
//
//   node bench/openloop.mjs --url http://127.0.0.1:8000/v1/instruments/1/book \
//        [--connections 100] [--rate 2000] [--duration 10] [--timeout 10]
//
// Each of --connections keep-alive connections sends on its own fixed schedule, rate/connections
// requests a second, the connections' schedules evenly staggered, so requests arrive at a steady
// --rate whatever the server does. autocannon's -R is not that: each connection sends its
// per-second quota back to back and then idles until the next second (all 2000 requests of a
// second in one burst), and its coordinated-omission correction assumes a 1 ms interval
// whatever the rate.
//
// Latency counts coordinated omission in (as wrk2 does): a response that comes late holds back
// the next request of its connection, and that request's latency is measured from when it was
// DUE, so a slow server cannot hide behind a lowered offered rate (`delayed_by_previous_response`
// counts those requests). `service_time_ms` is always from the actual send.
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    url: { type: 'string' },
    connections: { type: 'string', default: '100' },
    rate: { type: 'string', default: '2000' },
    duration: { type: 'string', default: '10' },
    timeout: { type: 'string', default: '10' },
  },
});
if (!values.url) throw new Error('--url is required');
const target = new URL(values.url);
const connections = Number(values.connections);
const rate = Number(values.rate);
const durationMs = Number(values.duration) * 1000;
const timeoutMs = Number(values.timeout) * 1000;
const intervalMs = (connections / rate) * 1000; // between two requests of one connection
const request = Buffer.from(
  `GET ${target.pathname}${target.search} HTTP/1.1\r\nHost: ${target.host}\r\n` +
    'User-Agent: mbo-bench-openloop\r\nAccept: */*\r\n\r\n',
  'latin1',
);

const latencies = []; // ms from due time to the end of the response (2xx only)
const serviceTimes = []; // ms from the actual send to the end of the response (2xx only)
let errors = 0;
let non2xx = 0;
let late = 0; // requests held back by the previous response on their connection
let lastDone = 0;

// A keep-alive HTTP/1.1 connection that carries one request at a time. Node's http module
// costs ~200 us of client CPU per request, as much as the server under test; this minimal
// client (the server always answers with content-length) costs a fraction of that.
class Connection {
  constructor() {
    this.socket = null;
    this.buffer = Buffer.alloc(0);
    this.pending = null;
  }

  connect() {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: target.hostname, port: Number(target.port) || 80 });
      socket.setNoDelay(true);
      socket.once('connect', () => resolve(socket));
      socket.once('error', reject);
      socket.on('data', (chunk) => this.received(chunk));
      socket.on('close', () => this.fail(new Error('connection closed')));
      socket.on('error', (error) => this.fail(error));
      this.socket = socket;
      this.buffer = Buffer.alloc(0);
    });
  }

  async get() {
    if (this.socket === null) await this.connect();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => this.fail(new Error('timeout')), timeoutMs);
      this.pending = {
        resolve: (status) => { clearTimeout(timer); resolve(status); },
        reject: (error) => { clearTimeout(timer); reject(error); },
      };
      this.socket.write(request);
    });
  }

  received(chunk) {
    this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
    const end = this.buffer.indexOf('\r\n\r\n');
    if (end < 0 || this.pending === null) return;
    const head = this.buffer.toString('latin1', 0, end);
    const length = /\r\ncontent-length:[ \t]*(\d+)/i.exec(head);
    if (length === null) {
      this.fail(new Error('response without content-length'));
      return;
    }
    const total = end + 4 + Number(length[1]);
    if (this.buffer.length < total) return;
    this.buffer = this.buffer.subarray(total);
    const pending = this.pending;
    this.pending = null;
    pending.resolve(Number(head.slice(9, 12)));
  }

  fail(error) {
    if (this.socket !== null) {
      this.socket.destroy();
      this.socket = null;
    }
    const pending = this.pending;
    this.pending = null;
    if (pending !== null) pending.reject(error);
  }
}

async function connection(index, start, end) {
  const client = new Connection();
  let previousDone = 0;
  try {
    for (let k = 0; ; k++) {
      const due = start + (index / connections + k) * intervalMs;
      if (due >= end) return;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
      const sent = performance.now();
      // A request held back by the previous response (the server was slow) counts from when
      // it was due; one merely woken a little off time by the client's timer counts from
      // when it went out, so the client's own jitter is not charged to the server.
      const delayed = previousDone > due;
      if (delayed) late++;
      const origin = delayed ? due : sent;
      try {
        const status = await client.get();
        const done = performance.now();
        previousDone = done;
        lastDone = Math.max(lastDone, done);
        if (status >= 200 && status < 300) {
          latencies.push(done - origin);
          serviceTimes.push(done - sent);
        } else {
          non2xx++;
        }
      } catch {
        previousDone = performance.now();
        errors++;
      }
    }
  } finally {
    client.fail(new Error('done'));
  }
}

function percentiles(values, marks) {
  const sorted = Float64Array.from(values).sort();
  const out = {};
  for (const [name, q] of marks) {
    const value = sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] : NaN;
    out[name] = Math.round(value * 1000) / 1000;
  }
  return out;
}

const start = performance.now() + 200; // let every connection be scheduled first
const end = start + durationMs;
await Promise.all(Array.from({ length: connections }, (_, i) => connection(i, start, end)));
const elapsedS = (Math.max(lastDone, end) - start) / 1000;
const marks = [['p50', 0.5], ['p90', 0.9], ['p99', 0.99], ['p99_9', 0.999], ['max', 1]];
console.log(JSON.stringify({
  connections,
  offered_requests_per_s: rate,
  duration_s: Math.round(elapsedS * 100) / 100,
  requests_ok: latencies.length,
  errors,
  non_2xx: non2xx,
  delayed_by_previous_response: late,
  achieved_requests_per_s: Math.round((latencies.length / elapsedS) * 10) / 10,
  latency_ms: percentiles(latencies, marks),
  service_time_ms: percentiles(serviceTimes, marks),
}));
