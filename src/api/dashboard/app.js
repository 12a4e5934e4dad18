// omnicloud dashboard: plain JavaScript, no build step, no libraries.
//
// Login keeps the API token in sessionStorage (this tab only) and sends it as an
// Authorization header; it never goes into a URL. After login the page lists the kinds it
// shows, then follows /v1/watch (newline-delimited JSON read from a fetch() body, since
// EventSource cannot send headers) from the lists' revision, so every committed change shows
// without a reload. Nodes and the Raft view are not stored objects: they are polled.
// Charts are sampled here, in the browser, from the page's own state since it opened.
'use strict';

const TOKEN_KEY = 'omnicloud.token';
const KINDS = {
  Deployment: 'deployments',
  StatefulSet: 'statefulsets',
  Instance: 'instances',
  VirtualMachine: 'virtualmachines',
  HorizontalPodAutoscaler: 'horizontalpodautoscalers',
  Event: 'events',
};
const POLL_MS = 2000;
const SAMPLE_MS = 2000;
const HISTORY_MS = 3600 * 1000; // charts keep the last hour
const MAX_EVENTS = 200;
// Events that are scaling decisions: ScalingUp (deployment controller), SuccessfulRescale
// (HPA), ...; the deployment controller reports a scale-down as DeletingInstance.
const SCALING_REASON = /Scal|Rescale/;
const SCALED_DOWN = /scaled down/;

function scalingDecision(spec) {
  if (SCALING_REASON.test(spec.reason || '')) return spec.reason;
  if (SCALED_DOWN.test(spec.message || '')) return 'ScalingDown';
  return null;
}

const state = {
  session: 0, // bumped on login and logout; stale loops stop when it changes
  objects: Object.fromEntries(Object.keys(KINDS).map((k) => [k, new Map()])),
  revision: 0,
  nodes: [],
  cluster: null,
  series: new Map(), // "ns/name" of a Deployment -> [{t, desired, ready, cpu, mem, req}]
  markers: new Map(), // "ns/name" -> [{t, reason, message}]
  seenEvents: new Map(), // event key -> count already marked
  freshEvents: new Set(),
  openedAt: Date.now(),
  renderTimer: null,
  lastSample: 0,
};

const $ = (sel) => document.querySelector(sel);

// Builds an element: h('td', {class: 'num'}, 'text', childNode, ...).
function h(tag, attrs, ...children) {
  const svg = ['svg', 'line', 'polyline', 'text', 'g', 'title', 'rect'].includes(tag);
  const el = svg
    ? document.createElementNS('http://www.w3.org/2000/svg', tag)
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// ---- API -------------------------------------------------------------------------------

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: 'Bearer ' + token(), Accept: 'application/json' };
  const init = { method, headers, cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  let data = null;
  try {
    data = await res.json();
  } catch (_) {
    // empty or non-JSON body
  }
  if (!res.ok) {
    throw new ApiError(res.status, (data && data.message) || 'HTTP ' + res.status);
  }
  return data;
}

// A call made by a running session: a 401 means the token stopped working.
async function call(method, path, body) {
  try {
    return await api(method, path, body);
  } catch (e) {
    if (e.status === 401) logout('The API refused the token; log in again.');
    throw e;
  }
}

// ---- login -----------------------------------------------------------------------------

function showLogin(message) {
  $('#app').hidden = true;
  $('#logout').hidden = true;
  $('#login').hidden = false;
  $('#login-error').textContent = message || '';
  setConn('not logged in', '');
  $('#served-by').textContent = '';
  $('#token').focus();
}

async function login(ev) {
  ev.preventDefault();
  const input = $('#token');
  const given = input.value.trim();
  if (!given) return;
  $('#login-button').disabled = true;
  sessionStorage.setItem(TOKEN_KEY, given);
  try {
    await api('GET', '/v1/version');
    input.value = '';
    start();
  } catch (e) {
    sessionStorage.removeItem(TOKEN_KEY);
    const msg = e.status === 401 ? 'Wrong token: the API refused it.' : 'Cannot log in: ' + e.message;
    $('#login-error').textContent = msg;
  } finally {
    $('#login-button').disabled = false;
  }
}

