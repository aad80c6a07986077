// Benchmark of the web view at scale, in a real headless Chromium: 500
// workloads in 10 namespaces, 50 external destinations and 5,000 edges.
// Serves the page's real assets (controller/web) from the browser itself,
// feeds the same entry points the live stream uses (applySnapshot,
// applyDelta) and prints how long the first render and a live update take,
// painted. Numbers, not assertions: run it by hand or through
// `cargo nextest run --workspace --run-ignored only -E 'test(web_bench)'`.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { chromium } = require(process.env.PLAYWRIGHT_CORE || 'playwright-core');

const WEB = path.join(__dirname, '..', '..', 'controller', 'web');
const ORIGIN = 'http://vigil.bench';
const files = {
  '/': ['text/html', 'index.html'],
  '/assets/app.js': ['text/javascript', 'app.js'],
  '/assets/app.css': ['text/css', 'app.css'],
  '/assets/cytoscape.min.js': ['text/javascript', 'vendor/cytoscape.min.js'],
};

function synthetic(workloads, edges, externals) {
  const t = '2026-01-01T00:00:00Z';
  const nodes = [{ id: 'internet', kind: 'internet', namespace: null, name: 'internet', in_baseline: false, sidecars: 0 }];
  for (let i = 0; i < workloads; i++) {
    const ns = 'team-' + (i % 10);
    nodes.push({ id: `workload:${ns}/svc-${i}`, kind: 'workload', namespace: ns, name: `svc-${i}`, in_baseline: true, sidecars: 1 });
  }
  for (let i = 0; i < externals; i++) {
    nodes.push({ id: `external:api${i}.example.com:443`, kind: 'external', namespace: null, name: `api${i}.example.com:443`, in_baseline: false, sidecars: 0 });
  }
  const ws = nodes.filter((n) => n.kind === 'workload');
  const out = [];
  const seen = new Set();
  let k = 0;
  while (out.length < edges) {
    const s = ws[k % ws.length];
    const r = (k * 7919) % (ws.length + externals);
    const t2 = r < ws.length ? ws[r] : nodes[1 + ws.length + (r - ws.length)];
    k++;
    if (t2.id === s.id || seen.has(s.id + '>' + t2.id)) continue;
    seen.add(s.id + '>' + t2.id);
    const violation = out.length % 97 === 0;
    out.push({ source: s.id, target: t2.id, requests: 1 + (k % 500), in_baseline: !violation, violation, denied: 0, errors: 0,
      bytes_in: 10, bytes_out: 20, mean_latency_ms: 3.5, endpoints: { 'GET /v1/items/{id}': 3 }, protocols: ['http1'], first_seen: t, last_seen: t });
  }
  return { graph: { nodes, edges: out }, alerts: [], modes: { default: { mode: 'learning' }, namespaces: {} },
    counts: { workloads, nodes: nodes.length, edges: out.length } };
}

async function main() {
  const root = typeof process.getuid === 'function' && process.getuid() === 0;
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: (root ? ['--no-sandbox'] : []).concat(['--disable-dev-shm-usage']),
  });
  const page = await browser.newPage({ viewport: { width: 1400, height: 860 } });
  await page.route(ORIGIN + '/**', (route) => {
    const url = new URL(route.request().url());
    if (url.pathname === '/ui/session') return route.fulfill({ contentType: 'application/json', body: '{"role":"admin","csrf":"x"}' });
    if (url.pathname === '/api/v1/events') return route.fulfill({ contentType: 'text/event-stream', body: 'retry: 86400000\n\n' });
    const f = files[url.pathname];
    if (!f) return route.fulfill({ status: 404, body: '' });
    return route.fulfill({ contentType: f[0], body: fs.readFileSync(path.join(WEB, f[1])) });
  });
  await page.goto(ORIGIN + '/');
  await page.waitForFunction(() => window.vigil && window.vigil.cy());
  const snapshot = synthetic(500, 5000, 50);
  const result = await page.evaluate(async ({ snapshot }) => {
    const painted = () => new Promise((ok) => requestAnimationFrame(() => requestAnimationFrame(ok)));
    const v = window.vigil;
    let t = performance.now();
    v.applySnapshot(snapshot);
    await painted();
    const first = performance.now() - t;
    const drawn = { nodes: v.cy().nodes().length, edges: v.cy().edges().length };
    const round = (o) => Object.fromEntries(Object.entries(o).map(([k, x]) => [k, Math.round(x)]));
    const firstTiming = round(v.state.timing);
    // A live update: 20 edges count up, one new workload calls out (a violation).
    const changed = snapshot.graph.edges.slice(0, 20).map((e) => ({ ...e, requests: e.requests + 1 }));
    const node = { id: 'workload:team-3/miner', kind: 'workload', namespace: 'team-3', name: 'miner', in_baseline: false, sidecars: 1 };
    const edge = { ...snapshot.graph.edges[0], source: node.id, target: 'external:api1.example.com:443', violation: true, in_baseline: false };
    const updates = [];
    for (let i = 0; i < 5; i++) {
      t = performance.now();
      v.applyDelta({ nodes: { upsert: i === 0 ? [node] : [], remove: [] }, edges: { upsert: i === 0 ? changed.concat([edge]) : changed, remove: [] },
        alerts: { upsert: [], remove: [] } });
      await painted();
      updates.push(performance.now() - t);
    }
    t = performance.now();
    document.getElementById('search').value = 'svc-42';
    document.getElementById('search').dispatchEvent(new Event('input'));
    await painted();
    const filter = performance.now() - t;
    document.getElementById('search').value = '';
    document.getElementById('search').dispatchEvent(new Event('input'));
    t = performance.now();
    v.toggleCollapse('team-0');
    await painted();
    const collapse = performance.now() - t;
    const cy = v.cy();
    return { drawn, after_collapse: { nodes: cy.nodes().length, edges: cy.edges().length }, first_render_ms: Math.round(first), first_render_parts_ms: firstTiming,
      live_update_ms: updates.map(Math.round), filter_ms: Math.round(filter), collapse_ms: Math.round(collapse) };
  }, { snapshot });
  await page.screenshot({ path: process.env.BENCH_SCREENSHOT || path.join(__dirname, '..', '..', 'target', 'web-artifacts', 'bench-500.png') });
  console.log(JSON.stringify(result));
  await browser.close();
}

main().catch((e) => { console.error(e); process.exit(1); });
