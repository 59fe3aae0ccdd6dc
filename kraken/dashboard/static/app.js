// kraken dashboard: one WebSocket, one page watched at a time, every snapshot redrawn.
// Plain modern JavaScript, no build step and no dependencies.

const PAGES = ["swarm", "nodes", "pipelines", "topics", "registry", "health"];
const TITLES = {
  swarm: "Swarm", nodes: "Nodes", pipelines: "Pipelines",
  topics: "Topics", registry: "Registry", health: "Health",
};
const SVG = "http://www.w3.org/2000/svg";

const state = {
  socket: null, role: null, page: null, data: null, at: null,
  nextId: 1, waiting: new Map(),
  node: null,        // {server, id} of the node whose detail is open
  nodeDetail: null, group: "", message: "",
  replies: {},       // outcome of the last action per button
};

// -- tiny DOM helpers ---------------------------------------------------------------------------
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function table(caption, headers, rows) {
  return h("table", {},
    h("caption", { class: "note" }, caption),
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))));
}

function bytes(n) {
  if (n === null || n === undefined) return "?";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function short(digest) {
  return digest.length > 19 ? digest.slice(0, 19) + "…" : digest;
}

function sparkline(points, label, width = 160, height = 36) {
  const svg = s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label });
  if (points.length > 1) {
    const max = Math.max(...points), min = Math.min(...points);
    const span = max - min || 1;
    const step = width / (points.length - 1);
    const coords = points.map((p, i) =>
      `${(i * step).toFixed(1)},${(height - 2 - ((p - min) / span) * (height - 4)).toFixed(1)}`);
    svg.append(s("polyline", { class: "spark", points: coords.join(" ") }));
  }
  return svg;
}

// Each server's part of a page: its own error or "not available" instead of the content.
function serverPart(row, draw) {
  const part = h("section", { class: "card", "aria-label": row.server });
  part.append(h("h3", {}, row.server));
  if (row.unavailable) part.append(h("p", { class: "note" }, row.unavailable));
  else if (row.error) part.append(h("p", { class: "error" }, row.error));
  else draw(part, row);
  return part;
}

function noServers(kind) {
  return h("p", { class: "note" }, `No ${kind} configured for this dashboard (the servers section of its config).`);
}

// -- pages ----------------------------------------------------------------------------------------
function drawSwarm(data) {
  const out = [h("h2", {}, "Swarm")];
  const bad = data.servers.filter((r) => r.error || r.unavailable);
  for (const r of bad) out.push(h("p", { class: r.error ? "error" : "note" }, `${r.server}: ${r.error || r.unavailable}`));
  if (!data.servers.length) out.push(noServers("agents or origins"));
  if (!data.blobs.length) out.push(h("p", { class: "note" }, "No blobs are being exchanged."));
  for (const blob of data.blobs) {
    const card = h("section", { class: "card blob", "data-digest": blob.digest, "aria-label": `blob ${blob.digest}` });
    card.append(h("h3", {}, h("code", { title: blob.digest }, short(blob.digest))));
    const share = blob.origin_share === null ? "–" : `${Math.round(blob.origin_share * 100)} %`;
    const rate = blob.throughput.length ? blob.throughput[blob.throughput.length - 1] : 0;
    card.append(h("div", { class: "facts" },
      h("div", {}, `size ${bytes(blob.size)}`), h("div", {}, `${blob.pieces} pieces`),
      h("div", { class: "origin-share" }, `from origins ${share}`),
      h("div", {}, `throughput ${bytes(rate)}/s`),
      h("div", {}, sparkline(blob.throughput, `throughput of ${short(blob.digest)} over time`))));
    card.append(table("Progress per host, and who sent each piece", ["host", "pieces", "progress", "pieces by sender"],
      blob.hosts.map((host) => [
        host.server, `${host.have} / ${blob.pieces}${host.complete ? " ✓" : ""}`,
        h("progress", {
          max: blob.pieces, value: host.have, "data-host": host.server,
          "aria-label": `${host.server} progress`,
        }),
        pieceStrip(host, blob.senders),
      ])));
    card.append(h("div", { class: "legend", "aria-label": "piece colours" },
      h("span", { class: "swatch had" }, "had it"), h("span", { class: "swatch missing" }, "missing"),
      blob.senders.map((name, i) => h("span", { class: `swatch sender-${i % PALETTE}` }, `from ${name}`))));
    card.append(swarmGraph(blob));
    card.append(table("Pieces received, by sender", ["from", "to", "pieces"],
      blob.links.map((l) => [l.from + (l.origin ? " (origin)" : ""), l.to, l.pieces])));
    out.push(card);
  }
  return out;
}