function logout(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.session++;
  if (state.watchAbort) state.watchAbort.abort();
  showLogin(message);
}

// ---- data: lists, watch, polls -------------------------------------------------------------

function keyOf(o) {
  return (o.metadata.namespace || '') + '/' + o.metadata.name;
}

async function loadAll() {
  const lists = await Promise.all(
    Object.entries(KINDS).map(async ([kind, plural]) => [kind, await call('GET', '/v1/' + plural)]),
  );
  let revision = Infinity;
  for (const [kind, list] of lists) {
    const map = new Map();
    for (const o of list.items) map.set(keyOf(o), o);
    state.objects[kind] = map;
    revision = Math.min(revision, Number(list.metadata.revision));
  }
  state.revision = revision;
  for (const e of state.objects.Event.values()) noteEvent(e, false);
  scheduleRender();
}

// Applies one watch line. Replaying from the lowest list revision is safe: changes
// arrive in order, so each object ends at its latest state.
function onChange(change) {
  if (change.revision) state.revision = Math.max(state.revision, change.revision);
  const o = change.object;
  const map = o && state.objects[o.kind];
  if (!map) return;
  if (change.type === 'DELETED') map.delete(keyOf(o));
  else map.set(keyOf(o), o);
  if (o.kind === 'Event' && change.type !== 'DELETED') noteEvent(o, true);
  if ((o.kind === 'Deployment' || o.kind === 'Instance') && Date.now() - state.lastSample > 250) {
    sample();
  }
  scheduleRender();
}

async function watchLoop(session) {
  while (session === state.session) {
    try {
      const ctrl = new AbortController();
      state.watchAbort = ctrl;
      const res = await fetch('/v1/watch?since=' + (state.revision + 1), {
        headers: { Authorization: 'Bearer ' + token() },
        signal: ctrl.signal,
        cache: 'no-store',
      });
      if (res.status === 401) return logout('The API refused the token; log in again.');
      if (res.status === 410) {
        await loadAll(); // history compacted: list again, watch from there
        continue;
      }
      if (!res.ok) throw new Error('watch: HTTP ' + res.status);
      setConn('live', 'live');
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done || session !== state.session) break;
        buf += decoder.decode(value, { stream: true });
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (!line) continue;
          const change = JSON.parse(line);
          if (change.type === 'ERROR') {
            await loadAll(); // fell behind: list again
            ctrl.abort();
            break;
          }
          onChange(change);
        }
      }
    } catch (e) {
      if (session !== state.session) return;
    }
    setConn('reconnecting', 'down');
    await sleep(1000);
    if (session === state.session) {
      try {
        await loadAll();
      } catch (_) {
        // the next round tries again
      }
    }
  }
}

async function pollLoop(session) {
  while (session === state.session) {
    try {
      const [nodes, cluster] = await Promise.all([
        call('GET', '/v1/nodes'),
        call('GET', '/v1/cluster/status').catch(() => null),
      ]);
      state.nodes = nodes.items;
      state.cluster = cluster;
      scheduleRender();
    } catch (_) {
      // shown by the connection pill through the watch
    }
    await sleep(POLL_MS);
  }
}

