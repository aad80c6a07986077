// Vigil web view: the live application security graph.
//
// Data comes from the controller's live stream (GET /api/v1/events): one
// `snapshot` event, then `delta` events with only what changed. The graph is
// drawn by Cytoscape.js (vendored). Everything shown is built with
// textContent, never parsed as HTML: workload names, hosts and paths come
// from the hostile side of the mesh.
'use strict';
(function () {
  const SEVERITIES = ['critical', 'high', 'medium', 'low'];
  const state = {
    nodes: new Map(), // id -> node view
    edges: new Map(), // "source->target" -> edge view
    alerts: new Map(), // key -> alert
    modes: { default: { mode: 'learning' }, namespaces: {} },
    counts: {},
    quarantined: {}, // "ns/name" -> {since, actor, reason}
    role: 'viewer',
    csrf: null,
    collapsed: new Set(), // namespaces shown as one node
    filter: '',
    selected: null, // cytoscape element id shown in the details panel
    alertSel: null, // key of the highlighted alert
    positions: new Map(), // last positions of nodes taken off the graph
    laidOut: false,
    renders: 0,
    lastRenderMs: 0,
  };
  let cy = null;
  const $ = (id) => document.getElementById(id);

  // ---- small DOM helpers (text only) ----------------------------------
  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = String(v);
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }
  const tag = (cls, text) => el('span', { class: 'tag ' + cls, text: text || cls });
  function kv(pairs) {
    const dl = el('dl', { class: 'kv' });
    for (const [k, v] of pairs) {
      if (v === undefined || v === null || v === '') continue;
      dl.append(el('dt', { text: k }), el('dd', {}, v));
    }
    return dl;
  }
  function table(headers, rows) {
    if (!rows.length) return el('p', { class: 'muted', text: 'none' });
    return el('table', { class: 'list' },
      el('thead', {}, el('tr', {}, headers.map((h) => el('th', { text: h })))),
      el('tbody', {}, rows.map((r) => el('tr', {}, r.map((c) =>
        typeof c === 'number' ? el('td', { class: 'num', text: fmt(c) }) : el('td', {}, c))))));
  }
  const fmt = (n) => (Number.isInteger(n) ? n.toLocaleString('en') : n.toFixed(1));
  const modeLabel = (m) => (!m || m.mode === 'learning' ? 'learning' : m.alert_only ? 'alert-only' : 'enforcement');
  const edgeKey = (e) => e.source + '->' + e.target;
  const alertKey = (a) => a.kind + '|' + a.namespace + '/' + a.workload + '|' + a.destination;

  // ---- model -------------------------------------------------------------
  function applySnapshot(s) {
    state.nodes = new Map(s.graph.nodes.map((n) => [n.id, n]));
    state.edges = new Map(s.graph.edges.map((e) => [edgeKey(e), e]));
    state.alerts = new Map(s.alerts.map((a) => [alertKey(a), a]));
    state.modes = s.modes;
    state.counts = s.counts;
    state.quarantined = s.quarantined || {};
    render({ alerts: true, modes: true });
  }

  function applyDelta(d) {
    for (const id of d.nodes.remove) state.nodes.delete(id);
    for (const n of d.nodes.upsert) state.nodes.set(n.id, n);
    for (const [s, t] of d.edges.remove) state.edges.delete(s + '->' + t);
    for (const e of d.edges.upsert) state.edges.set(edgeKey(e), e);
    for (const k of d.alerts.remove) state.alerts.delete(k);
    for (const a of d.alerts.upsert) state.alerts.set(alertKey(a), a);
    if (d.modes) state.modes = d.modes;
    if (d.counts) state.counts = d.counts;
    if (d.quarantined) state.quarantined = d.quarantined;
    render({ alerts: d.alerts.upsert.length + d.alerts.remove.length > 0, modes: !!d.modes });
  }

  // Where an alert points: [offending node id, destination node id or null].
  function alertPath(a) {
    const src = 'workload:' + a.namespace + '/' + a.workload;
    const d = a.destination || '';
    let dst = null;
    // A CPU spike names a pod, not a node.
    if (a.kind === 'resource_spike') return [src, null];
    if (d === 'internet') dst = 'internet';
    else if (d && d.includes('/') && !d.includes(':')) dst = 'workload:' + d;
    else if (d) dst = 'external:' + d;
    // A call from the internet: the workload is the callee.
    return [src, dst];
  }

  function threatNodes() {
    const out = new Set();
    for (const n of state.nodes.values()) if (n.threat) out.add(n.id);
    for (const a of state.alerts.values()) {
      if (a.kind === 'threat' || a.kind === 'mining_protocol') {
        const [, dst] = alertPath(a);
        if (dst && dst !== 'internet') out.add(dst);
      }
    }
    return out;
  }

  // The elements the graph should show now: namespaces as compound nodes
  // (or one node when collapsed), edges merged through collapsed ones.
  // Past this many edges, edges are drawn straight and only violations keep
  // their labels, so a frame of 5,000 edges stays quick to paint.
  const BIG = 1000;

  function buildElements() {
    const want = new Map();
    const big = state.edges.size > BIG;
    const threats = threatNodes();
    const touched = new Set();
    for (const e of state.edges.values()) if (e.in_baseline) { touched.add(e.source); touched.add(e.target); }
    const alerted = new Set();
    for (const a of state.alerts.values()) alerted.add('workload:' + a.namespace + '/' + a.workload);
    const members = new Map();
    const viewId = (id) => {
      const n = state.nodes.get(id);
      return n && n.kind === 'workload' && state.collapsed.has(n.namespace) ? 'ns:' + n.namespace : id;
    };
    for (const n of state.nodes.values()) {
      if (n.kind === 'workload') {
        members.set(n.namespace, (members.get(n.namespace) || 0) + 1);
        if (state.collapsed.has(n.namespace)) continue;
      }
      const isNew = n.kind === 'workload' ? !n.in_baseline : n.kind === 'external' && !touched.has(n.id);
      const quarantined = n.kind === 'workload' && state.quarantined[n.namespace + '/' + n.name];
      const classes = [n.kind, isNew && 'new', threats.has(n.id) && 'threat', alerted.has(n.id) && 'alerted', quarantined && 'quarantined']
        .filter(Boolean).join(' ');
      want.set(n.id, {
        group: 'nodes', classes,
        data: { id: n.id, label: n.name, kind: n.kind },
        parent: n.kind === 'workload' ? 'ns:' + n.namespace : undefined,
      });
    }
    for (const [ns, count] of members) {
      const collapsed = state.collapsed.has(ns);
      const mode = modeLabel(state.modes.namespaces[ns] || state.modes.default);
      want.set('ns:' + ns, {
        group: 'nodes',
        classes: 'namespace' + (collapsed ? ' collapsed' : ''),
        data: { id: 'ns:' + ns, label: collapsed ? `${ns} (${count}) · ${mode}` : `${ns} · ${mode}`, kind: 'namespace', ns },
      });
    }
    for (const e of state.edges.values()) {
      const s = viewId(e.source), t = viewId(e.target);
      const merged = s !== e.source || t !== e.target;
      if (merged && s === t) continue; // inside a collapsed namespace
      const id = (merged ? 'agg:' : 'edge:') + s + '->' + t;
      const prev = want.get(id);
      const requests = (prev ? prev.data.requests : 0) + e.requests;
      const violation = (prev && prev.data.violation) || e.violation;
      const isNew = (prev && prev.data.isNew) || !e.in_baseline;
      const denied = (prev ? prev.data.denied : 0) + e.denied;
      const protocols = new Set([...(prev ? prev.data.protocols : []), ...(e.protocols || [])]);
      want.set(id, {
        group: 'edges',
        classes: (violation ? 'violation' : isNew ? 'new' : 'baseline') + (big ? ' big' : ''),
        data: {
          id, source: s, target: t, requests, violation, isNew, denied, protocols: [...protocols].sort(),
          width: Math.min(12, 1.5 + Math.log10(1 + requests) * 2),
          label: big && !violation ? '' : (denied ? 'blocked ' : '') + [...protocols].sort().join('/') + ' ×' + requests,
        },
      });
    }
    return want;
  }

  // ---- graph ----------------------------------------------------------------
  const STYLE = [
    { selector: 'node', style: { label: 'data(label)', 'font-size': 10, 'text-valign': 'bottom', 'text-margin-y': 3, width: 24, height: 24, 'background-color': '#2d6cdf', color: '#1d2430', 'text-wrap': 'ellipsis', 'text-max-width': 140, 'min-zoomed-font-size': 7 } },
    { selector: 'node.workload', style: { shape: 'round-rectangle' } },
    { selector: 'node.external', style: { shape: 'diamond', 'background-color': '#8a96a8' } },
    { selector: 'node.internet', style: { shape: 'ellipse', 'background-color': '#1d2430', width: 32, height: 32 } },
    { selector: 'node.namespace', style: { shape: 'round-rectangle', 'background-color': '#e9f0f9', 'background-opacity': 0.7, 'border-color': '#b8c7da', 'border-width': 1, 'text-valign': 'top', 'text-margin-y': -3, 'font-size': 11, 'font-weight': 'bold', padding: 16, 'text-max-width': 400 } },
    { selector: 'node.namespace.collapsed', style: { width: 56, height: 40, 'background-color': '#b8c7da', 'text-valign': 'bottom', 'text-margin-y': 3 } },
    { selector: 'node.new', style: { 'border-width': 3, 'border-color': '#e39b1b', 'border-style': 'dashed' } },
    { selector: 'node.alerted', style: { 'border-width': 3, 'border-color': '#e0242b', 'border-style': 'double' } },
    { selector: 'node.threat', style: { shape: 'octagon', 'background-color': '#7a0d12', 'border-color': '#e0242b', 'border-width': 3, 'border-style': 'solid', color: '#7a0d12', 'font-weight': 'bold' } },
    { selector: 'edge', style: { width: 'data(width)', 'line-color': '#8aa0b8', 'target-arrow-color': '#8aa0b8', 'target-arrow-shape': 'triangle', 'curve-style': 'bezier', 'arrow-scale': 0.9, opacity: 0.85, label: 'data(label)', 'font-size': 8, 'text-rotation': 'autorotate', color: '#56606e', 'min-zoomed-font-size': 8, 'text-background-color': '#ffffff', 'text-background-opacity': 0.8, 'text-background-padding': 1 } },
    { selector: 'edge.new', style: { 'line-color': '#e39b1b', 'target-arrow-color': '#e39b1b', 'line-style': 'dashed' } },
    { selector: 'edge.violation', style: { 'line-color': '#e0242b', 'target-arrow-color': '#e0242b', 'line-style': 'solid', opacity: 1, color: '#e0242b', 'z-index': 10 } },
    // Haystack edges are Cytoscape's fastest to draw; direction shows as a
    // mid-edge arrow.
    { selector: 'edge.big', style: { 'curve-style': 'haystack', 'haystack-radius': 0, opacity: 1, 'target-arrow-shape': 'none', 'mid-target-arrow-shape': 'triangle', 'mid-target-arrow-color': '#8aa0b8', 'arrow-scale': 0.6 } },
    { selector: 'edge.big.violation', style: { 'mid-target-arrow-color': '#e0242b' } },
    { selector: 'edge.big.new', style: { 'mid-target-arrow-color': '#e39b1b' } },
    { selector: 'node.quarantined', style: { 'background-color': '#3b3f46', 'border-color': '#111418', 'border-width': 4, 'border-style': 'solid' } },
    { selector: 'node.match', style: { 'border-width': 4, 'border-color': '#2d6cdf', 'border-style': 'solid' } },
    { selector: ':selected', style: { 'overlay-color': '#2d6cdf', 'overlay-opacity': 0.18, 'overlay-padding': 5 } },
    { selector: '.dim', style: { opacity: 0.12 } },
    { selector: '.hl', style: { 'overlay-color': '#e0242b', 'overlay-opacity': 0.22, 'overlay-padding': 6 } },
    { selector: '.hidden', style: { display: 'none' } },
  ];

  // Past this many nodes the force-directed layout takes seconds: the graph
  // is laid out in layers instead (the internet, then each namespace's
  // workloads in a block, then the outside world).
  const LAYERED = 250;

  function layeredPositions() {
    const pos = {};
    const gap = cy.nodes().length > LAYERED ? 44 : 130;
    const leaves = cy.nodes().filter((n) => !n.isParent());
    const byNs = new Map();
    const outside = [];
    leaves.forEach((n) => {
      const parent = n.parent();
      if (parent.nonempty()) {
        const ns = parent.id();
        if (!byNs.has(ns)) byNs.set(ns, []);
        byNs.get(ns).push(n.id());
      } else if (n.data('kind') === 'workload' || n.data('kind') === 'namespace') {
        byNs.set(n.id(), [n.id()]);
      } else if (n.id() !== 'internet') {
        outside.push(n.id());
      }
    });
    const blocks = [...byNs.keys()].sort();
    const widest = Math.max(1, ...[...byNs.values()].map((ids) => Math.ceil(Math.sqrt(ids.length))));
    const blockSize = widest * gap + 80;
    const perRow = Math.max(1, Math.ceil(Math.sqrt(blocks.length)));
    blocks.forEach((ns, b) => {
      const ids = byNs.get(ns).sort();
      const cols = Math.ceil(Math.sqrt(ids.length));
      const ox = 2 * gap + (b % perRow) * blockSize, oy = Math.floor(b / perRow) * blockSize;
      ids.forEach((id, i) => { pos[id] = { x: ox + (i % cols) * gap, y: oy + Math.floor(i / cols) * gap }; });
    });
    const rows = Math.max(1, Math.ceil(blocks.length / perRow));
    const height = rows * blockSize;
    pos.internet = { x: 0, y: height / 2 };
    const perCol = Math.max(10, Math.floor(height / 30));
    outside.sort().forEach((id, i) => {
      pos[id] = { x: 2 * gap + perRow * blockSize + gap + Math.floor(i / perCol) * 160, y: (i % perCol) * Math.max(30, gap / 1.5) };
    });
    return pos;
  }

  function fitTo(points, padding) {
    if (!points.length) return;
    const xs = points.map((p) => p.x), ys = points.map((p) => p.y);
    const [x1, x2, y1, y2] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    const zoom = Math.min(4, (cy.width() - 2 * padding) / Math.max(1, x2 - x1 + 80), (cy.height() - 2 * padding) / Math.max(1, y2 - y1 + 80));
    cy.viewport({ zoom, pan: { x: cy.width() / 2 - zoom * (x1 + x2) / 2, y: cy.height() / 2 - zoom * (y1 + y2) / 2 } });
  }

  function runLayout(fit) {
    const n = cy.nodes().length;
    if (n > LAYERED) {
      const pos = layeredPositions();
      cy.nodes().filter((node) => !node.isParent() && pos[node.id()]).positions((node) => pos[node.id()]);
      // Fitted from the positions: cy.fit() would measure every edge first.
      if (fit) fitTo(Object.values(pos), 30);
    } else {
      // Force-directed, started from the layers (internet left, namespaces
      // in the middle, the outside world right), so it settles the same way
      // each time instead of from random places.
      const pos = layeredPositions();
      cy.nodes().filter((node) => !node.isParent() && pos[node.id()]).positions((node) => pos[node.id()]);
      cy.layout({ name: 'cose', animate: false, fit, padding: 40, randomize: false, nodeRepulsion: () => 9000,
        idealEdgeLength: () => 90, nestingFactor: 1.1, componentSpacing: 80, gravity: 1 }).run();
    }
    // A small graph fitted to the window would be drawn huge.
    if (fit && cy.zoom() > 1.4) { cy.zoom(1.4); cy.center(); }
    state.laidOut = true;
  }

  function guessPosition(want, id) {
    const saved = state.positions.get(id);
    if (saved) return saved;
    const jitter = () => (Math.random() - 0.5) * 80;
    for (const w of want.values()) {
      if (w.group !== 'edges') continue;
      const other = w.data.source === id ? w.data.target : w.data.target === id ? w.data.source : null;
      const o = other && cy.getElementById(other);
      if (o && o.nonempty() && !o.isParent()) return { x: o.position('x') + 70 + jitter(), y: o.position('y') + jitter() };
    }
    const parent = want.get(id) && want.get(id).parent && cy.getElementById(want.get(id).parent);
    if (parent && parent.nonempty() && parent.isParent()) {
      const bb = parent.boundingBox();
      return { x: bb.x2 + 30, y: (bb.y1 + bb.y2) / 2 + jitter() };
    }
    const ext = cy.extent();
    return { x: (ext.x1 + ext.x2) / 2 + jitter() * 3, y: (ext.y1 + ext.y2) / 2 + jitter() * 3 };
  }

  function changed(ele, data) {
    for (const [k, v] of Object.entries(data)) {
      const old = ele.data(k);
      if (Array.isArray(v) ? JSON.stringify(old) !== JSON.stringify(v) : old !== v) return true;
    }
    return false;
  }

  // Brings the graph to `want` without touching what did not change, so the
  // user's zoom, pan and selection stay.
  function reconcile(want) {
    let added = 0;
    const fresh = []; // added at once: far quicker than one by one
    cy.batch(() => {
      const gone = cy.elements().filter((ele) => !want.has(ele.id()));
      gone.nodes().forEach((n) => { if (!n.isParent()) state.positions.set(n.id(), { ...n.position() }); });
      cy.remove(gone);
      const nodes = [...want.values()].filter((w) => w.group === 'nodes');
      nodes.sort((a, b) => (a.parent ? 1 : 0) - (b.parent ? 1 : 0)); // parents first
      for (const w of nodes) {
        const ele = cy.getElementById(w.data.id);
        if (ele.nonempty()) {
          if (changed(ele, w.data)) ele.data(w.data);
          if (ele.classes().join(' ') !== w.classes) ele.classes(w.classes);
          const parent = ele.parent().nonempty() ? ele.parent().id() : undefined;
          if (parent !== w.parent) ele.move({ parent: w.parent === undefined ? null : w.parent });
        } else {
          const data = w.parent ? { ...w.data, parent: w.parent } : w.data;
          if (!w.parent) cy.add({ group: 'nodes', data, classes: w.classes, position: guessPosition(want, w.data.id) });
          else fresh.push({ group: 'nodes', data, classes: w.classes, position: guessPosition(want, w.data.id) });
          added += 1;
        }
      }
      if (fresh.length) cy.add(fresh.splice(0));
      for (const w of want.values()) {
        if (w.group !== 'edges') continue;
        const ele = cy.getElementById(w.data.id);
        if (ele.nonempty()) {
          // Only what changed: touching an element's data restyles it.
          if (changed(ele, w.data)) ele.data(w.data);
          if (ele.classes().join(' ') !== w.classes) ele.classes(w.classes);
        } else {
          fresh.push({ group: 'edges', data: w.data, classes: w.classes });
          added += 1;
        }
      }
      if (fresh.length) cy.add(fresh);
    });
    return added;
  }

  function applyFilter() {
    const q = state.filter.trim().toLowerCase();
    if (!q && !state.filtered) return;
    state.filtered = !!q;
    cy.batch(() => {
      cy.elements('.hidden, .match').removeClass('hidden match');
      if (!q) return;
      const match = cy.nodes().filter((n) => !n.isParent() && (String(n.data('label')).toLowerCase().includes(q) || n.id().toLowerCase().includes(q)));
      match.addClass('match');
      const keep = match.union(match.neighborhood());
      const withParents = keep.union(keep.nodes().parents());
      cy.nodes().difference(withParents).addClass('hidden');
      cy.edges().difference(keep.edges()).addClass('hidden');
    });
  }

  function applyAlertHighlight() {
    cy.elements('.dim, .hl').removeClass('dim hl');
    const a = state.alertSel && state.alerts.get(state.alertSel);
    if (!a) return null;
    const ids = alertPath(a).filter(Boolean).map(viewNodeId);
    let path = cy.collection();
    for (const id of ids) path = path.union(cy.getElementById(id));
    if (ids.length === 2) path = path.union(path.edgesWith(path));
    if (path.empty()) return null;
    cy.elements().difference(path.union(path.parents())).addClass('dim');
    path.addClass('hl');
    return path;
  }
  function viewNodeId(id) {
    const n = state.nodes.get(id);
    return n && n.kind === 'workload' && state.collapsed.has(n.namespace) ? 'ns:' + n.namespace : id;
  }

  function render(what) {
    const t0 = performance.now();
    if (!cy) return;
    const before = cy.nodes().length;
    const want = buildElements();
    const t1 = performance.now();
    const added = reconcile(want);
    const t2 = performance.now();
    if (!state.laidOut || (added > 0 && before < 3)) {
      if (cy.nodes().length > 0) runLayout(true);
    }
    const t3 = performance.now();
    applyFilter();
    applyAlertHighlight();
    // Where the time went (read by the benchmark).
    state.timing = { build: t1 - t0, reconcile: t2 - t1, layout: t3 - t2, rest: performance.now() - t3 };
    renderCounts();
    if (what.alerts) renderAlerts();
    if (what.modes) renderModes();
    renderDetails();
    state.renders += 1;
    state.lastRenderMs = performance.now() - t0;
  }

  // ---- panels ---------------------------------------------------------------
  function renderCounts() {
    const c = state.counts || {};
    $('counts').textContent = `${c.workloads || 0} workloads · ${c.nodes || 0} nodes · ${c.edges || 0} edges`;
    $('alert-count').textContent = String(state.alerts.size);
  }

  function showTab(name) {
    for (const b of document.querySelectorAll('.tabs button')) b.classList.toggle('active', b.dataset.tab === name);
    for (const p of document.querySelectorAll('.panel')) p.classList.toggle('active', p.id === 'panel-' + name);
  }

  function link(id, text) {
    return el('a', { class: 'link', onclick: () => select(id), text: text || (state.nodes.get(id) || {}).name || id });
  }
  function edgeTag(e) {
    return e.violation ? tag('violation') : e.in_baseline ? tag('baseline') : tag('new');
  }
  function alertsOf(id) {
    const n = state.nodes.get(id);
    return [...state.alerts.values()].filter((a) => {
      const [src, dst] = alertPath(a);
      return src === id || dst === id || (n && n.kind === 'namespace' && a.namespace === n.name);
    });
  }
  function sumEndpoints(edges) {
    const m = new Map();
    for (const e of edges) for (const [ep, c] of Object.entries(e.endpoints || {})) m.set(ep, (m.get(ep) || 0) + c);
    return [...m.entries()].sort((a, b) => b[1] - a[1]);
  }

  function renderDetails() {
    const panel = $('panel-details');
    const id = state.selected;
    const ele = id && cy.getElementById(id);
    if (!ele || ele.empty()) {
      state.selected = null;
      panel.replaceChildren(el('p', { class: 'muted', text: 'Click a service, destination or edge.' }));
      return;
    }
    const parts = ele.isEdge() ? edgeDetails(ele) : ele.data('kind') === 'namespace' ? namespaceDetails(ele) : nodeDetails(id);
    // replaceChildren would write an absent part as the text "null".
    panel.replaceChildren(...parts.filter((p) => p !== null && p !== undefined && p !== false));
  }

  function nodeDetails(id) {
    const n = state.nodes.get(id);
    if (!n) return [el('p', { class: 'muted', text: 'gone' })];
    const edges = [...state.edges.values()];
    const inbound = edges.filter((e) => e.target === id);
    const outbound = edges.filter((e) => e.source === id);
    const egress = outbound.filter((e) => e.target.startsWith('external:'));
    const alerts = alertsOf(id);
    const protocols = new Set(inbound.concat(outbound).flatMap((e) => e.protocols || []));
    const tenant = n.tenant || (alerts.find((a) => a.tenant) || {}).tenant;
    const mode = n.namespace ? modeLabel(state.modes.namespaces[n.namespace] || state.modes.default) : null;
    const threat = threatNodes().has(id);
    const q = n.kind === 'workload' ? state.quarantined[n.namespace + '/' + n.name] : null;
    const out = [
      el('h2', { text: n.kind === 'workload' ? n.namespace + '/' + n.name : n.name }),
      el('div', {}, tag(n.kind), n.kind === 'workload' ? (n.in_baseline ? tag('baseline') : tag('new')) : null, threat ? tag('threat') : null,
        q ? tag('quarantined') : null),
      q ? el('p', { class: 'error', text: `Quarantined since ${q.since} by ${q.actor}${q.reason ? ': ' + q.reason : ''}. Its sidecars refuse all traffic but health checks.` }) : null,
      n.kind === 'workload' && state.role === 'admin'
        ? el('p', {}, el('button', { id: 'quarantine', type: 'button', onclick: (ev) => setQuarantine(n, !q, ev.currentTarget),
          text: q ? 'Release from quarantine' : 'Quarantine (refuse all its traffic)' }))
        : null,
      kv([
        ['namespace', n.namespace], ['tenant', tenant], ['profile', n.profile],
        ['mode', mode], ['sidecars', n.kind === 'workload' ? String(n.sidecars) : null],
        ['protocols', [...protocols].sort().join(', ')],
      ]),
      el('h3', { text: 'Inbound callers' }),
      table(['caller', 'requests', 'errors', 'ms', ''], inbound.map((e) => [link(e.source), e.requests, e.errors, e.mean_latency_ms, edgeTag(e)])),
      el('h3', { text: 'Outbound calls' }),
      table(['to', 'requests', 'denied', 'errors', 'ms', ''], outbound.map((e) => [link(e.target), e.requests, e.denied, e.errors, e.mean_latency_ms, edgeTag(e)])),
      el('h3', { text: 'API endpoints served' }),
      table(['endpoint', 'requests'], sumEndpoints(inbound).map(([ep, c]) => [ep, c])),
      el('h3', { text: 'Endpoints called' }),
      table(['endpoint', 'requests'], sumEndpoints(outbound).map(([ep, c]) => [ep, c])),
      el('h3', { text: 'Egress domains' }),
      table(['destination', 'requests', 'protocols', ''], egress.map((e) => [link(e.target), e.requests, (e.protocols || []).join(', '), edgeTag(e)])),
      el('p', { class: 'muted', text: 'Status codes: the controller keeps failed requests (5xx or no answer) as "errors" and refusals as "denied"; latency is the mean per edge.' }),
      el('h3', { text: `Alerts (${alerts.length})` }),
      alertList(alerts.slice(0, 50)),
    ];
    return out;
  }

  function namespaceDetails(ele) {
    const ns = ele.data('ns');
    const collapsed = state.collapsed.has(ns);
    const workloads = [...state.nodes.values()].filter((n) => n.kind === 'workload' && n.namespace === ns);
    return [
      el('h2', { text: ns }),
      el('div', {}, tag('namespace'), tag('', modeLabel(state.modes.namespaces[ns] || state.modes.default))),
      el('p', {}, el('button', { id: 'collapse', type: 'button', onclick: () => toggleCollapse(ns), text: collapsed ? 'Expand namespace' : 'Collapse namespace' })),
      el('h3', { text: `Workloads (${workloads.length})` }),
      table(['workload', ''], workloads.map((n) => [collapsed ? n.name : link(n.id, n.name), n.in_baseline ? tag('baseline') : tag('new')])),
    ];
  }

  function endpointInBaseline(e, ep) {
    if (Array.isArray(e.baseline_endpoints)) return e.baseline_endpoints.includes(ep);
    if (!e.in_baseline) return false;
    const [srcWl] = [e.source.replace(/^workload:/, '')];
    return ![...state.alerts.values()].some((a) => a.kind === 'new_endpoint' && a.namespace + '/' + a.workload === srcWl &&
      a.evidence && (a.evidence.endpoints || []).includes(ep));
  }

  function edgeDetails(ele) {
    const id = ele.id();
    if (id.startsWith('agg:')) {
      const parts = [...state.edges.values()].filter((e) => 'agg:' + viewNodeId(e.source) + '->' + viewNodeId(e.target) === id);
      return [
        el('h2', { text: ele.data('source') + ' → ' + ele.data('target') }),
        el('p', { class: 'muted', text: 'Edges through a collapsed namespace:' }),
        table(['from', 'to', 'requests', ''], parts.map((e) => [e.source, e.target, e.requests, edgeTag(e)])),
      ];
    }
    const e = state.edges.get(ele.data('source') + '->' + ele.data('target'));
    if (!e) return [el('p', { class: 'muted', text: 'gone' })];
    return [
      el('h2', {}, link(e.source), ' → ', link(e.target)),
      el('div', {}, edgeTag(e), ...(e.protocols || []).map((p) => tag('', p))),
      kv([
        ['requests', fmt(e.requests)], ['denied', fmt(e.denied)], ['errors', fmt(e.errors)],
        ['mean latency', e.mean_latency_ms.toFixed(1) + ' ms'], ['bytes', `${fmt(e.bytes_in)} in · ${fmt(e.bytes_out)} out`],
        ['first seen', e.first_seen], ['last seen', e.last_seen],
        ['statuses', Object.entries(e.statuses || {}).map(([code, n]) => `${code === '0' ? 'none' : code} ×${fmt(n)}`).join(', ')],
      ]),
      el('h3', { text: 'Endpoints' }),
      table(['endpoint', 'requests', 'baseline'], Object.entries(e.endpoints || {}).sort((a, b) => b[1] - a[1])
        .map(([ep, c]) => [ep, c, endpointInBaseline(e, ep) ? tag('baseline', 'in baseline') : tag('new', 'not in baseline')])),
    ];
  }

  async function setQuarantine(n, on, button) {
    button.disabled = true;
    const path = `/api/v1/workloads/${encodeURIComponent(n.namespace)}/${encodeURIComponent(n.name)}/${on ? 'quarantine' : 'release'}`;
    const res = await fetch(path, { method: 'POST', credentials: 'same-origin', headers: { 'x-csrf-token': state.csrf || '' } });
    if (res.status === 401) return location.assign('/login');
    if (!res.ok) {
      const j = await res.json().catch(() => ({}));
      button.replaceWith(el('span', { class: 'error', text: `Not changed: ${j.error || res.status}` }));
    }
    // The change itself arrives on the live stream.
  }

  // ---- alerts -----------------------------------------------------------------
  const severityOf = (a) => a.severity || (a.kind === 'mining_protocol' ? 'critical' : 'medium');
  function explain(a) {
    if (a.explanation) return a.explanation;
    const who = a.namespace + '/' + a.workload;
    const to = a.destination || 'the mesh';
    const what = { unknown_egress: 'reached a destination outside the baseline', new_edge: 'made a call outside the baseline',
      new_deployment: 'is a workload never seen while learning', mining_protocol: 'spoke a mining protocol (Stratum)',
      spoofed_source: 'was impersonated from another address', name_mismatch: 'named a destination its connection did not go to',
      limit_reached: 'reached the cap on tracked destinations', new_endpoint: 'called an endpoint never seen while learning',
      resource_spike: 'used far more CPU than its profile' }[a.kind] || a.kind;
    return `${who} ${what}${a.destination ? ': ' + to : ''}.`;
  }
  function sortedAlerts(list) {
    return list.sort((a, b) => (b.last_seen > a.last_seen ? 1 : b.last_seen < a.last_seen ? -1 : alertKey(a) < alertKey(b) ? -1 : 1));
  }
  // Kinds the controller can accept into the baseline (what they saw becomes
  // normal); mining, threats and lies are never accepted.
  const ACCEPTABLE = new Set(['unknown_egress', 'new_edge', 'new_exposure', 'new_endpoint', 'new_deployment']);

  async function acceptAlert(a, button) {
    button.disabled = true;
    const res = await fetch('/api/v1/alerts/' + encodeURIComponent(a.id) + '/accept', {
      method: 'POST', credentials: 'same-origin', headers: { 'x-csrf-token': state.csrf || '' },
    });
    if (res.status === 401) return location.assign('/login');
    const j = await res.json().catch(() => ({}));
    button.replaceWith(el('span', { class: res.ok ? 'tag baseline accepted' : 'error', text: res.ok ? 'accepted into the baseline' : `Not accepted: ${j.error || res.status}` }));
  }

  // A CPU spike's evidence: the pod's CPU against its profile's baseline,
  // and the workload's egress beside it.
  function resourceRows(r) {
    if (!r) return [];
    const egress = (r.egress || []).map((e) => `${e.destination} (${fmt(e.bytes_sent || 0)} B sent${e.violation ? ', outside the baseline' : ''})`);
    return [
      ['cpu', `${r.pod}: ${fmt(r.cpu_millicores)}m now, ${fmt(r.sustained_millicores)}m over ${r.samples} samples`],
      ['cpu baseline', `${fmt(r.baseline_millicores)}m for ${r.profile} (spike over ${fmt(r.threshold_millicores)}m)`],
      ['egress', egress.length ? egress.join(', ') : `none in the last ${Math.round(r.egress_window_secs / 60)} min`],
    ];
  }

  function alertItem(a) {
    const sev = severityOf(a);
    const key = alertKey(a);
    const ev = a.evidence || {};
    const evidence = kv([
      ['protocols', (ev.protocols || []).join(', ')], ['endpoints', (ev.endpoints || []).join(', ')],
      ['listed', ev.listed], ['bytes', ev.bytes_in || ev.bytes_out ? `${fmt(ev.bytes_in || 0)} out · ${fmt(ev.bytes_out || 0)} in` : null],
      ['claimed', a.claimed], ['tenant', a.tenant],
      ...resourceRows(ev.resource),
    ]);
    return el('li', { class: 'sev-' + sev + (state.alertSel === key ? ' selected' : ''), 'data-key': key, onclick: () => selectAlert(key) },
      el('div', { class: 'head' }, tag(sev), el('b', { text: a.kind }), el('span', { class: 'muted', text: `×${fmt(a.count)}` }), el('span', { class: 'muted', text: a.action })),
      el('div', { class: 'what', text: `${a.namespace}/${a.workload}${a.destination ? ' → ' + a.destination : ''}` }),
      el('div', { class: 'expl', text: explain(a) }),
      el('div', { class: 'meta', text: `${fmt(a.denied || 0)} of ${fmt(a.count)} denied · first ${a.first_seen} · last ${a.last_seen}` }),
      evidence,
      state.role === 'admin' && a.id && ACCEPTABLE.has(a.kind)
        ? el('button', { type: 'button', class: 'accept', 'data-id': a.id, text: 'Accept into baseline',
          onclick: (ev) => { ev.stopPropagation(); acceptAlert(a, ev.currentTarget); } })
        : null);
  }
  function alertList(list) {
    if (!list.length) return el('p', { class: 'muted', text: 'none' });
    return el('ol', { class: 'alerts' }, sortedAlerts(list).map(alertItem));
  }

  function fillSelect(sel, values) {
    const cur = sel.value;
    const first = sel.options[0];
    sel.replaceChildren(first, ...[...values].sort().map((v) => el('option', { value: v, text: v })));
    sel.value = values.has(cur) ? cur : '';
  }
  function renderAlerts() {
    const all = [...state.alerts.values()];
    fillSelect($('f-namespace'), new Set(all.map((a) => a.namespace)));
    fillSelect($('f-kind'), new Set(all.map((a) => a.kind)));
    fillSelect($('f-severity'), new Set(all.map(severityOf)));
    fillSelect($('f-tenant'), new Set(all.map((a) => a.tenant).filter(Boolean)));
    const f = { namespace: $('f-namespace').value, kind: $('f-kind').value, severity: $('f-severity').value, tenant: $('f-tenant').value };
    const shown = all.filter((a) => (!f.namespace || a.namespace === f.namespace) && (!f.kind || a.kind === f.kind) &&
      (!f.severity || severityOf(a) === f.severity) && (!f.tenant || a.tenant === f.tenant));
    const list = sortedAlerts(shown).slice(0, 300);
    $('alerts').replaceChildren(...(list.length ? list.map(alertItem) : [el('li', { class: 'muted', text: 'No alerts.' })]));
  }

  function selectAlert(key) {
    state.alertSel = state.alertSel === key ? null : key;
    showTab('alerts');
    renderAlerts();
    const path = applyAlertHighlight();
    if (path) cy.animate({ center: { eles: path } }, { duration: 250 });
  }

  // ---- modes --------------------------------------------------------------------
  function renderModes() {
    const admin = state.role === 'admin';
    $('modes-note').textContent = admin
      ? 'Learning adds what is seen to the baseline; enforcement blocks what is outside it; alert-only raises alerts and blocks nothing. "All namespaces" sets every namespace and the default for new ones.'
      : 'Read-only: signed in with the viewer token.';
    const rows = [['', 'All namespaces (default)', state.modes.default]];
    for (const [ns, m] of Object.entries(state.modes.namespaces).sort()) rows.push([ns, ns, m]);
    const stability = state.modes.stability || {};
    $('modes').replaceChildren(...rows.map(([ns, label, m]) => {
      const learned = ns && stability[ns] ? stability[ns].summary : ns ? 'nothing learned yet' : '';
      const cur = modeLabel(m);
      const seg = el('span', { class: 'seg' }, ['learning', 'enforcement', 'alert-only'].map((name) =>
        el('button', { type: 'button', class: cur === name ? 'on' : '', disabled: !admin, 'data-ns': ns, 'data-mode': name,
          onclick: () => setMode(ns, name), text: name })));
      const dry = ns && cur !== 'enforcement'
        ? el('div', { class: 'muted dry-run', 'data-ns': ns, text: 'dry run: …' })
        : null;
      if (dry) dryRun(ns, dry);
      return el('tr', { 'data-ns': ns }, el('td', {}, el('div', { text: label }),
        learned ? el('div', { class: 'muted stability', text: 'learning: ' + learned }) : null, dry), el('td', {}, seg));
    }));
  }

  // What enforcement would have done with the last hour of this namespace's
  // traffic, judged against the current baseline (the controller's dry run).
  async function dryRun(ns, into) {
    const res = await fetch('/api/v1/baseline/simulate?since=1h&namespace=' + encodeURIComponent(ns),
      { credentials: 'same-origin' }).catch(() => null);
    if (!res || !res.ok) { into.textContent = 'dry run: unavailable'; return; }
    const r = await res.json();
    const blocked = r.results.filter((x) => x.action === 'blocked');
    const flagged = r.results.filter((x) => x.action !== 'blocked');
    const sum = (xs) => xs.reduce((n, x) => n + x.count, 0);
    into.textContent = r.results.length === 0
      ? `dry run (last hour, ${r.observations} observations): enforcement would block nothing`
      : `dry run (last hour): enforcement would block ${sum(blocked)} requests to ${blocked.length} destinations`
        + (flagged.length ? ` and flag ${sum(flagged)}` : '')
        + ': ' + r.results.slice(0, 3).map((x) => `${x.workload} → ${x.destination} (${x.kind})`).join(', ');
  }

  async function setMode(ns, name) {
    const body = name === 'learning' ? { mode: 'learning' } : { mode: 'enforcement', alert_only: name === 'alert-only' };
    if (ns) body.namespace = ns;
    const err = $('mode-error');
    err.hidden = true;
    const res = await fetch('/api/v1/mode', {
      method: 'PUT', credentials: 'same-origin',
      headers: { 'content-type': 'application/json', 'x-csrf-token': state.csrf || '' },
      body: JSON.stringify(body),
    });
    if (res.status === 401) return location.assign('/login');
    if (!res.ok) {
      const j = await res.json().catch(() => ({}));
      err.textContent = `Not changed: ${j.error || res.status}`;
      err.hidden = false;
      return;
    }
    const modes = await res.json();
    state.modes = { ...state.modes, default: modes.default, namespaces: { ...state.modes.namespaces, ...modes.namespaces } };
    render({ modes: true });
  }

  // ---- selection, collapse, controls ----------------------------------------
  function select(id) {
    state.selected = id;
    cy.elements().unselect();
    const ele = cy.getElementById(viewNodeId(id));
    if (ele.nonempty()) { ele.select(); state.selected = ele.id(); }
    showTab('details');
    renderDetails();
  }

  function toggleCollapse(ns) {
    if (state.collapsed.has(ns)) state.collapsed.delete(ns); else state.collapsed.add(ns);
    state.selected = 'ns:' + ns;
    render({});
    const ele = cy.getElementById('ns:' + ns);
    if (ele.nonempty()) ele.select();
  }

  function connect() {
    const live = $('live');
    const es = new EventSource('/api/v1/events');
    es.addEventListener('snapshot', (ev) => applySnapshot(JSON.parse(ev.data)));
    es.addEventListener('delta', (ev) => applyDelta(JSON.parse(ev.data)));
    es.addEventListener('open', () => { live.textContent = 'live'; live.classList.remove('off'); });
    es.addEventListener('error', async () => {
      live.textContent = 'reconnecting…';
      live.classList.add('off');
      const res = await fetch('/ui/session', { credentials: 'same-origin' }).catch(() => null);
      if (res && res.status === 401) { es.close(); location.assign('/login'); }
    });
  }

  function makeGraph() {
    cy = cytoscape({
      container: $('graph'), style: STYLE, wheelSensitivity: 0.3, minZoom: 0.05, maxZoom: 4,
      boxSelectionEnabled: false, selectionType: 'single',
    });
    cy.on('tap', 'node, edge', (ev) => {
      state.selected = ev.target.id();
      showTab('details');
      renderDetails();
    });
    cy.on('tap', (ev) => {
      if (ev.target === cy) {
        state.selected = null;
        if (state.alertSel) { state.alertSel = null; applyAlertHighlight(); renderAlerts(); }
        renderDetails();
      }
    });
    cy.on('dbltap', 'node.namespace', (ev) => toggleCollapse(ev.target.data('ns')));
  }

  async function main() {
    const res = await fetch('/ui/session', { credentials: 'same-origin' });
    if (res.status === 401) return location.assign('/login');
    const s = await res.json();
    state.role = s.role;
    state.csrf = s.csrf;
    $('role').textContent = s.role;
    document.body.classList.add('role-' + s.role);
    makeGraph();
    for (const b of document.querySelectorAll('.tabs button')) b.addEventListener('click', () => showTab(b.dataset.tab));
    for (const id of ['f-namespace', 'f-kind', 'f-severity', 'f-tenant']) $(id).addEventListener('change', renderAlerts);
    $('search').addEventListener('input', (ev) => { state.filter = ev.target.value; applyFilter(); });
    $('fit').addEventListener('click', () => cy.fit(cy.elements(':visible'), 30));
    $('relayout').addEventListener('click', () => runLayout(true));
    $('logout').addEventListener('click', async () => {
      await fetch('/logout', { method: 'POST', credentials: 'same-origin', headers: { 'x-csrf-token': state.csrf || '' } });
      location.assign('/login');
    });
    renderModes();
    connect();
  }

  // For tests and the benchmark: the same entry points the live stream uses.
  window.vigil = { applySnapshot, applyDelta, cy: () => cy, state, select, selectAlert, toggleCollapse };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', main); else main();
})();