const PALETTE = 6;

// One cell per piece, coloured by the host that sent it (see the legend beside it).
function pieceStrip(host, senders) {
  const cells = host.piece_source;
  if (!cells) return "–";
  const width = 240, height = 14, w = width / cells.length;
  const counts = senders.map((name, i) => [cells.filter((c) => c === i).length, name])
    .filter(([n]) => n > 0).map(([n, name]) => `${n} from ${name}`);
  const svg = s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": `${host.server}: ${counts.join(", ") || "no pieces received"}` });
  cells.forEach((c, i) => {
    const cls = c === -1 ? "had" : c === -2 ? "missing" : `sender-${c % PALETTE}`;
    svg.append(s("rect", { class: `cell ${cls}`, x: (i * w).toFixed(2), y: 0, width: Math.max(w, 1).toFixed(2), height }));
  });
  return svg;
}

function swarmGraph(blob) {
  const names = new Set(blob.hosts.map((x) => x.server));
  for (const l of blob.links) { names.add(l.from); names.add(l.to); }
  const hosts = [...names].sort();
  const width = 560, height = 220, cx = width / 2, cy = height / 2;
  const pos = new Map(hosts.map((name, i) => {
    const a = (2 * Math.PI * i) / hosts.length - Math.PI / 2;
    return [name, [cx + Math.cos(a) * 200, cy + Math.sin(a) * 80]];
  }));
  const max = Math.max(1, ...blob.links.map((l) => l.pieces));
  const svg = s("svg", {
    width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": `who sent pieces to whom for ${short(blob.digest)}: ${blob.links.length} links (table below)`,
  });
  svg.append(s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto" },
    s("path", { d: "M0,0 L10,5 L0,10 z", fill: "#0b57d0" }))));
  for (const l of blob.links) {
    const [ax, ay] = pos.get(l.from), [bx, by] = pos.get(l.to);
    // From box edge to box edge (boxes are 140 by 28), so the arrow head shows.
    const dx = bx - ax, dy = by - ay;
    const cut = Math.min(dx ? 72 / Math.abs(dx) : Infinity, dy ? 16 / Math.abs(dy) : Infinity, 0.45);
    const [x1, y1, x2, y2] = [ax + dx * cut, ay + dy * cut, bx - dx * cut, by - dy * cut];
    svg.append(s("line", {
      class: "edge" + (l.origin ? " origin" : ""), x1, y1, x2, y2,
      "stroke-width": 1 + (4 * l.pieces) / max, "marker-end": "url(#arrow)",
    }));
  }
  for (const name of hosts) {
    const [x, y] = pos.get(name);
    const host = blob.hosts.find((hh) => hh.server === name);
    svg.append(s("rect", { class: "box" + (name.startsWith("origin") ? " origin" : ""), x: x - 70, y: y - 14, width: 140, height: 28, rx: 5 }));
    const label = host ? `${name.replace(/^(agent|origin) /, "")} ${Math.round(host.progress * 100)}%` : name;
    svg.append(s("text", { x, y: y + 4, "text-anchor": "middle" }, label));
  }
  return svg;
}