async function sampleLoop(session) {
  while (session === state.session) {
    sample();
    scheduleRender();
    await sleep(SAMPLE_MS);
  }
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

async function start() {
  const session = ++state.session;
  $('#login').hidden = true;
  $('#app').hidden = false;
  $('#logout').hidden = false;
  setConn('connecting', '');
  try {
    const v = await call('GET', '/v1/version');
    $('#served-by').textContent = 'node ' + v.node + ' · v' + v.version;
    await loadAll();
  } catch (e) {
    if (session === state.session) flash('Loading failed: ' + e.message, true);
  }
  if (session !== state.session) return;
  watchLoop(session);
  pollLoop(session);
  sampleLoop(session);
}

// ---- time series and markers ---------------------------------------------------------------

function ownedInstances(kind, ns, name) {
  const out = [];
  for (const i of state.objects.Instance.values()) {
    const owner = (i.spec && i.spec.owner) || {};
    if (owner.kind === kind && owner.name === name && i.metadata.namespace === ns) out.push(i);
  }
  return out;
}

// "100m" -> 100, "1" -> 1000, "0.5" -> 500 (millicores).
function cpuMillis(q) {
  if (q === undefined || q === null) return 0;
  const s = String(q);
  return s.endsWith('m') ? parseFloat(s) : parseFloat(s) * 1000;
}

function requestedCpu(instance) {
  const containers = (instance.spec.pod && instance.spec.pod.containers) || [];
  return containers.reduce(
    (sum, c) => sum + cpuMillis(((c.resources || {}).requests || {}).cpu),
    0,
  );
}

// Takes a sample of every Deployment: on a timer, and right after a change to one of the
// kinds the charts show, so steps land where they happened.
function sample() {
  const t = Date.now();
  state.lastSample = t;
  for (const d of state.objects.Deployment.values()) {
    const ns = d.metadata.namespace;
    const mine = ownedInstances('Deployment', ns, d.metadata.name);
    const point = {
      t,
      desired: d.spec.replicas ?? 1,
      ready: (d.status && d.status.readyReplicas) || 0,
      cpu: 0,
      mem: 0,
      req: 0,
    };
    for (const i of mine) {
      const u = (i.status && i.status.usage) || {};
      point.cpu += u.cpuMillis || 0;
      point.mem += u.memoryBytes || 0;
      point.req += requestedCpu(i);
    }
    const key = keyOf(d);
    const series = state.series.get(key) || [];
    series.push(point);
    const old = series.findIndex((p) => p.t >= t - HISTORY_MS);
    if (old > 0) series.splice(0, old);
    state.series.set(key, series);
  }
}

// Records a scaling decision as a chart marker, once per event occurrence. Live events
// are placed at the time they arrived (the samples use this browser's clock too).
function noteEvent(e, live) {
  const s = e.spec || {};
  const key = keyOf(e);
  const count = s.count || 1;
  const seen = state.seenEvents.get(key);
  state.seenEvents.set(key, count);
  if (live && seen !== count) {
    state.freshEvents.add(key);
    setTimeout(() => state.freshEvents.delete(key), 2000);
  }
  const obj = s.involvedObject || {};
  const decision = scalingDecision(s);
  if (seen === count || !decision) return;
  if (obj.kind !== 'Deployment' && obj.kind !== 'HorizontalPodAutoscaler') return;
  const t = live ? Date.now() : Date.parse(s.lastTimestamp || e.metadata.creationTimestamp);
  const target = obj.kind === 'Deployment' ? obj.name : hpaTarget(obj.namespace, obj.name);
  if (!target) return;
  const dkey = (obj.namespace || e.metadata.namespace) + '/' + target;
  const list = state.markers.get(dkey) || [];
  list.push({ t, reason: decision, message: s.message || '' });
  state.markers.set(dkey, list);
}

function hpaTarget(ns, name) {
  const hpa = state.objects.HorizontalPodAutoscaler.get(ns + '/' + name);
  const ref = hpa && hpa.spec.scaleTargetRef;
  return ref && ref.kind === 'Deployment' ? ref.name : null;
}

function hpaFor(ns, kind, name) {
  for (const hpa of state.objects.HorizontalPodAutoscaler.values()) {
    const ref = hpa.spec.scaleTargetRef || {};
    if (hpa.metadata.namespace === ns && ref.kind === kind && ref.name === name) return hpa;
  }
  return null;
}

// The HPA's cpu utilization target in percent, if it has one.
function cpuTarget(hpa) {
  if (!hpa) return null;
  for (const m of hpa.spec.metrics || []) {
    const r = m.resource || m.containerResource;
    if (r && r.name === 'cpu' && r.target && r.target.averageUtilization != null) {
      return r.target.averageUtilization;
    }
  }
  return hpa.spec.targetCPUUtilizationPercentage ?? null;
}

// ---- rendering -----------------------------------------------------------------------------

function scheduleRender() {
  if (state.renderTimer) return;
  // A timer, not requestAnimationFrame: it also runs in background tabs.
  state.renderTimer = setTimeout(() => {
    state.renderTimer = null;
    render();
  }, 50);
}

function render() {
  renderCluster();
  renderDeployments();
  renderStatefulSets();
  renderCharts();
  renderInstances();
  renderVms();
  renderEvents();
}

function setConn(text, cls) {
  const el = $('#conn');
  el.textContent = text;
  el.className = 'pill ' + (cls || '');
}

let flashTimer = null;
function flash(text, isError) {
  const el = $('#flash');
  el.textContent = text;
  el.className = isError ? 'error' : '';
  clearTimeout(flashTimer);
  flashTimer = setTimeout(() => (el.textContent = ''), 8000);
}

function age(ts) {
  const ms = typeof ts === 'number' ? Date.now() - ts : Date.now() - Date.parse(ts);
  if (!isFinite(ms)) return '-';
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 120) return s + 's';
  if (s < 7200) return Math.floor(s / 60) + 'm';
  if (s < 172800) return Math.floor(s / 3600) + 'h';
  return Math.floor(s / 86400) + 'd';
}

