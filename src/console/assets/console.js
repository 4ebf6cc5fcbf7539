// opusgate console: the dashboard (GET /api/v1/stats every 2 s, charts
// from GET /api/v1/stats/history) and the try-it panel (POST
// /api/v1/convert with a chosen, dropped or recorded file). No framework:
// plain DOM, SVG charts. The API key lives in sessionStorage only and is
// sent as X-API-Key; it never goes into a URL.
'use strict';

(() => {
  const REFRESH_MS = 2000;
  const KEY_STORE = 'opusgate.apiKey';
  const SVG_NS = 'http://www.w3.org/2000/svg';
  // Outcomes of a lookup: the X-Cache value and the stats field counting it.
  const OUTCOMES = [
    { label: 'hit-memory', field: 'hits_memory', cls: 's0' },
    { label: 'hit-disk', field: 'hits_disk', cls: 's1' },
    { label: 'hit-shared', field: 'hits_shared', cls: 's2', shared: true },
    { label: 'coalesced', field: 'coalesced', cls: 's3' },
    { label: 'coalesced-remote', field: 'coalesced_remote', cls: 's4', shared: true },
    { label: 'miss', field: 'misses', cls: 's5' },
  ];
  // What MediaRecorder may record, best first: Ogg Opus (Firefox), WebM
  // Opus (Chromium's only choice), then whatever the browser has.
  const RECORD_TYPES = ['audio/ogg;codecs=opus', 'audio/webm;codecs=opus', 'audio/webm', 'audio/ogg'];

  const $ = (id) => document.getElementById(id);

  // ---- Formatting for people ----------------------------------------
  const intFormat = new Intl.NumberFormat('en-US');
  const fmtInt = (n) => (n == null ? '–' : intFormat.format(Math.round(n)));
  const fmtPct = (r) => (r == null ? '–' : `${(r * 100).toFixed(1)}\u00a0%`);
  const fmtPctAxis = (r) => `${Math.round(r * 100)}\u00a0%`;
  function fmtBytes(b) {
    if (b == null) return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let v = b;
    let i = 0;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i += 1;
    }
    const digits = i === 0 || v >= 100 ? 0 : 1;
    return `${v.toFixed(digits)}\u00a0${units[i]}`;
  }
  function fmtMs(ms) {
    if (ms == null) return '–';
    if (ms >= 10000) return `${(ms / 1000).toFixed(1)}\u00a0s`;
    if (ms >= 100) return `${Math.round(ms)}\u00a0ms`;
    if (ms === 0) return '0\u00a0ms';
    if (ms >= 1) return `${ms.toFixed(1)}\u00a0ms`;
    return `${ms.toFixed(2)}\u00a0ms`;
  }
  function fmtPerSecond(n) {
    if (n == null) return '–';
    const digits = n === 0 || n >= 10 ? 0 : n >= 1 ? 1 : 2;
    return `${n.toFixed(digits)}\u00a0/s`;
  }
  function fmtDuration(s) {
    if (s == null) return '–';
    const d = Math.floor(s / 86400);
    const h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    const sec = Math.floor(s % 60);
    if (d > 0) return `${d}\u00a0d ${h}\u00a0h`;
    if (h > 0) return `${h}\u00a0h ${m}\u00a0min`;
    if (m > 0) return `${m}\u00a0min ${sec}\u00a0s`;
    return `${sec}\u00a0s`;
  }
  // A span of time on an axis: minutes, or seconds under two minutes.
  const fmtSpan = (s) => (s >= 120 ? `${Math.round(s / 60)}\u00a0min` : `${Math.round(s)}\u00a0s`);
  const setText = (id, text) => {
    $(id).textContent = text;
  };

  // ---- The API ---------------------------------------------------------
  let apiKey = sessionStorage.getItem(KEY_STORE) || '';

  function authHeaders(extra) {
    const headers = Object.assign({}, extra);
    if (apiKey) headers['X-API-Key'] = apiKey;
    return headers;
  }

  async function getJson(path, withKey) {
    const response = await fetch(path, {
      headers: withKey ? authHeaders() : {},
      cache: 'no-store',
      signal: AbortSignal.timeout(10000),
    });
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    return { status: response.status, body };
  }

  // The error of an API answer as "code: message", whichever shape it has.
  function apiError(body, status) {
    if (body && typeof body === 'object') {
      const e = body.error && typeof body.error === 'object' ? body.error : body;
      if (e.code || e.message) return { code: e.code || `http_${status}`, message: e.message || '' };
    }
    return { code: `http_${status}`, message: 'the server answered without an error body' };
  }

  // ---- State -------------------------------------------------------------
  const state = {
    stats: null,
    previous: null, // { stats, at } of the previous poll, for the rates now
    points: [], // history points, oldest first
    interval: 5,
    capacity: 180,
    needKey: false,
    rejectedKey: null, // the key the server last refused: not sent again until changed
    polledAt: 0,
    reachable: true,
    ready: true,
    timer: null,
  };

  function notice(text) {
    const el = $('notice');
    el.textContent = text || '';
    el.hidden = !text;
  }

  // ---- Charts (SVG) -------------------------------------------------------
  function svg(name, attrs, parent) {
    const el = document.createElementNS(SVG_NS, name);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
    if (parent) parent.appendChild(el);
    return el;
  }

  // The smallest of 1, 2, 2.5, 5 times a power of ten at or above v.
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  // Draws series over the history window into `box`.
  // spec: { t: [unix s], series: [{ label, cls, values, dashed }], stacked,
  //         fmt (axis labels), max (fixed top), bytes (a byte axis), title }
  function drawChart(box, spec) {
    const width = Math.max(box.clientWidth, 200);
    const height = box.clientHeight || 150;
    const m = { l: 58, r: 10, t: 8, b: 20 };
    const plotW = width - m.l - m.r;
    const plotH = height - m.t - m.b;
    const windowS = state.capacity * state.interval;
    const now = spec.now;
    const x = (t) => m.l + ((t - (now - windowS)) / windowS) * plotW;

    // Stacked series are drawn as bands between cumulative sums.
    const n = spec.t.length;
    const lows = spec.series.map(() => new Array(n).fill(null));
    const highs = spec.series.map((s) => s.values.slice());
    if (spec.stacked) {
      for (let i = 0; i < n; i += 1) {
        let base = 0;
        spec.series.forEach((s, k) => {
          const v = s.values[i];
          if (v == null) {
            highs[k][i] = null;
            return;
          }
          lows[k][i] = base;
          base += v;
          highs[k][i] = base;
        });
      }
    }
    let top = 0;
    for (const h of highs) for (const v of h) if (v != null && v > top) top = v;
    // Byte axes top at a power of two (512 KiB, 1 MiB), others at 1, 2,
    // 2.5 or 5 times a power of ten.
    const nice = spec.bytes ? (v) => (v > 1 ? 2 ** Math.ceil(Math.log2(v)) : 1) : niceMax;
    const max = spec.max != null ? spec.max : nice(top);
    const y = (v) => m.t + (1 - v / max) * plotH;

    const root = svg('svg', { width, height, viewBox: `0 0 ${width} ${height}`, role: 'img' });
    for (const f of [0, 0.5, 1]) {
      const gy = y(max * f);
      svg('line', { class: 'grid', x1: m.l, x2: width - m.r, y1: gy, y2: gy }, root);
      const label = svg('text', { x: m.l - 6, y: gy + 4, 'text-anchor': 'end' }, root);
      label.textContent = spec.fmt(max * f);
    }
    for (const f of [0, 1 / 3, 2 / 3, 1]) {
      const label = svg('text', {
        x: m.l + f * plotW,
        y: height - 4,
        'text-anchor': f === 0 ? 'start' : f === 1 ? 'end' : 'middle',
      }, root);
      label.textContent = f === 1 ? 'now' : `−${fmtSpan(windowS * (1 - f))}`;
    }

    let drawn = false;
    spec.series.forEach((s, k) => {
      // Contiguous runs of known values.
      const runs = [];
      let run = [];
      for (let i = 0; i < n; i += 1) {
        if (highs[k][i] == null || spec.t[i] < now - windowS) {
          if (run.length) runs.push(run);
          run = [];
        } else {
          run.push(i);
        }
      }
      if (run.length) runs.push(run);
      for (const r of runs) {
        drawn = true;
        if (spec.stacked) {
          const upper = r.map((i) => `${x(spec.t[i]).toFixed(1)},${y(highs[k][i]).toFixed(1)}`);
          const lower = r.slice().reverse().map((i) => `${x(spec.t[i]).toFixed(1)},${y(lows[k][i]).toFixed(1)}`);
          if (r.length === 1) {
            const cx = x(spec.t[r[0]]);
            svg('rect', { class: `area ${s.cls}`, x: cx - 1.5, width: 3, y: y(highs[k][r[0]]), height: Math.max(0, y(lows[k][r[0]]) - y(highs[k][r[0]])) }, root);
          } else {
            svg('polygon', { class: `area ${s.cls}`, points: upper.concat(lower).join(' ') }, root);
          }
        } else if (r.length === 1) {
          svg('circle', { class: s.cls, cx: x(spec.t[r[0]]), cy: y(highs[k][r[0]]), r: 2.5 }, root);
        } else {
          const d = r.map((i, j) => `${j ? 'L' : 'M'}${x(spec.t[i]).toFixed(1)},${y(highs[k][i]).toFixed(1)}`).join('');
          svg('path', { class: `line ${s.cls}${s.dashed ? ' dashed' : ''}`, d }, root);
        }
      }
    });
    if (!drawn) {
      const t = svg('text', { class: 'empty', x: m.l + plotW / 2, y: m.t + plotH / 2, 'text-anchor': 'middle' }, root);
      t.textContent = `waiting for data (a point every ${state.interval}\u00a0s)`;
    }
    root.setAttribute('aria-label', `${spec.title}, last ${fmtSpan(windowS)}`);
    box.replaceChildren(root);
  }

  function legend(id, series, latest) {
    const items = series.map((s, k) => {
      const li = document.createElement('li');
      const sw = document.createElement('span');
      sw.className = `swatch ${s.cls}`;
      li.append(sw, `${s.label} ${latest[k]}`);
      return li;
    });
    $(id).replaceChildren(...items);
  }

  // ---- From the history: one value per interval -----------------------------
  // Per interval (between consecutive points): its end time and dt.
  function intervals() {
    const out = [];
    const p = state.points;
    for (let i = 1; i < p.length; i += 1) {
      const dt = p[i].unix_seconds - p[i - 1].unix_seconds;
      if (dt > 0) out.push({ t: p[i].unix_seconds, dt, a: p[i - 1].stats, b: p[i].stats });
    }
    return out;
  }
  const delta = (a, b, get) => Math.max(0, (get(b) || 0) - (get(a) || 0));
  const last = (values) => {
    for (let i = values.length - 1; i >= 0; i -= 1) if (values[i] != null) return values[i];
    return null;
  };

  function drawCharts() {
    if (!state.stats) return;
    const now = Date.now() / 1000;
    const iv = intervals();
    const t = iv.map((v) => v.t);
    const sharedOn = Boolean(state.stats.shared && state.stats.shared.enabled);
    const outcomes = OUTCOMES.filter((o) => !o.shared || sharedOn);

    const hit = iv.map(({ a, b }) => {
      const lookups = delta(a, b, (s) => s.cache.lookups);
      return lookups === 0 ? null : 1 - delta(a, b, (s) => s.cache.misses) / lookups;
    });
    drawChart($('chart-hit'), {
      now, t, title: 'Hit rate of each interval', max: 1, fmt: fmtPctAxis,
      series: [{ label: 'hit rate', cls: 's0', values: hit }],
    });

    const perOutcome = outcomes.map((o) => ({
      label: o.label,
      cls: o.cls,
      values: iv.map(({ a, b, dt }) => delta(a, b, (s) => s.cache[o.field]) / dt),
    }));
    drawChart($('chart-lookups'), { now, t, title: 'Lookups per second by outcome', stacked: true, fmt: fmtPerSecond, series: perOutcome });
    legend('legend-lookups', perOutcome, perOutcome.map((s) => fmtPerSecond(last(s.values))));

    const points = state.points.filter((p) => p.unix_seconds >= now - state.capacity * state.interval);
    const pt = points.map((p) => p.unix_seconds);
    const conv = (get) => points.map((p) => get(p.stats.conversions));
    const convSeries = [
      { label: 'active', cls: 's1', values: conv((c) => c.active) },
      { label: 'queued', cls: 's5', values: conv((c) => c.queued) },
      { label: 'permits', cls: 's6', values: conv((c) => c.max_concurrent), dashed: true },
    ];
    drawChart($('chart-conversions'), { now, t: pt, title: 'Conversions active and queued', fmt: (v) => fmtInt(v), series: convSeries });
    legend('legend-conversions', convSeries, convSeries.map((s) => fmtInt(last(s.values))));

    const latSeries = [
      { label: 'p50', cls: 's0', values: conv((c) => c.p50_ms) },
      { label: 'p95', cls: 's3', values: conv((c) => c.p95_ms) },
      { label: 'p99', cls: 's5', values: conv((c) => c.p99_ms) },
    ];
    drawChart($('chart-latency'), { now, t: pt, title: 'Conversion time', fmt: fmtMs, series: latSeries });
    legend('legend-latency', latSeries, latSeries.map((s) => fmtMs(last(s.values))));

    const tierSeries = [
      { label: 'memory', cls: 's0', values: points.map((p) => p.stats.cache.memory.bytes) },
      { label: 'disk', cls: 's1', values: points.map((p) => (p.stats.cache.disk.enabled ? p.stats.cache.disk.bytes : null)) },
    ];
    drawChart($('chart-bytes'), { now, t: pt, title: 'Bytes stored by tier', fmt: fmtBytes, bytes: true, series: tierSeries });
    legend('legend-bytes', tierSeries, tierSeries.map((s) => fmtBytes(last(s.values))));

    drawChart($('chart-rejected'), {
      now, t, title: 'Rejected per second', fmt: fmtPerSecond,
      series: [{ label: 'rejected', cls: 's5', values: iv.map(({ a, b, dt }) => delta(a, b, (s) => s.conversions.rejected_overload) / dt) }],
    });

    if (state.stats.upstream && state.stats.upstream.configured) {
      const proxySeries = [
        { label: 'backend calls', cls: 's1', values: iv.map(({ a, b, dt }) => delta(a, b, (s) => s.upstream.calls) / dt) },
        { label: 'backend errors', cls: 's5', values: iv.map(({ a, b, dt }) => delta(a, b, (s) => s.upstream.errors) / dt) },
        { label: 'answers from the store', cls: 's0', values: iv.map(({ a, b, dt }) => delta(a, b, (s) => s.upstream.cache.lookups - s.upstream.cache.misses) / dt) },
      ];
      drawChart($('chart-proxy'), { now, t, title: 'Backend calls per second', fmt: fmtPerSecond, series: proxySeries });
      legend('legend-proxy', proxySeries, proxySeries.map((s) => fmtPerSecond(last(s.values))));
    }
  }

  // ---- The figures now ----------------------------------------------------
  function facts(id, rows) {
    const items = rows.map(([name, value]) => {
      const div = document.createElement('div');
      const dt = document.createElement('dt');
      const dd = document.createElement('dd');
      dt.textContent = name;
      dd.textContent = value;
      div.append(dt, dd);
      return div;
    });
    $(id).replaceChildren(...items);
  }

  function tierRow(name, used, capacity, detail) {
    const row = document.createElement('div');
    row.className = 'tier';
    const label = document.createElement('span');
    label.className = 'name';
    label.textContent = name;
    const meter = document.createElement('div');
    meter.className = 'meter';
    const fill = document.createElement('span');
    const share = capacity > 0 ? Math.min(1, used / capacity) : 0;
    fill.style.width = `${(share * 100).toFixed(1)}%`;
    if (share > 0.9) meter.classList.add('high');
    meter.setAttribute('role', 'meter');
    meter.setAttribute('aria-label', `${name} used`);
    meter.setAttribute('aria-valuemin', '0');
    meter.setAttribute('aria-valuemax', String(capacity || 0));
    meter.setAttribute('aria-valuenow', String(used || 0));
    meter.appendChild(fill);
    const text = document.createElement('span');
    text.className = 'detail';
    text.textContent = detail;
    row.append(label, meter, text);
    return row;
  }

  function renderNow() {
    const s = state.stats;
    if (!s) return;
    const c = s.cache;
    const conv = s.conversions;
    const hitRate = $('hit-rate');
    hitRate.textContent = c.lookups ? fmtPct(c.hit_rate) : '–';
    hitRate.dataset.value = String(c.hit_rate);
    setText('hit-sub', `${fmtInt(c.lookups - c.misses)} of ${fmtInt(c.lookups)} lookups without converting`);

    // Rates now: between this poll and the previous one.
    const prev = state.previous;
    const dt = prev ? (state.polledAt - prev.at) / 1000 : 0;
    const rate = (get) => (prev && dt > 0 ? delta(prev.stats, s, get) / dt : null);
    setText('lookups-rate', fmtPerSecond(rate((x) => x.cache.lookups)));
    setText('lookups-total', `${fmtInt(c.lookups)} since start; ${fmtInt(c.misses)} converted`);
    setText('active', `${fmtInt(conv.active)} / ${fmtInt(conv.max_concurrent)}`);
    const queue = conv.max_queued != null ? ` / ${fmtInt(conv.max_queued)}` : '';
    setText('active-sub', `running / permits; queued ${fmtInt(conv.queued)}${queue}; ${fmtInt(conv.completed)} done, ${fmtInt(conv.failed)} failed`);
    setText('p50', fmtMs(conv.p50_ms));
    setText('latency-sub', `p50; p95 ${fmtMs(conv.p95_ms)}, p99 ${fmtMs(conv.p99_ms)}`);
    setText('rejected-rate', fmtPerSecond(rate((x) => x.conversions.rejected_overload)));
    setText('rejected-total', `wait queue full: ${fmtInt(conv.rejected_overload)} since start`);
    setText('uptime', fmtDuration(s.uptime_seconds));
    setText('workers', `${fmtInt(conv.workers)} workers${s.version ? `, version ${s.version}` : ''}`);
    if (s.version) setText('version', s.version);

    const tiers = [
      tierRow('Memory', c.memory.bytes, c.memory.capacity_bytes,
        `${fmtBytes(c.memory.bytes)} of ${fmtBytes(c.memory.capacity_bytes)}; ${fmtInt(c.memory.entries)} entries; ${fmtInt(c.evictions.memory)} evictions`),
    ];
    if (c.disk.enabled) {
      tiers.push(tierRow('Disk', c.disk.bytes, c.disk.capacity_bytes,
        `${fmtBytes(c.disk.bytes)} of ${fmtBytes(c.disk.capacity_bytes)}; ${fmtInt(c.disk.entries)} entries; ${fmtInt(c.evictions.disk)} evictions; ${fmtBytes(c.disk.size_on_disk_bytes)} on disk`));
    } else {
      tiers.push(tierRow('Disk', 0, 0, 'off (memory only): the disk tier could not be used'));
    }
    const sh = s.shared;
    if (sh && sh.enabled) {
      tiers.push(tierRow('Shared', 0, 0,
        `${sh.up ? 'up' : 'down'}; ${fmtBytes(sh.bytes_read)} read, ${fmtBytes(sh.bytes_written)} written (capacity: Redis maxmemory)`));
    }
    if (s.memory) {
      tiers.push(tierRow('Uploads', s.memory.inflight_upload_bytes, s.memory.upload_budget_bytes,
        `${fmtBytes(s.memory.inflight_upload_bytes)} of ${fmtBytes(s.memory.upload_budget_bytes)} upload budget in use; ${fmtInt(s.memory.rejected_over_budget)} refused`));
      if (s.memory.answer_budget_bytes != null) {
        tiers.push(tierRow('Answers', s.memory.inflight_answer_bytes, s.memory.answer_budget_bytes,
          `${fmtBytes(s.memory.inflight_answer_bytes)} of ${fmtBytes(s.memory.answer_budget_bytes)} answer budget in use; ${fmtInt(s.memory.answers_streamed)} streamed from disk; ${fmtInt(s.memory.answers_rejected_over_budget)} refused`));
      }
    }
    $('tiers').replaceChildren(...tiers);
    facts('store-facts', [
      ['Corrupt records', fmtInt(c.corrupt_records)],
      ['Disk write failures', fmtInt(c.disk_write_failures)],
      ['Conversions in flight', fmtInt(c.in_flight)],
      ['Evictions (memory / disk)', `${fmtInt(c.evictions.memory)} / ${fmtInt(c.evictions.disk)}`],
    ]);

    const up = s.upstream;
    $('proxy').hidden = !(up && up.configured);
    if (up && up.configured) {
      const uc = up.cache;
      facts('proxy-facts', [
        ['Backend calls', fmtInt(up.calls)],
        ['Backend errors', fmtInt(up.errors)],
        ['Mean backend time', fmtMs(up.avg_ms)],
        ['Answer store hit rate', uc.lookups ? fmtPct(uc.hit_rate) : '–'],
        ['hit-memory / hit-disk', `${fmtInt(uc.hits_memory)} / ${fmtInt(uc.hits_disk)}`],
        ['coalesced / miss', `${fmtInt(uc.coalesced)} / ${fmtInt(uc.misses)}`],
      ]);
    }
    $('shared').hidden = !(sh && sh.enabled);
    if (sh && sh.enabled) {
      facts('shared-facts', [
        ['State', sh.up ? 'up' : 'down'],
        ['Redis', sh.url || '–'],
        ['Errors', fmtInt(sh.errors)],
        ['Fallbacks', fmtInt(sh.fallbacks)],
        ['Lock takeovers', fmtInt(sh.lock_takeovers)],
        ['Corrupt values', fmtInt(sh.corrupt_values)],
      ]);
    }
    const span = fmtSpan(state.capacity * state.interval);
    for (const el of document.querySelectorAll('.window')) el.textContent = `(last ${span})`;
    setText('updated', `updated ${new Date(state.polledAt).toLocaleTimeString('en-GB')}, every ${REFRESH_MS / 1000}\u00a0s`);
  }

  function renderHealth() {
    const el = $('health');
    let text = 'Healthy';
    let cls = 'good';
    const s = state.stats;
    if (!state.reachable) {
      text = 'Unreachable';
      cls = 'bad';
    } else if (!state.ready) {
      text = 'Shutting down';
      cls = 'bad';
    } else if (state.needKey) {
      text = 'Up; key needed for figures';
      cls = 'warn';
    } else if (s && s.shared && s.shared.enabled && !s.shared.up) {
      text = 'Degraded: shared tier down';
      cls = 'warn';
    } else if (s && !s.cache.disk.enabled) {
      text = 'Degraded: disk tier off';
      cls = 'warn';
    } else if (s && s.conversions.max_queued && s.conversions.queued >= 0.8 * s.conversions.max_queued) {
      text = 'Busy: queue nearly full';
      cls = 'warn';
    }
    el.textContent = text;
    el.className = `badge ${cls}`;
  }

  // ---- Polling --------------------------------------------------------------
  async function refreshHistory() {
    const lastPoint = state.points[state.points.length - 1];
    const path = lastPoint ? `/api/v1/stats/history?since=${lastPoint.unix_seconds}` : '/api/v1/stats/history';
    const { status, body } = await getJson(path, true);
    if (status !== 200 || !body) return;
    state.interval = body.interval_seconds || state.interval;
    state.capacity = body.capacity || state.capacity;
    state.points = state.points.concat(body.points || []);
    if (state.points.length > state.capacity) state.points = state.points.slice(state.points.length - state.capacity);
  }

  async function refresh() {
    try {
      const ready = await fetch('/readyz', { cache: 'no-store', signal: AbortSignal.timeout(10000) });
      state.reachable = true;
      state.ready = ready.ok;
      if (state.needKey && state.rejectedKey === apiKey) {
        // Waiting for another key: no 401 every 2 s.
        renderHealth();
        return;
      }
      const { status, body } = await getJson('/api/v1/stats', true);
      if (status === 401) {
        state.needKey = true;
        state.rejectedKey = apiKey;
        notice(apiKey
          ? 'The server refused this API key: type the right one above.'
          : 'This server needs an API key for its figures: type it above.');
      } else if (status === 200 && body) {
        state.needKey = false;
        notice('');
        state.previous = state.stats ? { stats: state.stats, at: state.polledAt } : null;
        state.stats = body;
        state.polledAt = Date.now();
        await refreshHistory();
        renderNow();
        drawCharts();
      } else {
        const e = apiError(body, status);
        notice(`Stats unavailable: ${e.code}: ${e.message}`);
      }
    } catch (_) {
      state.reachable = false;
    }
    renderHealth();
  }

  function schedule() {
    clearTimeout(state.timer);
    state.timer = setTimeout(async () => {
      await refresh();
      schedule();
    }, REFRESH_MS);
  }

  async function restart() {
    clearTimeout(state.timer);
    state.stats = null;
    state.previous = null;
    state.points = [];
    state.needKey = false;
    state.rejectedKey = null;
    await refresh();
    schedule();
  }

  // ---- The key ----------------------------------------------------------------
  $('key').value = apiKey;
  $('key-form').addEventListener('submit', (event) => {
    event.preventDefault();
    apiKey = $('key').value.trim();
    if (apiKey) sessionStorage.setItem(KEY_STORE, apiKey);
    else sessionStorage.removeItem(KEY_STORE);
    restart();
  });
  $('key-forget').addEventListener('click', () => {
    apiKey = '';
    $('key').value = '';
    sessionStorage.removeItem(KEY_STORE);
    restart();
  });

  let resizeTimer = null;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(drawCharts, 150);
  });

  // ---- Try it -----------------------------------------------------------------
  const tryState = { blob: null, name: '', objectUrl: null, recorder: null, recordStart: 0, recordTimer: null };

  function setInput(blob, name, description) {
    tryState.blob = blob;
    tryState.name = name;
    setText('input-desc', `${description} (${fmtBytes(blob.size)}).`);
    $('convert').disabled = false;
  }

  $('file').addEventListener('change', () => {
    const file = $('file').files[0];
    if (file) setInput(file, file.name, `File ${file.name}, ${file.type || 'unknown type'}`);
  });
  const drop = $('drop');
  drop.addEventListener('dragover', (event) => {
    event.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (event) => {
    event.preventDefault();
    drop.classList.remove('over');
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file) setInput(file, file.name, `File ${file.name}, ${file.type || 'unknown type'}`);
  });

  function recordingSupported() {
    return Boolean(navigator.mediaDevices && navigator.mediaDevices.getUserMedia && window.MediaRecorder);
  }

  async function startRecording() {
    tryError('');
    if (!recordingSupported()) {
      tryError('This browser cannot record here (recording needs MediaRecorder, and https or localhost).');
      return;
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (e) {
      tryError(`The microphone is not available: ${e.name}: ${e.message}`);
      return;
    }
    const type = RECORD_TYPES.find((t) => MediaRecorder.isTypeSupported(t));
    const recorder = new MediaRecorder(stream, type ? { mimeType: type } : {});
    const chunks = [];
    recorder.addEventListener('dataavailable', (event) => {
      if (event.data && event.data.size) chunks.push(event.data);
    });
    recorder.addEventListener('stop', () => {
      stream.getTracks().forEach((track) => track.stop());
      clearInterval(tryState.recordTimer);
      const seconds = (performance.now() - tryState.recordStart) / 1000;
      const mime = recorder.mimeType || type || 'audio/webm';
      const ext = mime.includes('ogg') ? 'ogg' : mime.includes('webm') ? 'webm' : 'bin';
      setInput(new Blob(chunks, { type: mime }), `recording.${ext}`, `Recording, ${seconds.toFixed(1)}\u00a0s, ${mime}`);
      setText('record-state', 'recorded');
      $('record').textContent = 'Record';
      $('record').setAttribute('aria-pressed', 'false');
      tryState.recorder = null;
    });
    recorder.start();
    tryState.recorder = recorder;
    tryState.recordStart = performance.now();
    $('record').textContent = 'Stop';
    $('record').setAttribute('aria-pressed', 'true');
    const tick = () => setText('record-state', `recording… ${((performance.now() - tryState.recordStart) / 1000).toFixed(1)}\u00a0s`);
    tick();
    tryState.recordTimer = setInterval(tick, 200);
  }

  $('record').addEventListener('click', () => {
    if (tryState.recorder) tryState.recorder.stop();
    else startRecording();
  });

  function tryError(text) {
    const el = $('try-error');
    el.textContent = text;
    el.hidden = !text;
  }

  async function convert() {
    if (!tryState.blob) return;
    tryError('');
    const button = $('convert');
    button.disabled = true;
    button.textContent = 'Converting…';
    const query = new URLSearchParams();
    if ($('rate').value) query.set('rate', $('rate').value);
    if ($('channels').value) query.set('channels', $('channels').value);
    const path = `/api/v1/convert${query.toString() ? `?${query}` : ''}`;
    const started = performance.now();
    try {
      const response = await fetch(path, {
        method: 'POST',
        headers: authHeaders({ 'Content-Type': tryState.blob.type || 'application/octet-stream' }),
        body: tryState.blob,
        cache: 'no-store',
      });
      const body = await response.blob();
      const rtt = performance.now() - started;
      const h = (name) => response.headers.get(name) || '';
      $('result').hidden = false;
      setText('res-status', `${response.status} ${response.statusText}`.trim());
      setText('res-cache', h('X-Cache') || '–');
      const durationMs = h('X-Audio-Duration-Ms');
      $('res-duration').dataset.ms = durationMs;
      setText('res-duration', durationMs ? fmtMs(Number(durationMs)) : '–');
      setText('res-rtt', fmtMs(rtt));
      setText('res-size', fmtBytes(body.size));
      setText('res-key', h('ETag').replace(/"/g, '') || '–');
      if (response.ok) {
        if (tryState.objectUrl) URL.revokeObjectURL(tryState.objectUrl);
        tryState.objectUrl = URL.createObjectURL(new Blob([body], { type: 'audio/wav' }));
        $('player').src = tryState.objectUrl;
        $('download').href = tryState.objectUrl;
        const key = h('ETag').replace(/"/g, '');
        $('download').download = `${tryState.name.replace(/\.[^.]*$/, '') || 'opusgate'}-${key.slice(0, 12)}.wav`;
        $('player-box').hidden = false;
      } else {
        let parsed = null;
        try {
          parsed = JSON.parse(await body.text());
        } catch (_) {
          parsed = null;
        }
        const e = apiError(parsed, response.status);
        tryError(`${e.code}: ${e.message}`);
      }
    } catch (e) {
      setText('res-status', 'no answer');
      $('result').hidden = false;
      tryError(`The request failed: ${e.message}`);
    } finally {
      button.disabled = false;
      button.textContent = 'Convert';
    }
    // The dashboard shows the lookup at once.
    if (!state.needKey) {
      await refresh();
      schedule();
    }
  }
  $('convert').addEventListener('click', convert);

  restart();
})();