function drawNodes(data) {
  const out = [h("h2", {}, "Nodes")];
  if (!data.servers.length) out.push(noServers("state engines"));
  const legend = h("div", { class: "legend", "aria-label": "colour legend" },
    ["POWER_ON", "POWER_OFF", "POWER_CYCLE", "PHYS_HANG", "PHYS_UNKNOWN"].map((p) => h("span", { class: `phys-${p}` }, p)));
  out.push(legend);
  data.servers.forEach((row, index) => out.push(serverPart(row, (part) => {
    const groups = [...new Set(row.nodes.flatMap((n) => n.groups))].sort();
    if (groups.length) {
      const id = `group-${index}`;
      part.append(h("label", { for: id }, "Group "),
        h("select", {
          id, onchange: (e) => { state.group = e.target.value; redraw(); },
        }, h("option", { value: "" }, "all groups"), groups.map((g) => h("option", { value: g, selected: state.group === g }, g))));
    } else {
      part.append(h("p", { class: "note" }, "No node groups on this server."));
    }
    if (row.frozen) part.append(h("p", { class: "note" }, "The mutation engine is frozen."));
    const shown = row.nodes.filter((n) => !state.group || n.groups.includes(state.group));
    part.append(h("div", { class: "grid", role: "group", "aria-label": `nodes of ${row.server}` }, shown.map((n) => {
      const selected = state.node && state.node.id === n.id && state.node.server === index;
      return h("button", {
        type: "button", class: `tile phys-${n.phys} run-${n.run}`, "data-node-id": n.id,
        "data-phys": n.phys, "aria-pressed": selected ? "true" : "false",
        "aria-label": `${n.name}: ${n.phys}, ${n.run}`,
        onclick: () => openNode(index, n.id),
      }, h("span", { class: "name" }, n.name), `${n.phys.replace("POWER_", "")} · ${n.run}`);
    })));
    if (state.node && state.node.server === index) part.append(drawNodeDetail(index, row));
  })));
  return out;
}

function openNode(server, id) {
  state.node = { server, id };
  state.nodeDetail = null;
  state.message = "";
  fetchNodeDetail();
  redraw();
}

function fetchNodeDetail() {
  if (!state.node) return;
  const { server, id } = state.node;
  request({ type: "node", server, node: id }).then((detail) => {
    if (state.node && state.node.id === id) { state.nodeDetail = detail; redraw(); }
  }, (err) => { state.message = err; redraw(); });
}

function drawNodeDetail(index, row) {
  const node = row.nodes.find((n) => n.id === state.node.id);
  const box = h("section", { class: "card detail", "aria-label": "node detail" });
  if (!node) return box;
  box.append(h("h3", {}, `${node.name} `, h("code", {}, node.id)));
  const d = state.nodeDetail;
  if (d) {
    box.append(table("Cfg (wanted) against Dsc (discovered)", ["field", "Cfg", "Dsc", ""],
      d.diff.map((x) => [x.key, JSON.stringify(x.cfg), JSON.stringify(x.dsc),
        x.same ? "same" : h("strong", { class: "differs" }, "differs")])));
    box.append(drawPath(d.path));
  } else {
    box.append(h("p", { class: "note" }, "loading…"));
  }
  const operator = state.role === "operator";
  const actions = h("div", { class: "actions" });
  for (const phys of ["POWER_ON", "POWER_OFF"]) {
    const verb = phys === "POWER_ON" ? "Power on" : "Power off";
    actions.append(h("button", {
      type: "button", class: "danger", disabled: !operator, "data-action": phys,
      "aria-describedby": operator ? null : "power-why",
      onclick: () => confirmThen(`${verb} ${node.name} (${node.id})?`, () => {
        state.message = `${verb}: sent…`;
        request({ type: "power", server: index, node: node.id, phys }).then(
          () => { state.message = `${verb}: Cfg changed; the engine is on its way.`; redraw(); },
          (err) => { state.message = `${verb} failed: ${err}`; redraw(); });
      }),
    }, verb));
  }
  box.append(actions);
  if (!operator) box.append(h("p", { id: "power-why", class: "note" }, "Power actions need an operator login."));
  if (state.message) box.append(h("p", { role: "status", class: "message" }, state.message));
  return box;
}

function drawPath(path) {
  if (!path) return h("p", { class: "note" }, "No mutation path: the node is where its Cfg wants it.");
  const chain = path.chain || [];
  const width = Math.max(200, chain.length * 210 + 20), height = 70;
  const svg = s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": `mutation path: ${chain.map((c) => c.id).join(", ")}${path.cmplt ? " (complete)" : ""}` });
  svg.append(s("defs", {}, s("marker", { id: "path-arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto" },
    s("path", { d: "M0,0 L10,5 L0,10 z", fill: "#0b57d0" }))));
  chain.forEach((step, i) => {
    const x = 10 + i * 210;
    const cls = path.cmplt || i < path.cur ? "box done" : i === path.cur ? "box current" : "box";
    svg.append(s("rect", { class: cls, x, y: 10, width: 190, height: 44, rx: 6 }));
    svg.append(s("text", { x: x + 95, y: 28, "text-anchor": "middle" }, step.id));
    svg.append(s("text", { x: x + 95, y: 45, "text-anchor": "middle" }, `→ ${step.to ?? ""}`.slice(0, 30)));
    if (i) svg.append(s("line", { class: "edge", x1: x - 20, y1: 32, x2: x, y2: 32, "marker-end": "url(#path-arrow)" }));
  });
  return h("div", {}, h("h3", {}, "Mutation path"), svg);
}