function bytes(n) {
  if (!n) return '0';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return (n >= 10 || i === 0 ? n.toFixed(0) : n.toFixed(1)) + ' ' + units[i];
}

function sorted(map) {
  return [...map.values()].sort((a, b) => keyOf(a).localeCompare(keyOf(b)));
}

// Keeps one <tr> per key and updates its cells in place, so inputs in a row (the scale
// control) survive live updates. `cells` gives strings or {text, cls}; `extra` builds
// cells once, when the row is created.
function syncTable(table, items, keyFn, cells, extra) {
  const tbody = $(table).tBodies[0];
  const columns = $(table).tHead.rows[0].cells.length;
  const wanted = new Set(items.map(keyFn));
  for (const row of [...tbody.rows]) {
    if (!wanted.has(row.dataset.key)) row.remove();
  }
  const rows = new Map([...tbody.rows].map((r) => [r.dataset.key, r]));
  let previous = null;
  for (const item of items) {
    const key = keyFn(item);
    let row = rows.get(key);
    const values = cells(item);
    if (!row) {
      row = h('tr', { 'data-key': key });
      for (let i = 0; i < values.length; i++) row.append(h('td'));
      if (extra) row.append(...extra(item));
    }
    values.forEach((v, i) => {
      const cell = row.cells[i];
      const text = v && typeof v === 'object' ? v.text : v;
      const cls = (v && typeof v === 'object' && v.cls) || '';
      if (cell.textContent !== String(text)) cell.textContent = String(text);
      if (cell.className !== cls) cell.className = cls;
    });
    const at = previous ? previous.nextSibling : tbody.firstChild;
    if (row !== at) tbody.insertBefore(row, at);
    previous = row;
  }
  let empty = tbody.querySelector('tr.empty');
  if (items.length === 0 && !empty) {
    tbody.append(h('tr', { class: 'empty' }, h('td', { colspan: columns }, 'none')));
  } else if (items.length > 0 && empty) {
    empty.remove();
  }
}

