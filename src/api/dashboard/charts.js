// omnicloud dashboard: the chart primitive, hand-written SVG (no library). Loaded before
// app.js, which draws per-deployment charts with it; uses app.js's h() at call time.
'use strict';

const W = 420;
const H = 170;
const PAD = { l: 44, r: 10, t: 10, b: 22 };

function clock(t) {
  return new Date(t).toTimeString().slice(0, 8);
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// series: [{cls, points: [[t, v]], step}], lines: [{y, cls, label}], markers: [{t, reason}]
// `integer`: whole-number ticks (replica counts).
function chart({ series, lines = [], markers = [], t0, t1, fmt = (v) => String(v), minMax = 1,
  integer = false }) {
  const all = series.flatMap((s) => s.points.map((p) => p[1])).concat(lines.map((l) => l.y));
  const top = Math.max(minMax, ...all) * 1.1;
  const yMax = integer ? Math.max(4, Math.ceil(top / 4) * 4) : niceMax(top);
  const span = Math.max(1, t1 - t0);
  const x = (t) => PAD.l + ((t - t0) / span) * (W - PAD.l - PAD.r);
  const y = (v) => H - PAD.b - (v / yMax) * (H - PAD.t - PAD.b);
  const svg = h('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img' });
  for (let i = 0; i <= 4; i++) {
    const v = (yMax * i) / 4;
    svg.append(h('line', { class: 'axis', x1: PAD.l, x2: W - PAD.r, y1: y(v), y2: y(v) }));
    svg.append(h('text', { class: 'tick', x: PAD.l - 4, y: y(v) + 3, 'text-anchor': 'end' },
      fmt(v)));
  }
  svg.append(h('text', { class: 'tick', x: PAD.l, y: H - 6 }, clock(t0)));
  svg.append(h('text', { class: 'tick', x: W - PAD.r, y: H - 6, 'text-anchor': 'end' },
    clock(t1)));
  for (const l of lines) {
    svg.append(h('line', { class: l.cls, x1: PAD.l, x2: W - PAD.r, y1: y(l.y), y2: y(l.y) },
      h('title', {}, l.label)));
  }
  for (const s of series) {
    const pts = [];
    s.points.forEach(([t, v], i) => {
      if (s.step && i > 0) pts.push(`${x(t).toFixed(1)},${y(s.points[i - 1][1]).toFixed(1)}`);
      pts.push(`${x(t).toFixed(1)},${y(v).toFixed(1)}`);
    });
    if (pts.length === 1) pts.push(pts[0]);
    svg.append(h('polyline', { class: 'series ' + s.cls, points: pts.join(' ') }));
  }
  let labelledAt = -Infinity; // labels closer than this would overlap: the line only
  for (const m of markers) {
    if (m.t < t0 || m.t > t1) continue;
    const mx = x(m.t);
    const label = mx - labelledAt > 70 && mx < W - 60;
    if (label) labelledAt = mx;
    const g = h('g', { class: 'marker-group', 'data-reason': m.reason },
      h('title', {}, `${clock(m.t)} ${m.reason}: ${m.message}`),
      h('line', { class: 'marker', x1: mx, x2: mx, y1: PAD.t, y2: H - PAD.b }),
      label ? h('text', { class: 'marker-label', x: mx + 3, y: PAD.t + 9 }, m.reason) : null);
    svg.append(g);
  }
  return svg;
}

function legend(items) {
  return h('div', { class: 'legend' },
    items.map(([cls, label]) => h('span', {}, h('span', { class: 'sw ' + cls }), label)));
}