function confirmThen(text, action) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  dialog.returnValue = "";
  dialog.addEventListener("close", () => { if (dialog.returnValue === "ok") action(); }, { once: true });
  dialog.showModal();
}

function drawPipelines(data) {
  const out = [h("h2", {}, "Pipelines")];
  if (!data.servers.length) out.push(noServers("pipeline servers"));
  data.servers.forEach((row, index) => out.push(serverPart(row, (part) => {
    if (!row.pipelines.length) part.append(h("p", { class: "note" }, "No pipelines defined."));
    for (const p of row.pipelines) {
      const card = h("section", { class: "pipeline", "data-pipeline": p.name, "aria-label": `pipeline ${p.name}` });
      const st = p.stats;
      card.append(h("h3", {}, `${p.name} `, h("span", { class: p.status === ":ready" ? "status-ok" : "status-bad" }, p.status)));
      if (st) {
        card.append(h("div", { class: "facts" },
          h("div", { class: "injected" }, `injected ${st.injected}`), h("div", {}, `delivered ${st.delivered}`),
          h("div", {}, `errors ${st.errors}`), h("div", {}, `timeouts ${st.timeouts}`), h("div", {}, `in flight ${st.in_flight}`)));
      }
      card.append(pipelineDiagram(p));
      card.append(table("Components: events counted and mean time per call (span)", ["component", "type", "count", "calls", "errors", "mean µs", "queued"],
        p.components.map((c) => {
          const cs = st && st.components[c.name] || {};
          return [c.name, c.type, c.count, cs.calls ?? "–", cs.errors ?? "–", cs.avg_time_micro ?? "–", cs.queued ?? "–"];
        })));
      card.append(h("h3", {}, "Dead letters"));
      card.append(drawDeadLetters(p, index));
      part.append(card);
    }
  })));
  return out;
}

function drawDeadLetters(p, index) {
  const dead = p.dead_letters;
  if (!Array.isArray(dead)) return h("p", { class: "note" }, `Dead letters: ${dead}`);
  const box = h("div", {});
  if (!dead.length) box.append(h("p", { class: "note" }, "No dead letters."));
  else {
    box.append(table(`Dead letters of ${p.name} (oldest first)`, ["id", "version", "component", "error", "attempts", "when"],
      dead.map((l) => [l.id, l.version ?? "–", l.component, l.error ? `${l.error.kind}: ${l.error.message}` : "", l.attempts,
        l.at ? new Date(l.at * 1000).toLocaleString() : ""])));
  }
  const key = `replay:${p.name}`;
  box.append(h("button", {
    type: "button", disabled: state.role !== "operator" || !dead.length, "data-action": key,
    onclick: () => confirmThen(`Replay the ${dead.length} dead letters of ${p.name} shown here and any older ones?`, () => {
      state.replies[key] = "replaying…";
      request({ type: "replay", server: index, pipeline: p.name }).then(
        (r) => {
          const count = (x) => (Array.isArray(x) ? x.length : x ?? "?");
          state.replies[key] = `replayed ${count(r.ok && r.ok.replayed)}, failed again ${count(r.ok && r.ok.failed)}`;
          redraw();
        },
        (e) => { state.replies[key] = `replay failed: ${e}`; redraw(); });
    }),
  }, "Replay dead letters"));
  if (state.replies[key]) box.append(h("p", { role: "status" }, state.replies[key]));
  return box;
}