function renderCluster() {
  const c = state.cluster;
  const raft = (c && c.raft) || {};
  const voters = (raft.members || []).filter((m) => m.role !== 'learner');
  const cards = [
    ['Raft leader', raft.leader || 'none'],
    ['Term', raft.term ?? '-'],
    ['Commit index', raft.commitIndex ?? '-'],
    ['Voters', voters.map((m) => m.name).join(', ') || '-'],
    [
      'Members',
      c ? `${c.members.alive} alive · ${c.members.suspect} suspect · ${c.members.down} down` : '-',
    ],
    ['Agents / directors', c ? `${c.roles.agents} / ${c.roles.directors}` : '-'],
  ];
  const box = $('#cluster-summary');
  box.replaceChildren(
    ...cards.map(([label, value]) =>
      h('div', { class: 'card', 'data-card': label }, h('div', { class: 'label' }, label),
        h('div', { class: 'value' }, value)),
    ),
  );
  const statusCls = { alive: 'ok', suspect: 'warn', down: 'bad' };
  syncTable('#nodes', state.nodes, (n) => n.name, (n) => [
    n.name,
    n.address,
    (n.roles || []).join(', '),
    { text: n.status, cls: statusCls[n.status] || '' },
    n.raft,
    ((n.cpuMillis || 0) / 1000).toFixed(1) + ' cores',
    bytes(n.memoryBytes),
    [n.containers ? 'containers' : '', n.kvm ? 'kvm' : ''].filter(Boolean).join(', ') || '-',
    n.startedAtMs ? age(n.startedAtMs) : '-',
  ]);
}

async function scale(kind, o, input, button) {
  const n = Number(input.value);
  if (!Number.isInteger(n) || n < 0) {
    flash('Replicas must be a whole number >= 0', true);
    return;
  }
  const path = `/v1/namespaces/${encodeURIComponent(o.metadata.namespace)}/${KINDS[kind]}/` +
    `${encodeURIComponent(o.metadata.name)}/scale`;
  button.disabled = true;
  try {
    await call('PUT', path, { spec: { replicas: n } });
    flash(`${kind.toLowerCase()}/${o.metadata.name} scaled to ${n}`);
    input.value = '';
  } catch (e) {
    flash('Scale failed: ' + e.message, true);
  } finally {
    button.disabled = false;
  }
}

function scaleCell(kind) {
  return (o) => {
    const input = h('input', { type: 'number', min: 0, step: 1, 'aria-label': 'replicas',
      placeholder: String(o.spec.replicas ?? 1) });
    const button = h('button', { type: 'button' }, 'Scale');
    button.addEventListener('click', () => {
      const current = state.objects[kind].get(keyOf(o)) || o;
      scale(kind, current, input, button);
    });
    input.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter') button.click();
    });
    return [h('td', { class: 'scale' }, input, ' ', button)];
  };
}

function rolloutCls(condition) {
  return { Complete: 'ok', Progressing: 'warn', Paused: 'warn' }[condition] || 'bad';
}

function renderDeployments() {
  syncTable('#deployments', sorted(state.objects.Deployment), keyOf, (d) => {
    const s = d.status || {};
    const hpa = hpaFor(d.metadata.namespace, 'Deployment', d.metadata.name);
    const desired = d.spec.replicas ?? 1;
    return [
      d.metadata.namespace,
      d.metadata.name,
      { text: desired, cls: 'num desired' },
      { text: s.replicas ?? 0, cls: 'num current' },
      { text: `${s.readyReplicas ?? 0}/${desired}`, cls: 'num ready' },
      { text: s.updatedReplicas ?? 0, cls: 'num' },
      { text: s.condition || 'Pending', cls: rolloutCls(s.condition || '') },
      s.revision || '-',
      hpa ? `${hpa.metadata.name} (${hpa.spec.minReplicas ?? 1}-${hpa.spec.maxReplicas})` : '-',
    ];
  }, scaleCell('Deployment'));
  // The placeholder shows the desired count the scale input starts from.
  for (const row of $('#deployments').tBodies[0].rows) {
    const d = state.objects.Deployment.get(row.dataset.key);
    const input = row.querySelector('input');
    if (d && input) input.placeholder = String(d.spec.replicas ?? 1);
  }
}

