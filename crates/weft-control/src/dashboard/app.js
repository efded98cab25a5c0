// Weft dashboard: reads the control plane's HTTP API from the page's own origin and draws it.
// Golden metrics, edges and routes are polled every few seconds; the tap view reads the NDJSON
// stream of GET /v1/tap/{ns}/{workload} as it arrives. Every failure is shown in the page:
// nothing here throws past its caller or writes to the console.
'use strict';

(() => {
  /** How often the tables and the graph are asked again. */
  const REFRESH_MS = 3000;
  /** Requests the tap table keeps (oldest dropped first). */
  const TAP_ROWS = 100;
  /** Requests per second the control plane lets through to the page (`max_rps`). */
  const TAP_MAX_RPS = 50;
  const TABS = ['overview', 'topology', 'routes', 'tap'];
  const SVG_NS = 'http://www.w3.org/2000/svg';

  const state = {
    namespace: '',
    window: '1m',
    /** The workload rows of the last refresh (the tap view's choices and the graph's nodes). */
    workloads: [],
    updates: 0,
    tap: null,
  };

  const $ = (id) => document.getElementById(id);

  /** An HTML element with attributes (`dataset` via `data-*` keys) and children. */
  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    append(node, children);
    return node;
  }

  /** An SVG element, likewise. */
  function svg(tag, attrs, children) {
    const node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    append(node, children);
    return node;
  }

  function setAttrs(node, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined) node.setAttribute(k, String(v));
    }
  }

  function append(node, children) {
    for (const c of [].concat(children === undefined ? [] : children)) {
      if (c === null || c === undefined) continue;
      node.appendChild(typeof c === 'object' ? c : document.createTextNode(String(c)));
    }
  }

  /** Shows `message` in the error box `id`, or hides it when `message` is empty. */
  function showError(id, message) {
    const box = $(id);
    if (!box) return;
    box.textContent = message || '';
    box.hidden = !message;
  }

  /** The control plane could not be reached at all (not an answer with an error). */
  class Unreachable extends Error {}

  /** GET `path` as JSON; an error in words for a network failure or a non-2xx answer. */
  async function api(path, signal) {
    let rsp;
    try {
      rsp = await fetch(path, { headers: { Accept: 'application/json' }, cache: 'no-store', signal });
    } catch (e) {
      if (signal && signal.aborted) throw e;
      throw new Unreachable(`cannot reach the control plane (${e && e.message ? e.message : e})`);
    }
    const text = await rsp.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch (_) {
      body = null;
    }
    if (!rsp.ok) {
      const why = body && typeof body.error === 'string' ? body.error : text.trim();
      throw new Error(`GET ${path}: ${rsp.status} ${rsp.statusText}: ${why}`);
    }
    if (body === null) throw new Error(`GET ${path}: the answer is not JSON`);
    return body;
  }

  function query(params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
    return q.toString();
  }

  // ---- figures as text (the CLI's conventions: "–" for no requests) ----

  const isNum = (v) => typeof v === 'number' && Number.isFinite(v);
  const fmtRate = (v) => (isNum(v) ? `${(v * 100).toFixed(2)}%` : '–');
  const fmtRps = (v, requests) => (isNum(v) && (v > 0 || requests) ? v.toFixed(1) : '–');
  const fmtMs = (v) => (isNum(v) ? (v < 10 ? v.toFixed(1) : Math.round(v).toString()) + ' ms' : '–');
  const fmtInt = (v) => (isNum(v) ? String(Math.round(v)) : '–');
  const fmtUs = (v) => {
    if (!isNum(v)) return '–';
    if (v < 1000) return `${v} µs`;
    if (v < 10000) return `${(v / 1000).toFixed(1)} ms`;
    return `${Math.round(v / 1000)} ms`;
  };
  const rateClass = (v) => (!isNum(v) ? '' : v >= 0.99 ? 'good' : v >= 0.9 ? 'fair' : 'poor');

  /** A table cell: text, optionally right-aligned (`num`) and with a class. */
  function cell(text, opts) {
    const o = opts || {};
    const classes = [o.num ? 'num' : '', o.cls || ''].filter(Boolean).join(' ');
    return el('td', { class: classes || null, title: o.title || null }, text);
  }

  /** Replaces the body of table `id` with `rows`, each made by `toRow`; shows `emptyId` when none. */
  function fill(id, emptyId, rows, toRow) {
    const table = $(id);
    if (!table) return;
    const body = table.tBodies[0];
    body.replaceChildren(...rows.map(toRow));
    const empty = $(emptyId);
    if (empty) empty.hidden = rows.length > 0;
    table.dataset.rows = String(rows.length);
  }

  /** One row of golden metrics (a workload or a Service). */
  function metricsRow(kind, r) {
    const tr = el('tr', {
      'data-kind': kind,
      'data-namespace': r.namespace,
      'data-name': r.name,
      'data-rps': isNum(r.rps) ? r.rps : 0,
      class: r.stale ? 'stale' : null,
      title: r.stale ? `stale: ${r.error || 'not scraped yet'}` : null,
    });
    append(tr, [
      cell(r.namespace),
      cell(r.name),
      cell(`${fmtInt(r.meshed)}/${fmtInt(r.total)}`, { num: true }),
      cell(fmtRate(r.success_rate), { num: true, cls: rateClass(r.success_rate) }),
      cell(fmtRps(r.rps), { num: true }),
      cell(fmtMs(r.latency_ms_p50), { num: true }),
      cell(fmtMs(r.latency_ms_p95), { num: true }),
      cell(fmtMs(r.latency_ms_p99), { num: true }),
      cell(fmtInt(r.tcp_connections), { num: true }),
    ]);
    return tr;
  }

  function routeRow(r) {
    const bound = (v) => (isNum(v) ? `${Math.round(v)} ms` : '–');
    const tr = el('tr', {
      'data-namespace': r.namespace,
      'data-service': r.service,
      'data-route': r.route,
      'data-rps': isNum(r.rps) ? r.rps : 0,
      class: r.stale ? 'stale' : null,
    });
    append(tr, [
      cell(r.namespace),
      cell(r.service),
      cell(fmtInt(r.port), { num: true }),
      cell(r.route),
      cell(r.route_kind || '–'),
      cell(fmtRate(r.success_rate), { num: true, cls: rateClass(r.success_rate) }),
      cell(fmtRps(r.rps, r.requests), { num: true }),
      cell(bound(r.latency_ms_p50), { num: true }),
      cell(bound(r.latency_ms_p95), { num: true }),
      cell(bound(r.latency_ms_p99), { num: true }),
      cell(fmtInt(r.requests), { num: true }),
    ]);
    return tr;
  }

  function edgeRow(e) {
    const tr = el('tr', {
      'data-src': `${e.src_namespace}/${e.src}`,
      'data-dst': `${e.dst_namespace}/${e.dst}`,
      'data-secured': e.secured ? 'true' : 'false',
    });
    append(tr, [
      cell(`${e.src_namespace}/${e.src}`),
      // A destination in a linked cluster (a multicluster mirror) names that cluster.
      cell(`${e.dst_namespace}/${e.dst}` + (e.dst_cluster ? ` @ ${e.dst_cluster}` : '')),
      cell(e.secured ? '✓ mTLS' : '✗ not mTLS', { cls: e.secured ? 'good' : 'poor' }),
      cell(fmtRps(e.rps, e.requests), { num: true }),
      cell(e.client_id || '–', { cls: 'ident' }),
      cell(e.server_id || '–', { cls: 'ident' }),
      cell(e.no_tls_reason || '–'),
    ]);
    return tr;
  }

  // ---- the topology graph ----

  const NODE_W = 170;
  const NODE_H = 46;
  const COL = 300;
  const ROW = 80;
  const PAD = 30;

  /** Columns by longest path from the callers (cycles cut after as many rounds as nodes). */
  function layout(names, edges) {
    const depth = new Map(names.map((n) => [n, 0]));
    for (let round = 0; round < names.length; round++) {
      let changed = false;
      for (const e of edges) {
        if (e.from === e.to) continue;
        const d = depth.get(e.from) + 1;
        if (d > depth.get(e.to) && d < names.length) {
          depth.set(e.to, d);
          changed = true;
        }
      }
      if (!changed) break;
    }
    const columns = [];
    for (const n of names) {
      const d = depth.get(n);
      (columns[d] = columns[d] || []).push(n);
    }
    const place = new Map();
    columns.forEach((col, x) => {
      (col || []).sort().forEach((n, y) => {
        place.set(n, { x: PAD + x * COL, y: PAD + y * ROW });
      });
    });
    const width = PAD * 2 + Math.max(0, columns.length - 1) * COL + NODE_W;
    const tallest = Math.max(1, ...columns.map((c) => (c ? c.length : 0)));
    const height = PAD * 2 + (tallest - 1) * ROW + NODE_H;
    return { place, width, height };
  }

  /** A padlock (drawn: no font is sure to have one): the mark of an edge all over mTLS. */
  function lock(x, y) {
    return svg('g', { class: 'lock', transform: `translate(${x},${y})` }, [
      svg('path', { d: 'M1.5 5 V3.5 a2.5 2.5 0 0 1 5 0 V5' }),
      svg('rect', { x: 0, y: 5, width: 8, height: 6.5, rx: 1.2 }),
    ]);
  }

  /** An edge's label: a pill on the curve with the lock (mTLS) and the RPS. */
  function edgeLabel(x, y, secured, text) {
    const w = text.length * 6.6 + (secured ? 26 : 14);
    const h = 18;
    return svg('g', { class: 'label', transform: `translate(${x - w / 2},${y - h / 2})` }, [
      svg('rect', { width: w, height: h, rx: h / 2 }),
      secured ? lock(8, 3) : null,
      svg('text', { x: secured ? 19 : 7, y: 13 }, text),
    ]);
  }

  function drawGraph(rows) {
    const graph = $('graph');
    if (!graph) return;
    const key = (ns, name) => `${ns}/${name}`;
    const stats = new Map(state.workloads.map((w) => [key(w.namespace, w.name), w]));
    const edges = rows.map((e) => ({
      from: key(e.src_namespace, e.src),
      to: key(e.dst_namespace, e.dst),
      row: e,
    }));
    const names = Array.from(
      new Set([...stats.keys(), ...edges.flatMap((e) => [e.from, e.to])]),
    ).sort();
    const { place, width, height } = layout(names, edges);
    graph.setAttribute('width', width);
    graph.setAttribute('height', height);
    graph.setAttribute('viewBox', `0 0 ${width} ${height}`);
    graph.dataset.nodes = String(names.length);
    graph.dataset.edges = String(edges.length);

    const marker = (kind) =>
      svg('marker', {
        id: `arrow-${kind}`, class: kind, viewBox: '0 0 10 10', refX: 10, refY: 5,
        markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse',
      }, svg('path', { d: 'M0 0 L10 5 L0 10 z' }));
    const parts = [svg('defs', {}, [marker('secured'), marker('plain')])];

    for (const e of edges) {
      const a = place.get(e.from);
      const b = place.get(e.to);
      const kind = e.row.secured ? 'secured' : 'plain';
      const x1 = a.x + NODE_W;
      const y1 = a.y + NODE_H / 2;
      const x2 = b.x;
      const y2 = b.y + NODE_H / 2;
      const bend = Math.max(60, Math.abs(x2 - x1) / 2);
      const d = `M${x1} ${y1} C${x1 + bend} ${y1} ${x2 - bend} ${y2} ${x2} ${y2}`;
      // The curve's midpoint (t = 1/2 of the cubic), where the label goes.
      const mx = (x1 + 3 * (x1 + bend) + 3 * (x2 - bend) + x2) / 8;
      const my = (y1 + 3 * y1 + 3 * y2 + y2) / 8;
      const rps = fmtRps(e.row.rps, e.row.requests);
      const title = `${e.from} → ${e.to}: ${e.row.secured ? 'mTLS' : 'not mTLS'}` +
        (e.row.server_id ? `\nserver: ${e.row.server_id}` : '') +
        (e.row.client_id ? `\nclient: ${e.row.client_id}` : '') +
        (e.row.no_tls_reason ? `\nwhy not: ${e.row.no_tls_reason}` : '');
      parts.push(svg('g', {
        class: `edge ${kind}`,
        'data-src': e.from,
        'data-dst': e.to,
        'data-secured': e.row.secured ? 'true' : 'false',
        'data-rps': isNum(e.row.rps) ? e.row.rps : 0,
      }, [
        svg('title', {}, title),
        svg('path', { d, 'marker-end': `url(#arrow-${kind})` }),
        edgeLabel(mx, my, e.row.secured, rps === '–' ? '–' : `${rps} rps`),
      ]));
    }

    for (const n of names) {
      const p = place.get(n);
      const w = stats.get(n);
      const [ns, name] = n.split('/');
      const unmeshed = w && w.meshed === 0;
      parts.push(svg('g', {
        class: `node${unmeshed ? ' unmeshed' : ''}`,
        'data-workload': n,
        transform: `translate(${p.x},${p.y})`,
      }, [
        svg('title', {}, w ? `${n}: ${fmtRps(w.rps)} rps, success ${fmtRate(w.success_rate)}` : n),
        svg('rect', { width: NODE_W, height: NODE_H, rx: 6 }),
        svg('text', { x: NODE_W / 2, y: 17 }, name),
        svg('text', { class: 'ns', x: NODE_W / 2, y: 34 }, ns),
      ]));
    }
    graph.replaceChildren(...parts);
  }

  // ---- the periodic refresh ----

  /** Asks every endpoint the views show, then draws what answered and says what did not. */
  async function refresh() {
    const ns = state.namespace;
    const q = query({ window: state.window, namespace: ns });
    // The namespaces first: when the control plane cannot be reached, one failed request per
    // refresh says so (the browser reports each refused connection in its console).
    const [namespaces] = await Promise.allSettled([
      api(`/v1/stat/namespaces?${query({ window: state.window })}`),
    ]);
    const down = namespaces.status === 'rejected' && namespaces.reason instanceof Unreachable;
    const ask = (path) => (down ? Promise.reject(namespaces.reason) : api(path));
    const [workloads, services, edges, routes] = await Promise.allSettled([
      ask(`/v1/stat/workloads?${q}`),
      ask(`/v1/stat/services?${q}`),
      ask(`/v1/edges?${q}`),
      ask(`/v1/routes?${q}`),
    ]);
    if (ns !== state.namespace) return; // the selection changed meanwhile: a newer refresh follows

    const rowsOf = (r) => (r.status === 'fulfilled' && Array.isArray(r.value.rows) ? r.value.rows : null);
    const why = (r) => (r.status === 'rejected' ? String(r.reason && r.reason.message ? r.reason.message : r.reason) : '');

    const nsRows = rowsOf(namespaces);
    if (nsRows) fillNamespaces(nsRows.map((r) => r.name));

    const wl = rowsOf(workloads);
    showError('workloads-error', why(workloads));
    if (wl) {
      state.workloads = wl;
      fill('workloads-table', 'workloads-empty', wl, (r) => metricsRow('workload', r));
      fillTapWorkloads();
    }
    const svc = rowsOf(services);
    showError('services-error', why(services));
    if (svc) fill('services-table', 'services-empty', svc, (r) => metricsRow('service', r));

    const ed = rowsOf(edges);
    showError('edges-error', why(edges));
    if (ed) {
      fill('edges-table', 'edges-empty', ed, edgeRow);
      drawGraph(ed);
    }
    const rt = rowsOf(routes);
    showError('routes-error', why(routes));
    if (rt) fill('routes-table', 'routes-empty', rt, routeRow);

    const failed = [namespaces, workloads, services, edges, routes].filter((r) => r.status === 'rejected');
    const status = $('status');
    state.updates += 1;
    status.dataset.updates = String(state.updates);
    if (failed.length === 0) {
      status.dataset.state = 'ok';
      status.textContent = `updated ${new Date().toLocaleTimeString()}`;
    } else if (down) {
      status.dataset.state = 'error';
      status.textContent = `${why(namespaces)}; retrying every ${REFRESH_MS / 1000}s`;
    } else {
      status.dataset.state = 'error';
      status.textContent = `${failed.length} of 5 requests failed: ${why(failed[0])}`;
    }
    status.title = status.textContent; // the whole line, when the header cuts it short
  }

  /** Refreshes now and then every REFRESH_MS, one refresh at a time; asked during one, it
   * runs again as soon as that one ends (a new namespace or window shows without a wait). */
  let timer = null;
  let running = false;
  let again = false;
  async function tick() {
    clearTimeout(timer);
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      await refresh();
    } catch (e) {
      // A bug in drawing must not stop the refreshes; say it where a person looks.
      const status = $('status');
      status.dataset.state = 'error';
      status.textContent = `dashboard error: ${e && e.message ? e.message : e}`;
    } finally {
      running = false;
      timer = setTimeout(tick, again ? 0 : REFRESH_MS);
      again = false;
    }
  }

  function fillNamespaces(names) {
    const select = $('namespace');
    const wanted = new Set(names);
    if (state.namespace) wanted.add(state.namespace);
    const have = Array.from(select.options).slice(1).map((o) => o.value);
    const list = Array.from(wanted).sort();
    if (have.join(',') === list.join(',')) return;
    select.replaceChildren(el('option', { value: '' }, 'all namespaces'),
      ...list.map((n) => el('option', { value: n }, n)));
    select.value = state.namespace;
  }

  // ---- tabs ----

  function showTab(name) {
    const tab = TABS.includes(name) ? name : 'overview';
    for (const b of document.querySelectorAll('.tab')) {
      b.setAttribute('aria-selected', b.dataset.tab === tab ? 'true' : 'false');
    }
    for (const v of document.querySelectorAll('.view')) v.hidden = v.dataset.view !== tab;
    document.body.dataset.tab = tab;
  }

  // ---- the live tap ----

  function fillTapWorkloads() {
    const select = $('tap-workload');
    const current = select.value;
    const names = state.workloads.map((w) => `${w.namespace}/${w.name}`);
    const have = Array.from(select.options).map((o) => o.value);
    if (have.join(',') === names.join(',')) return;
    select.replaceChildren(...names.map((n) => el('option', { value: n }, n)));
    if (names.includes(current)) select.value = current;
  }

  function setTapState(s, text) {
    const node = $('tap-state');
    node.dataset.state = s;
    node.textContent = text || s;
    const running = s === 'running' || s === 'starting';
    $('tap-start').disabled = running;
    $('tap-stop').disabled = !running;
  }

  function countTap(tap) {
    const node = $('tap-count');
    node.dataset.requests = String(tap.requests);
    node.dataset.events = String(tap.events);
    node.textContent = `${tap.requests} requests, ${tap.events} events`;
  }

  /** The identity a workload registered with (`meshTLS.serverName`), or null. */
  async function identityOf(ns, name, signal) {
    try {
      const docs = await api('/v1/workloads', signal);
      const doc = (Array.isArray(docs) ? docs : []).find(
        (d) => d && d.metadata && d.metadata.namespace === ns && d.metadata.name === name);
      const tls = doc && doc.spec && (doc.spec.meshTLS || doc.spec.meshTls);
      return tls && typeof tls.serverName === 'string' ? tls.serverName : null;
    } catch (_) {
      return null;
    }
  }

  /** One event: a request's row is made by its start and filled in by its response. */
  function onTapEvent(tap, ev) {
    tap.events += 1;
    const inbound = ev.direction === 'inbound';
    const rowKey = `${ev.direction}:${ev.id}`;
    let row = tap.rows.get(rowKey);
    if (ev.type === 'request_init') {
      tap.requests += 1;
      const src = inbound ? (ev.source_meta || {}).client_id : tap.identity;
      const dst = inbound ? tap.identity : (ev.destination_meta || {}).server_id;
      const tls = (inbound ? ev.source_meta : ev.destination_meta) || {};
      const cells = {
        status: cell('…', { num: true }),
        latency: cell('…', { num: true }),
        duration: cell('…', { num: true }),
      };
      const tr = el('tr', { 'data-id': rowKey, 'data-direction': ev.direction });
      append(tr, [
        cell(inbound ? 'in' : 'out', { title: `${ev.source} → ${ev.destination}` }),
        cell(ev.method || '–'),
        cell(ev.authority || '–'),
        cell(ev.path || '–'),
        cells.status,
        cells.latency,
        cells.duration,
        cell(src || '–', { cls: 'ident' }),
        cell(dst || '–', { cls: 'ident' }),
        cell(tls.tls || 'no_identity', { cls: tls.tls === 'true' ? 'good' : 'poor' }),
      ]);
      row = { tr, cells };
      tap.rows.set(rowKey, row);
      const body = $('tap-table').tBodies[0];
      body.insertBefore(tr, body.firstChild);
      while (body.rows.length > TAP_ROWS) {
        const last = body.rows[body.rows.length - 1];
        tap.rows.delete(last.dataset.id);
        last.remove();
      }
    } else if (row && ev.type === 'response_init') {
      row.cells.status.textContent = String(ev.status);
      row.cells.status.className = `num ${ev.status >= 500 ? 'poor' : 'good'}`;
      row.cells.latency.textContent = fmtUs(ev.latency_us);
    } else if (row && ev.type === 'response_end') {
      row.cells.duration.textContent = fmtUs(ev.duration_us);
      if (ev.grpc_status !== null && ev.grpc_status !== undefined) {
        row.cells.status.textContent += ` (grpc ${ev.grpc_status})`;
      }
      if (ev.reset_code !== null && ev.reset_code !== undefined) {
        row.cells.status.textContent += ` reset ${ev.reset_code}`;
        row.cells.status.className = 'num poor';
      }
      if (row.cells.latency.textContent === '…') row.cells.latency.textContent = '–';
      tap.rows.delete(rowKey); // complete: nothing more will come for it
    }
    countTap(tap);
  }

  async function startTap() {
    stopTap();
    const choice = $('tap-workload').value;
    if (!choice) {
      showError('tap-error', 'choose a workload to tap (the list follows the namespace selector)');
      return;
    }
    const [ns, name] = choice.split('/');
    const controller = new AbortController();
    const tap = { controller, events: 0, requests: 0, rows: new Map(), identity: null, choice };
    state.tap = tap;
    $('tap-table').tBodies[0].replaceChildren();
    countTap(tap);
    showError('tap-error', '');
    setTapState('starting', `starting tap on ${choice}…`);
    const params = query({
      max_rps: String(TAP_MAX_RPS),
      path: $('tap-path').value.trim(),
      method: $('tap-method').value,
    });
    const path = `/v1/tap/${encodeURIComponent(ns)}/${encodeURIComponent(name)}?${params}`;
    try {
      tap.identity = await identityOf(ns, name, controller.signal);
      const rsp = await fetch(path, { cache: 'no-store', signal: controller.signal });
      if (!rsp.ok) {
        const text = await rsp.text();
        let why = text.trim();
        try {
          why = JSON.parse(text).error || why;
        } catch (_) { /* keep the text */ }
        throw new Error(`GET ${path}: ${rsp.status} ${rsp.statusText}: ${why}`);
      }
      if (!rsp.body) throw new Error('this browser cannot read a streamed answer');
      setTapState('running', `tapping ${choice}`);
      const reader = rsp.body.getReader();
      const decoder = new TextDecoder();
      let buffered = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffered += decoder.decode(value, { stream: true });
        let nl;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, nl).trim();
          buffered = buffered.slice(nl + 1);
          if (!line) continue;
          let ev;
          try {
            ev = JSON.parse(line);
          } catch (_) {
            showError('tap-error', `a line of the tap stream is not JSON: ${line.slice(0, 200)}`);
            continue;
          }
          if (state.tap === tap) onTapEvent(tap, ev);
        }
      }
      if (state.tap === tap) {
        state.tap = null;
        setTapState('ended', 'the tap ended (the proxy reached its limit or went away)');
      }
    } catch (e) {
      if (controller.signal.aborted) return; // stopped on purpose
      if (state.tap === tap) state.tap = null;
      showError('tap-error', e && e.message ? e.message : String(e));
      setTapState('error', 'tap failed');
    }
  }

  function stopTap() {
    const tap = state.tap;
    if (!tap) return;
    state.tap = null;
    tap.controller.abort();
    setTapState('idle', `stopped (${tap.requests} requests)`);
  }

  // ---- wiring ----

  function start() {
    const params = new URLSearchParams(window.location.search);
    state.namespace = params.get('namespace') || '';
    const win = params.get('window');
    if (win && Array.from($('window').options).some((o) => o.value === win)) state.window = win;
    $('window').value = state.window;
    fillNamespaces([]);

    for (const b of document.querySelectorAll('.tab')) {
      b.addEventListener('click', () => {
        window.location.hash = b.dataset.tab;
      });
    }
    window.addEventListener('hashchange', () => showTab(window.location.hash.slice(1)));
    showTab(window.location.hash.slice(1));

    $('namespace').addEventListener('change', (e) => {
      state.namespace = e.target.value;
      const url = new URL(window.location.href);
      if (state.namespace) url.searchParams.set('namespace', state.namespace);
      else url.searchParams.delete('namespace');
      window.history.replaceState(null, '', url);
      tick();
    });
    $('window').addEventListener('change', (e) => {
      state.window = e.target.value;
      tick();
    });
    $('tap-form').addEventListener('submit', (e) => {
      e.preventDefault();
      startTap();
    });
    $('tap-stop').addEventListener('click', stopTap);
    setTapState('idle', 'idle');
    tick();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