// Components in columns by their distance from the head (the one nobody points at); branches
// and error routes are dashed, the main line solid.
function pipelineLayout(comps) {
  const edges = [];
  for (const c of comps) {
    if (c.next) edges.push([c.name, c.next, "edge"]);
    for (const b of Object.values(c.branches || {})) if (b) edges.push([c.name, b, "branch"]);
    if (c.to) edges.push([c.name, c.to, "branch"]);
    if (c.on_error && c.on_error.kind === "component" && c.on_error.target !== c.name) edges.push([c.name, c.on_error.target, "error-route"]);
  }
  const names = new Set(comps.map((c) => c.name));
  const pointed = new Set(edges.map((e) => e[1]));
  const depth = new Map(comps.filter((c) => !pointed.has(c.name)).map((c) => [c.name, 0]));
  for (let round = 0; round < comps.length; round++) {  // longest path, bounded for cycles
    for (const [from, to] of edges) {
      if (depth.has(from) && names.has(to) && (depth.get(to) ?? -1) < depth.get(from) + 1) depth.set(to, depth.get(from) + 1);
    }
  }
  const rows = new Map();
  const pos = new Map();
  for (const c of comps) {
    const col = depth.get(c.name) ?? 0;
    const row = rows.get(col) ?? 0;
    rows.set(col, row + 1);
    pos.set(c.name, [col, row]);
  }
  return { edges, pos, cols: Math.max(1, ...[...pos.values()].map((p) => p[0] + 1)), rows: Math.max(1, ...rows.values()) };
}

function errorTarget(route) {
  return route.kind === "pipeline" ? `pipeline ${route.target}` : "dead letters";
}

// The diagram in words (its accessible name): every edge, error routes said as such.
function diagramWords(comps, edges) {
  const words = edges.map(([from, to, cls]) => `${from} ${cls === "error-route" ? "errors to" : "to"} ${to}`);
  for (const c of comps) {
    if (c.on_error && c.on_error.kind !== "component") words.push(`${c.name} errors to ${errorTarget(c.on_error)}`);
  }
  return words.join(", ") || comps.map((c) => c.name).join(", ");
}