function renderStatefulSets() {
  syncTable('#statefulsets', sorted(state.objects.StatefulSet), keyOf, (s) => {
    const st = s.status || {};
    const desired = s.spec.replicas ?? 1;
    return [
      s.metadata.namespace,
      s.metadata.name,
      { text: desired, cls: 'num' },
      { text: st.replicas ?? 0, cls: 'num' },
      { text: `${st.readyReplicas ?? 0}/${desired}`, cls: 'num ready' },
      { text: st.updatedReplicas ?? 0, cls: 'num' },
    ];
  }, scaleCell('StatefulSet'));
}

function renderInstances() {
  const phaseCls = { Running: 'ok', Pending: 'warn', Failed: 'bad', CrashLoopBackOff: 'bad' };
  syncTable('#instance-table', sorted(state.objects.Instance), keyOf, (i) => {
    const s = i.status || {};
    const owner = (i.spec && i.spec.owner) || {};
    const u = s.usage || {};
    const phase = s.reason && s.phase !== 'Running' ? `${s.phase} (${s.reason})` : s.phase;
    return [
      i.metadata.namespace,
      i.metadata.name,
      owner.kind ? `${owner.kind.toLowerCase()}/${owner.name}` : '-',
      s.node || i.spec.nodeName || '-',
      s.ip || '-',
      { text: phase || 'Pending', cls: phaseCls[s.phase] || '' },
      { text: s.ready ? 'yes' : 'no', cls: s.ready ? 'ok' : 'warn' },
      { text: s.restarts || 0, cls: s.restarts ? 'num warn' : 'num' },
      { text: s.usage ? `${u.cpuMillis}m` : '-', cls: 'num' },
      { text: s.usage ? bytes(u.memoryBytes) : '-', cls: 'num' },
      s.startedAt ? age(s.startedAt) : '-',
    ];
  });
}

function renderVms() {
  syncTable('#vm-table', sorted(state.objects.VirtualMachine), keyOf, (v) => {
    const s = v.status || {};
    const spec = v.spec || {};
    const desired = spec.replicas ?? 1;
    return [
      v.metadata.namespace,
      v.metadata.name,
      { text: desired, cls: 'num desired' },
      { text: s.replicas ?? 0, cls: 'num' },
      { text: s.runningReplicas ?? 0, cls: 'num' },
      { text: `${s.readyReplicas ?? 0}/${desired}`, cls: 'num ready' },
      { text: (spec.cpu && spec.cpu.cores) || '-', cls: 'num' },
      (spec.memory && spec.memory.guest) || '-',
      spec.kernel || '-',
      spec.running === false ? 'stopped' : 'on',
    ];
  }, scaleCell('VirtualMachine'));
}

function renderEvents() {
  const events = [...state.objects.Event.values()]
    .sort((a, b) => (b.spec.lastTimestamp || '').localeCompare(a.spec.lastTimestamp || '') ||
      keyOf(a).localeCompare(keyOf(b)))
    .slice(0, MAX_EVENTS);
  const list = $('#event-list');
  list.replaceChildren(
    ...events.map((e) => {
      const s = e.spec;
      const obj = s.involvedObject || {};
      const cls = [s.type, state.freshEvents.has(keyOf(e)) ? 'fresh' : ''].join(' ');
      return h('li', { class: cls, 'data-reason': s.reason },
        h('span', { class: 'muted' }, age(s.lastTimestamp) + ' ago'),
        h('span', { class: 'type' }, s.type),
        h('span', { class: 'reason' }, s.reason + (s.count > 1 ? ` ×${s.count}` : '')),
        h('span', {}, `${(obj.kind || '').toLowerCase()}/${obj.name}`),
        h('span', { class: 'message' }, s.message));
    }),
  );
  if (events.length === 0) list.append(h('li', { class: 'muted' }, 'no events yet'));
}