function pipelineDiagram(p) {
  const comps = p.components;
  const { edges, pos, cols, rows } = pipelineLayout(comps);
  const W = 150, H = 80, bw = 120, bh = 46;
  const width = cols * W + 20, height = rows * H + 20;
  const svg = s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": `diagram of ${p.name}: ${diagramWords(comps, edges)}` });
  const marker = `arr-${p.name.replace(/[^A-Za-z0-9_-]/g, "_")}`;
  svg.append(s("defs", {}, s("marker", { id: marker, viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto" },
    s("path", { d: "M0,0 L10,5 L0,10 z", fill: "#0b57d0" }))));
  const at = (name) => { const [c, r] = pos.get(name); return [10 + c * W, 10 + r * H]; };
  for (const [from, to, cls] of edges) {
    if (!pos.has(to)) continue;
    const [x1, y1] = at(from), [x2, y2] = at(to);
    if (cls === "error-route") {  // bowed below the boxes, so it never hides a main-line edge
      const bottom = Math.max(y1, y2) + bh, mid = (x1 + bw + x2) / 2;
      svg.append(s("path", { class: cls, d: `M${x1 + bw},${y1 + bh - 4} Q${mid},${bottom + 24} ${x2},${y2 + bh - 4}`, "marker-end": `url(#${marker})` }));
    } else {
      svg.append(s("line", { class: cls, x1: x1 + bw, y1: y1 + bh / 2, x2, y2: y2 + bh / 2, "marker-end": `url(#${marker})` }));
    }
  }
  const stats = p.stats ? p.stats.components : {};
  for (const c of comps) {
    const [x, y] = at(c.name);
    svg.append(s("rect", { class: "box", x, y, width: bw, height: bh, rx: 6 }));
    svg.append(s("text", { x: x + bw / 2, y: y + 18, "text-anchor": "middle" }, `${c.name}`.slice(0, 18)));
    const cs = stats[c.name];
    svg.append(s("text", { x: x + bw / 2, y: y + 36, "text-anchor": "middle" }, cs ? `${cs.calls} calls` : c.type));
    if (c.on_error && c.on_error.kind !== "component") {
      const note = s("text", { class: "error-note", x: x + bw / 2, y: y + bh + 24, "text-anchor": "middle" }, `errors → ${errorTarget(c.on_error)}`.slice(0, 24));
      // A pipeline's default route (not the component's own) says so in a tooltip.
      svg.append(c.on_error.default ? s("g", { class: "default-route" }, s("title", {}, "the pipeline's default on_error"), note) : note);
    }
  }
  return svg;
}

function drawTopics(data) {
  const out = [h("h2", {}, "Topics")];
  if (!data.servers.length) out.push(noServers("pub/sub servers"));
  for (const row of data.servers) out.push(serverPart(row, (part) => {
    const st = row.status;
    part.append(h("div", { class: "facts" },
      h("div", {}, `connections ${st.connections}`), h("div", {}, `topics ${st.topics}`),
      h("div", {}, `subscriptions ${st.subscriptions}`), h("div", { class: "messages-in" }, `messages in ${st.messages_in}`),
      h("div", {}, `messages out ${st.messages_out}`), h("div", {}, `dropped ${row.dropped}`)));
    part.append(table("Topics and their subscribers", ["topic", "subscribers"],
      row.topics.map((t) => [t.topic, t.subscribers])));
    part.append(table("Connection queues", ["id", "name", "kind", "subscriptions", "depth", "bytes", "dropped"],
      row.queues.map((q) => [q.id, q.name, q.kind, q.subscriptions, q.length, bytes(q.bytes), q.dropped])));
    part.append(h("h3", {}, "Proxy tree"));
    part.append(drawTreePlace(row.tree));
  }));
  return out;
}

function drawTreePlace(tree) {
  if (typeof tree === "string") return h("p", { class: "note" }, `Proxy tree: ${tree}`);
  const box = h("div", { class: "tree" }, h("p", {}, `role: ${tree.role}`));
  const up = tree.upstream;
  if (up) {
    box.append(h("p", {}, `upstream ${up.peer}: ${up.connected ? "connected" : "not connected"}, lag ${(up.lag ?? 0).toFixed(2)} s, `
      + `records in ${up.records_in}, waiting ${up.waiting_records}, dropped ${up.dropped_records}`));
  }
  if (tree.cluster) {
    box.append(table(`Cluster members (this node: ${tree.cluster.self})`, ["node", "healthy", "shards owned"],
      tree.cluster.members.map((m) => [m.node, m.healthy ? "yes" : "no", m.shards])));
  }
  return box;
}

function drawRegistry(data) {
  const out = [h("h2", {}, "Registry")];
  if (!data.servers.length) out.push(noServers("build-indexes"));
  for (const row of data.servers) out.push(serverPart(row, (part) => {
    if (!row.repositories.length) part.append(h("p", { class: "note" }, "No tags yet."));
    for (const repo of row.repositories) {
      part.append(h("h3", {}, `${repo.name} `, h("span", { class: "note" }, bytes(repo.size))));
      part.append(table(`Tags of ${repo.name}`, ["tag", "digest", "size", "platforms"],
        repo.tags.map((t) => [t.tag, h("code", { title: t.digest }, short(t.digest)),
          t.error ? h("span", { class: "error" }, t.error) : bytes(t.size), t.platforms ?? "–"])));
    }
    if (row.more) part.append(h("p", { class: "note" }, "More tags than shown."));
  }));
  return out;
}

function drawHealth(data) {
  const out = [h("h2", {}, "Health")];
  out.push(table("Every server", ["server", "health", "url"], data.servers.map((r) => [
    r.server,
    h("span", { class: r.health === "ok" ? "status-ok" : "status-bad", "data-health": r.server },
      r.error ? `unreachable: ${r.error}` : r.health + (r.failing && r.failing.length ? ` (${r.failing.join(", ")})` : "")),
    r.url,
  ])));
  for (const r of data.servers) {
    if (!r.series || !r.series.length) continue;
    const card = h("section", { class: "card", "aria-label": `metrics of ${r.server}` }, h("h3", {}, r.server));
    card.append(h("div", { class: "sparks" }, r.series.map((x) => {
      const last = x.points.length ? x.points[x.points.length - 1] : 0;
      const label = `${x.name}${x.kind === "rate" ? " per second" : ""}`;
      return h("div", { class: "spark-box" }, h("div", {}, label), sparkline(x.points, label), h("div", {}, `now ${last}`));
    })));
    out.push(card);
  }
  return out;
}

const DRAW = { swarm: drawSwarm, nodes: drawNodes, pipelines: drawPipelines, topics: drawTopics, registry: drawRegistry, health: drawHealth };

// -- plumbing --------------------------------------------------------------------------------------
function redraw() {
  const page = document.getElementById("page");
  if (!state.data || !state.page) return;
  const focused = document.activeElement;
  const focusKey = focused && (focused.dataset.nodeId || focused.id || focused.dataset.action);
  page.replaceChildren(...DRAW[state.page](state.data));
  page.setAttribute("aria-busy", "false");
  document.getElementById("updated").textContent = `updated ${new Date(state.at * 1000).toLocaleTimeString()}`;
  if (focusKey) {  // keep the keyboard user's place across redraws
    const again = page.querySelector(`[data-node-id="${CSS.escape(focusKey)}"], #${CSS.escape(focusKey)}, [data-action="${CSS.escape(focusKey)}"]`);
    if (again) again.focus();
  }
}

function send(msg) {
  if (state.socket && state.socket.readyState === WebSocket.OPEN) state.socket.send(JSON.stringify(msg));
}

function request(msg) {
  const id = state.nextId++;
  return new Promise((resolve, reject) => {
    state.waiting.set(id, { resolve, reject });
    send({ ...msg, id });
  });
}

function showPage() {
  const wanted = location.hash.slice(1);
  const page = PAGES.includes(wanted) ? wanted : "swarm";
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.page === page) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  document.title = `${TITLES[page]} · kraken dashboard`;
  if (page !== state.page) {
    state.page = page;
    state.data = null;
    document.getElementById("page").replaceChildren(h("h2", {}, TITLES[page]), h("p", { class: "note" }, "loading…"));
    document.getElementById("page").setAttribute("aria-busy", "true");
    if (state.role) send({ type: "watch", page });
  }
}