// ---- charts (primitives in charts.js) --------------------------------------------------

function renderCharts() {
  const list = $('#chart-list');
  const groups = [];
  for (const d of sorted(state.objects.Deployment)) {
    const key = keyOf(d);
    const points = state.series.get(key) || [];
    if (points.length === 0) continue;
    const t0 = points[0].t;
    const t1 = Math.max(Date.now(), t0 + 10000);
    const markers = state.markers.get(key) || [];
    const hpa = hpaFor(d.metadata.namespace, 'Deployment', d.metadata.name);
    const target = cpuTarget(hpa);
    const last = points[points.length - 1];
    const withRequests = last.req > 0;
    const cpuPoints = points.map((p) => [p.t, withRequests ? (p.req > 0 ? (100 * p.cpu) / p.req : 0)
      : p.cpu]);
    const cpuLines = withRequests && target != null
      ? [{ y: target, cls: 'target', label: `HPA target ${target}% of requests` }] : [];
    const bounds = hpa ? [
      { y: hpa.spec.minReplicas ?? 1, cls: 'bound', label: 'HPA minReplicas' },
      { y: hpa.spec.maxReplicas, cls: 'bound', label: 'HPA maxReplicas' },
    ] : [];
    const group = h('div', { class: 'chart-group', 'data-key': key },
      h('h3', {}, `deployment/${d.metadata.name}`,
        h('span', { class: 'muted small' }, ` ${d.metadata.namespace} · ` +
          `${(d.status && d.status.readyReplicas) || 0}/${d.spec.replicas ?? 1} ready · ` +
          `${last.cpu}m cpu · ${bytes(last.mem)}` +
          (hpa ? ` · HPA ${hpa.metadata.name}` + (target != null ? ` target ${target}%` : '') : ''))),
      h('div', { class: 'chart-row' },
        h('div', { class: 'chart-cell', 'data-chart': 'replicas' },
          h('div', { class: 'chart-title' }, 'Replicas'),
          chart({ series: [
            { cls: 'desired', points: points.map((p) => [p.t, p.desired]), step: true },
            { cls: 'ready', points: points.map((p) => [p.t, p.ready]), step: true },
          ], lines: bounds, markers, t0, t1, minMax: 1, integer: true, fmt: (v) => v.toFixed(0) }),
          legend([['desired', 'desired'], ['ready', 'ready'], ['marker', 'scaling decision']])),
        h('div', { class: 'chart-cell', 'data-chart': 'cpu' },
          h('div', { class: 'chart-title' }, withRequests ? 'CPU, % of requests' : 'CPU, millicores'),
          chart({ series: [{ cls: 'cpu', points: cpuPoints }], lines: cpuLines, markers, t0, t1,
            minMax: 10, fmt: (v) => v.toFixed(0) + (withRequests ? '%' : 'm') }),
          legend([['cpu', 'cpu'], ...(cpuLines.length ? [['target', 'HPA target']] : [])])),
        h('div', { class: 'chart-cell', 'data-chart': 'memory' },
          h('div', { class: 'chart-title' }, 'Memory (working set)'),
          chart({ series: [{ cls: 'mem', points: points.map((p) => [p.t, p.mem / 1048576]) }],
            markers, t0, t1, minMax: 1, fmt: (v) => v.toFixed(0) + 'Mi' }),
          legend([['mem', 'memory']]))));
    groups.push(group);
  }
  list.replaceChildren(...groups);
  if (groups.length === 0) list.append(h('p', { class: 'muted' }, 'No deployments yet.'));
}

// ---- boot ------------------------------------------------------------------------------

document.addEventListener('DOMContentLoaded', () => {
  $('#login-form').addEventListener('submit', login);
  $('#logout').addEventListener('click', () => logout(''));
  // Ages and chart time axes move even when nothing changes.
  setInterval(scheduleRender, 5000);
  if (token()) start();
  else showLogin('');
});