function showLogin(message) {
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = message || "";
  document.getElementById("session").textContent = "not logged in";
  document.getElementById("token").focus();
}

function connect(config, token) {
  const url = `${config.ws_scheme}://${location.hostname}:${config.ws_port}/`;
  const socket = new WebSocket(url);
  state.socket = socket;
  socket.addEventListener("open", () => send({ type: "hello", token: token || null }));
  socket.addEventListener("message", (event) => {
    const msg = JSON.parse(event.data);
    if (msg.type === "welcome") {
      state.role = msg.role;
      document.getElementById("login").hidden = true;
      document.getElementById("logout").hidden = !token;
      document.getElementById("login-open").hidden = msg.role === "operator";
      document.getElementById("session").textContent = msg.role === "operator" ? "operator (may act)" : "viewer (read-only)";
      document.body.dataset.role = msg.role;
      send({ type: "watch", page: state.page });
    } else if (msg.type === "denied") {
      state.socket = null;  // no reconnecting: the next login opens a new socket
      socket.close();
      sessionStorage.removeItem("kraken-token");
      showLogin(token ? msg.message : "");
    } else if (msg.type === "snapshot" && msg.page === state.page) {
      state.data = msg.data;
      state.at = msg.at;
      if (state.page === "nodes" && state.node) fetchNodeDetail();
      redraw();
    } else if (msg.type === "reply") {
      const waiter = state.waiting.get(msg.id);
      state.waiting.delete(msg.id);
      if (waiter) (msg.ok ? waiter.resolve(msg.data) : waiter.reject(msg.error));
    } else if (msg.type === "error") {
      document.getElementById("updated").textContent = `server: ${msg.message}`;
    }
  });
  socket.addEventListener("close", () => {
    if (state.socket !== socket) return;
    state.role = null;
    document.getElementById("session").textContent = "disconnected; reconnecting…";
    setTimeout(() => connect(config, sessionStorage.getItem("kraken-token")), 2000);
  });
}

async function main() {
  window.addEventListener("hashchange", showPage);
  showPage();
  const config = await (await fetch("config.json")).json();
  document.getElementById("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const token = document.getElementById("token").value;
    sessionStorage.setItem("kraken-token", token);
    if (state.socket) state.socket.close();
    state.socket = null;
    connect(config, token);
  });
  document.getElementById("login-open").addEventListener("click", () => showLogin());
  document.getElementById("logout").addEventListener("click", () => {
    sessionStorage.removeItem("kraken-token");
    location.reload();
  });
  // Always try: a browser certificate may log in without a token; a refusal shows the form.
  connect(config, sessionStorage.getItem("kraken-token"));
}

main();
