// Loom's dashboard: plain JavaScript over loomd's JSON API. The session
// cookie (HttpOnly) carries the operator token; writes send the session's
// CSRF token. Every text from the fabric goes into the page as text, never
// as markup.
'use strict';

const PHASES = ['Enrolled', 'Discovered', 'Registered', 'Imaging', 'Imaged', 'Booting', 'Ready',
  'Failed', 'Unreachable', 'Wiping', 'Decommissioned'];
const NO_RACK = '';

const S = {
  session: null,      // {name, role, csrf, expires}
  tiles: new Map(),   // node id → tile (from /ui/stream)
  els: new Map(),     // node id → its element in the grid
  phase: null,        // the legend's filter
  query: '',          // the search box
  stream: null,
  view: null,         // {name, arg, cleanup, onChange}
  loaded: false,      // the stream's first message came
  painted: false,     // the grid was drawn from it (window.loomFirstPaint)
};

// h makes an element: h('div.card#x', {title: 't', onclick: f}, child, 'text', …).
function h(spec, props, ...kids) {
  const m = /^([a-z0-9]+)((?:[.#][\w-]+)*)$/i.exec(spec);
  const el = document.createElement(m ? m[1] : spec);
  if (m) {
    for (const part of m[2].match(/[.#][\w-]+/g) || []) {
      if (part[0] === '.') el.classList.add(part.slice(1)); else el.id = part.slice(1);
    }
  }
  if (props && (typeof props !== 'object' || props instanceof Node || Array.isArray(props))) {
    kids.unshift(props);
    props = null;
  }
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'style') for (const [p, x] of Object.entries(v)) el.style.setProperty(p, x);
    else if (k in el && k !== 'list') el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const k of kids.flat(Infinity)) {
    if (k === undefined || k === null || k === false) continue;
    el.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return el;
}

const $ = (sel) => document.querySelector(sel);

function bytes(n) {
  if (!n) return '0 B';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n >= 100 || i === 0 ? Math.round(n) : n.toFixed(1)} ${u[i]}`;
}

function ago(t) {
  if (!t || t.startsWith('0001')) return '—';
  const s = (Date.now() - Date.parse(t)) / 1000;
  if (s < 0) return new Date(t).toLocaleString();
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return new Date(t).toLocaleString();
}

function when(t) {
  return h('span', {title: t ? new Date(t).toLocaleString() : ''}, ago(t));
}

function pct(b, t) { return t ? Math.min(100, (100 * b) / t) : 0; }

function phaseColor(p) { return `var(--${PHASES.includes(p) ? p : 'Enrolled'})`; }

function badge(p) { return h('span.badge', {style: {'--c': phaseColor(p)}}, p || '—'); }

function toast(msg, bad) {
  const t = h('div.toast' + (bad ? '.bad' : ''), {role: 'status'}, msg);
  $('#toasts').append(t);
  setTimeout(() => t.remove(), bad ? 9000 : 4000);
}

function canWrite() { return S.session && S.session.role !== 'viewer'; }

// call is one API request as the session; it answers the JSON or throws
// an Error with the fabric's message.
async function call(method, path, body) {
  const opt = {method, headers: {}, credentials: 'same-origin'};
  if (method !== 'GET') opt.headers['X-CSRF-Token'] = S.session ? S.session.csrf : '';
  if (body !== undefined) {
    opt.headers['Content-Type'] = 'application/json';
    opt.body = JSON.stringify(body);
  }
  const r = await fetch(path, opt);
  const text = await r.text();
  let v = null;
  try { v = text ? JSON.parse(text) : null; } catch (e) { v = null; }
  if (r.status === 401 && !path.startsWith('/ui/login')) {
    showLogin('Your session ended: sign in again.');
  }
  if (!r.ok) throw new Error((v && v.error) || `${r.status} ${r.statusText}`);
  return v;
}

// ---- sign in and out ----

function showLogin(msg) {
  S.session = null;
  if (S.stream) { S.stream.close(); S.stream = null; }
  if (S.view && S.view.cleanup) S.view.cleanup();
  S.view = null;
  $('#top').hidden = true;
  $('#main').replaceChildren();
  $('#login').hidden = false;
  $('#login-error').textContent = msg || '';
  $('#token').value = '';
  $('#token').focus();
}

async function login(ev) {
  ev.preventDefault();
  const btn = $('#login-submit');
  btn.disabled = true;
  $('#login-error').textContent = '';
  try {
    S.session = await call('POST', '/ui/login', {token: $('#token').value});
    $('#token').value = '';
    start();
  } catch (e) {
    $('#login-error').textContent = e.message;
  } finally {
    btn.disabled = false;
  }
}

async function logout() {
  try { await call('POST', '/ui/logout'); } catch (e) { /* signed out anyway */ }
  showLogin('Signed out.');
}

function start() {
  $('#login').hidden = true;
  $('#top').hidden = false;
  $('#who').textContent = `${S.session.name} · ${S.session.role}`;
  openStream();
  route();
}

// ---- the live fleet ----

function openStream() {
  if (S.stream) S.stream.close();
  const es = new EventSource('/ui/stream');
  S.stream = es;
  es.addEventListener('nodes', (e) => {
    S.tiles = new Map(JSON.parse(e.data).map((t) => [t.id, t]));
    S.loaded = true;
    $('#live').classList.remove('off');
    if (S.view && S.view.name === 'racks') drawRacks();
    if (S.view && S.view.onChange) S.view.onChange(null);
  });
  es.addEventListener('change', (e) => {
    const c = JSON.parse(e.data);
    let regroup = false;
    for (const t of c.set || []) {
      const old = S.tiles.get(t.id);
      if (!old || old.rack !== t.rack || old.slot !== t.slot) regroup = true;
      S.tiles.set(t.id, t);
    }
    for (const id of c.gone || []) { S.tiles.delete(id); regroup = true; }
    if (S.view && S.view.name === 'racks') {
      if (regroup) drawRacks();
      else { for (const t of c.set || []) fillTile(S.els.get(t.id), t); drawLegend(); applyFilter(); }
    }
    if (S.view && S.view.onChange) S.view.onChange(c);
  });
  es.addEventListener('logout', () => showLogin('Your session ended: sign in again.'));
  es.onerror = async () => {
    $('#live').classList.add('off');
    if (es.readyState === EventSource.CLOSED && S.stream === es) {
      // Refused (401, say): find out whether the session still stands.
      try { S.session = await call('GET', '/ui/session'); setTimeout(openStream, 2000); } catch (e) { /* showLogin ran */ }
    }
  };
  es.onopen = () => $('#live').classList.remove('off');
}

// ---- views ----

function route() {
  if (!S.session) return;
  if (S.view && S.view.cleanup) S.view.cleanup();
  const [, name = 'racks', ...rest] = (location.hash || '#/racks').split('/');
  const arg = decodeURIComponent(rest.join('/'));
  for (const a of document.querySelectorAll('header nav a')) {
    a.classList.toggle('on', a.dataset.nav === name || (name === 'node' && a.dataset.nav === 'racks') || (name === 'vm' && a.dataset.nav === 'vms'));
  }
  S.view = {name, arg};
  const views = {racks: viewRacks, node: viewNode, vm: viewVM, vms: viewVMs, services: viewServices, events: viewEvents};
  (views[name] || viewRacks)(arg);
}

function rackOrder(a, b) {
  if (a === NO_RACK) return 1;
  if (b === NO_RACK) return -1;
  return a.localeCompare(b, undefined, {numeric: true});
}

function tileOrder(a, b) {
  return (a.slot || '').localeCompare(b.slot || '', undefined, {numeric: true}) || a.id.localeCompare(b.id);
}

function viewRacks() {
  const search = h('input', {type: 'search', placeholder: 'Filter: id, MAC, IP, model…', value: S.query,
    oninput: (e) => { S.query = e.target.value.trim().toLowerCase(); applyFilter(); }});
  $('#main').replaceChildren(
    h('div.bar', h('h1', 'Racks'), h('span.muted#count'), search),
    h('div.legend#legend'),
    h('div.racks#racks'));
  drawRacks();
}

function drawRacks() {
  const box = $('#racks');
  if (!box) return;
  const racks = new Map();
  for (const t of S.tiles.values()) {
    const r = t.rack || NO_RACK;
    if (!racks.has(r)) racks.set(r, []);
    racks.get(r).push(t);
  }
  S.els.clear();
  const cards = [];
  for (const name of [...racks.keys()].sort(rackOrder)) {
    const ts = racks.get(name).sort(tileOrder);
    const grid = h('div.tiles');
    for (const t of ts) {
      const el = h('a.tile', {href: `#/node/${encodeURIComponent(t.id)}`, dataset: {id: t.id}},
        h('div.id'), h('div.ph'), h('div.sub'), h('div.progress', h('i')));
      fillTile(el, t);
      S.els.set(t.id, el);
      grid.append(el);
    }
    cards.push(h('section.card.rack', {dataset: {rack: name}},
      h('h2', name === NO_RACK ? 'Not in a rack' : `Rack ${name}`, h('span.muted', `${ts.length} node${ts.length === 1 ? '' : 's'}`)),
      grid));
  }
  if (!cards.length) {
    cards.push(h('div.card.empty', 'No nodes yet. Servers appear here when they netboot, or when a rack is imported (loom rack import).'));
  }
  box.replaceChildren(...cards);
  drawLegend();
  applyFilter();
  if (!S.painted && S.loaded) {
    S.painted = true;
    requestAnimationFrame(() => {
      window.loomFirstPaint = performance.now();
      document.body.dataset.painted = String(S.tiles.size);
    });
  }
}

function fillTile(el, t) {
  if (!el) return;
  el.style.setProperty('--c', phaseColor(t.phase));
  el.dataset.phase = t.phase;
  el.querySelector('.id').textContent = t.id;
  const imaging = t.phase === 'Imaging' && t.total > 0;
  el.querySelector('.ph').textContent = imaging ? `Imaging ${Math.floor(pct(t.bytes, t.total))}%` : t.phase;
  el.querySelector('.sub').textContent = [t.slot && `slot ${t.slot}`, t.ip || t.mac].filter(Boolean).join(' · ');
  const bar = el.querySelector('.progress');
  bar.hidden = !imaging;
  bar.firstChild.style.width = `${pct(t.bytes, t.total).toFixed(1)}%`;
  el.title = [t.id, t.phase, t.model, t.profile && `profile ${t.profile}`, t.power && `power ${t.power}`,
    imaging && `${bytes(t.bytes)} of ${bytes(t.total)}${t.rate ? ` at ${bytes(t.rate)}/s` : ''}`, t.reason]
    .filter(Boolean).join('\n');
  el.dataset.search = [t.id, t.mac, t.ip, t.model, t.profile, t.slot, t.rack].filter(Boolean).join(' ').toLowerCase();
}

function drawLegend() {
  const box = $('#legend');
  if (!box) return;
  const n = Object.fromEntries(PHASES.map((p) => [p, 0]));
  for (const t of S.tiles.values()) n[t.phase] = (n[t.phase] || 0) + 1;
  box.replaceChildren(...PHASES.map((p) => h('span.chip' + (S.phase === p ? '.on' : '') + (n[p] ? '' : '.zero'),
    {dataset: {phase: p}, title: S.phase === p ? 'Show every phase' : `Show only ${p}`,
      onclick: () => { S.phase = S.phase === p ? null : p; drawLegend(); applyFilter(); }},
    h('span.dot', {style: {background: phaseColor(p)}}), p, h('span.n', String(n[p])))));
  $('#count').textContent = `${S.tiles.size} node${S.tiles.size === 1 ? '' : 's'}`;
}

function applyFilter() {
  for (const el of S.els.values()) {
    const hide = (S.phase && el.dataset.phase !== S.phase) || (S.query && !el.dataset.search.includes(S.query));
    el.classList.toggle('hide', Boolean(hide));
  }
  for (const card of document.querySelectorAll('.rack')) {
    card.hidden = !card.querySelector('.tile:not(.hide)');
  }
}

// confirm asks before an action; extra is an element (a select) shown in
// the dialog. It resolves true on Confirm.
function confirmAction(title, text, okLabel, extra) {
  const d = $('#confirm');
  $('#confirm-title').textContent = title;
  $('#confirm-text').textContent = text;
  $('#confirm-extra').replaceChildren(...(extra ? [extra] : []));
  $('#confirm-ok').textContent = okLabel;
  return new Promise((resolve) => {
    d.addEventListener('close', () => resolve(d.returnValue === 'ok'), {once: true});
    d.returnValue = '';
    d.showModal();
    $('#confirm-cancel').focus();
  });
}

// act runs an action behind a confirmation and tells how it ended.
async function act(title, text, okLabel, method, path, body, done, extra, bodyOf) {
  if (!(await confirmAction(title, text, okLabel, extra))) return;
  try {
    await call(method, path, bodyOf ? bodyOf() : body);
    toast(`${okLabel}: done`);
    if (done) done();
  } catch (e) {
    toast(`${okLabel}: ${e.message}`, true);
  }
}

function actionButton(label, cls, onclick) {
  return h('button' + cls, {type: 'button', disabled: !canWrite(), title: canWrite() ? '' : 'Your token is a viewer: it cannot act', onclick}, label);
}

function kv(pairs) {
  return h('dl.kv', pairs.filter(([, v]) => v !== undefined && v !== null && v !== '').flatMap(([k, v]) => [h('dt', k), h('dd', v)]));
}

function table(cols, rows, empty) {
  if (!rows.length) return h('div.empty', empty);
  return h('table', h('thead', h('tr', cols.map((c) => h('th' + (c.num ? '.num' : ''), c.label)))),
    h('tbody', rows.map((r) => h('tr', cols.map((c) => h('td' + (c.num ? '.num' : ''), c.get(r)))))));
}

async function viewNode(id) {
  const main = $('#main');
  main.replaceChildren(h('div.bar', h('a', {href: '#/racks'}, '← Racks')), h('p.muted', `Loading ${id}…`));
  let n, evs, vms, profiles, consoleText;
  try {
    [n, evs, vms, profiles, consoleText] = await Promise.all([
      call('GET', `/v1/nodes/${encodeURIComponent(id)}`),
      call('GET', `/v1/events?object=${encodeURIComponent(id)}&limit=50`).catch(() => []),
      call('GET', '/v1/vms').catch(() => []),
      call('GET', '/v1/profiles').catch(() => []),
      fetch(`/v1/nodes/${encodeURIComponent(id)}/console?lines=40`, {credentials: 'same-origin'}).then((r) => (r.ok ? r.text() : null), () => null),
    ]);
  } catch (e) {
    if (S.view && S.view.name === 'node' && S.view.arg === id) {
      main.replaceChildren(h('div.bar', h('a', {href: '#/racks'}, '← Racks')), h('div.card.empty', e.message));
    }
    return;
  }
  if (!S.view || S.view.name !== 'node' || S.view.arg !== id) return; // moved on meanwhile
  const again = () => { if (S.view && S.view.name === 'node' && S.view.arg === id) viewNode(id); };
  const inv = n.inventory || {};
  const mine = (vms || []).filter((v) => v.node === n.id);
  const prog = n.progress && n.phase === 'Imaging' ? n.progress : null;

  const picker = h('select#profile-pick', (profiles || []).map((p) => h('option', {value: p.name, selected: p.name === n.profile}, `${p.name} (${p.image})`)));
  const actions = h('div.actions',
    actionButton('Provision…', '.primary', () => act('Provision ' + n.id,
      'Image the node with the profile below. If it runs a host OS now, it is erased.', 'Provision',
      'POST', `/v1/nodes/${encodeURIComponent(n.id)}/provision`, null, again, picker, () => ({profile: picker.value}))),
    actionButton('Reprovision', '', () => act('Reprovision ' + n.id,
      `Image the node again with ${n.profile ? `profile ${n.profile}` : 'its profile'}: its disk is written anew.`, 'Reprovision',
      'POST', `/v1/nodes/${encodeURIComponent(n.id)}/reprovision`, undefined, again)),
    n.bmc && ['on', 'off', 'cycle'].map((op) => actionButton(`Power ${op}`, op === 'on' ? '' : '.danger-outline', () => act(`Power ${op} ${n.id}`,
      `Ask the node's BMC (${n.bmc.address}) to power it ${op}.`, `Power ${op}`,
      'POST', `/v1/nodes/${encodeURIComponent(n.id)}/power`, {op}, again))));
  if (!(profiles || []).length) actions.firstChild.disabled = true;

  const progress = h('div#node-progress', {hidden: !prog},
    h('div.progress.big', h('i', {style: {width: prog ? `${pct(prog.bytes, prog.total).toFixed(1)}%` : '0%'}})),
    h('p.muted#node-progress-text', prog ? `${bytes(prog.bytes)} of ${bytes(prog.total)}` : ''));

  main.replaceChildren(
    h('div.bar', h('a', {href: '#/racks'}, '← Racks'), h('h1', n.id), badge(n.phase), actions),
    h('div.grid2',
      h('section.card', h('h2', 'Status'), progress, kv([
        ['Phase', n.phase], ['Since', when(n.phaseChanged)],
        ['Reason', n.reason && h('span.reason', n.reason)],
        ['Mode', n.mode], ['Profile', n.profile || 'none'],
        ['Provisioned', n.provision ? `request ${n.provision}, imaged ${n.imaged || 0}${n.failed ? `, failed ${n.failed}` : ''}` : 'never'],
        ['Agent', n.agentVersion], ['Last seen', when(n.lastSeen)], ['Registered', when(n.created)],
        ['Rack', n.rack && `${n.rack}${n.slot ? `, slot ${n.slot}` : ''}`],
        ['Wiped', n.wiped]])),
      h('section.card', h('h2', 'Machine'), kv([
        ['Model', [inv.dmi && inv.dmi.vendor, inv.dmi && inv.dmi.product].filter(Boolean).join(' ')],
        ['Serial', inv.dmi && inv.dmi.serial], ['UUID', inv.dmi && inv.dmi.uuid && h('span.mono', inv.dmi.uuid)],
        ['CPU', inv.cpu && inv.cpu.count ? `${inv.cpu.count} × ${inv.cpu.model || 'CPU'}` : ''],
        ['Memory', inv.memoryBytes ? bytes(inv.memoryBytes) : ''],
        ['Guests', n.accel ? `${n.accel.accel} (${n.accel.cpu})${n.guestVCPUs ? `, ${n.guestVCPUs} vCPUs offered` : ''}` : ''],
        ['Boot MAC', h('span.mono', n.mac)], ['Address', n.ip]])),
      h('section.card', h('h2', 'Power'), n.bmc ? kv([
        ['BMC', `${n.bmc.protocol} ${n.bmc.address}`], ['Credential', n.bmc.credential],
        ['Power', n.bmc.power || 'unknown'], ['Checked', when(n.bmc.powerChecked)], ['Last action', n.bmc.lastAction]])
        : h('p.muted', 'No BMC: Loom cannot power this node (loom node bmc set, or a rack import, gives it one).'))),
    h('div.grid2',
      h('section.card', h('h2', 'Disks'), table([
        {label: 'Name', get: (d) => h('span.mono', d.name)}, {label: 'Model', get: (d) => d.model || ''},
        {label: 'Size', num: true, get: (d) => bytes(d.sizeBytes)}], inv.disks || [], 'No disks reported.')),
      h('section.card', h('h2', 'Network'), table([
        {label: 'Name', get: (x) => x.name}, {label: 'MAC', get: (x) => h('span.mono', x.mac)},
        {label: 'Link', get: (x) => (x.link ? (x.speedMbps ? `up, ${x.speedMbps} Mb/s` : 'up') : 'down')}], inv.nics || [], 'No interfaces reported.'))),
    consoleText && h('section.card', {style: {'margin-bottom': '16px'}}, h('h2', 'Console'), h('pre.console', consoleText)),
    h('section.card', {style: {'margin-bottom': '16px'}}, h('h2', `VMs on ${n.id}`), vmTable(mine, again)),
    h('section.card', h('h2', 'Events'), eventTable(evs, 'No events recorded for this node.')));

  // Live: the tile's changes move the bar; a new phase reloads the page.
  S.view.onChange = (c) => {
    const t = S.tiles.get(id);
    if (!t) return;
    if (t.phase !== n.phase) { again(); return; }
    const box = $('#node-progress');
    if (!box) return;
    box.hidden = !(t.phase === 'Imaging' && t.total > 0);
    box.querySelector('i').style.width = `${pct(t.bytes, t.total).toFixed(1)}%`;
    $('#node-progress-text').textContent = `${bytes(t.bytes)} of ${bytes(t.total)}${t.rate ? ` at ${bytes(t.rate)}/s` : ''}`;
  };
}

function vmTable(vms, done) {
  return table([
    {label: 'VM', get: (v) => h('a.mono', {href: `#/vm/${encodeURIComponent(v.id)}`}, v.id)},
    {label: 'Node', get: (v) => h('a', {href: `#/node/${encodeURIComponent(v.node)}`}, v.node)},
    {label: 'Service', get: (v) => (v.service ? `${v.service}/${v.role}` : '—')},
    {label: 'State', get: (v) => h('span', {title: v.reason || ''}, `${v.state || 'Pending'}${v.desired && v.desired !== 'running' ? ` (wants ${v.desired})` : ''}`)},
    {label: 'Endpoint', get: (v) => v.endpoint || '—'},
    {label: 'Size', get: (v) => `${v.vcpus} vCPU, ${v.memoryMB} MiB`},
    {label: 'CPU s', num: true, get: (v) => (v.usage ? v.usage.cpuSeconds.toFixed(1) : '—')},
    {label: 'Memory', num: true, get: (v) => (v.usage ? bytes(v.usage.memoryBytes) : '—')},
    {label: 'Channel', num: true, get: (v) => (v.usage ? bytes(v.usage.channelBytes) : '—')},
    {label: '', get: (v) => h('div.actions', ['start', 'stop', 'reboot'].map((a) => actionButton(a[0].toUpperCase() + a.slice(1), '.small', () =>
      act(`${a[0].toUpperCase() + a.slice(1)} VM ${v.id}`, `${a === 'stop' ? 'Stop' : a === 'start' ? 'Start' : 'Reboot'} the guest on ${v.node}.`,
        a[0].toUpperCase() + a.slice(1), 'POST', `/v1/vms/${encodeURIComponent(v.id)}/${a}`, undefined, done))))},
  ], vms, 'No VMs.');
}

function eventTable(evs, empty) {
  return table([
    {label: 'When', get: (e) => when(e.time)}, {label: 'What', get: (e) => `${e.from || '∅'} → ${e.to || ''}`},
    {label: 'By', get: (e) => e.actor || ''}, {label: 'Reason', get: (e) => e.reason || ''}], (evs || []).slice().reverse(), empty);
}

// viewVM is one VM: where it runs, its state and use, its history.
function viewVM(id) {
  const box = h('div', h('p.muted', `Loading ${id}…`));
  $('#main').replaceChildren(h('div.bar', h('a', {href: '#/vms'}, '← VMs'), h('h1', id)), box);
  poll(3000, async () => {
    try {
      const [v, evs] = await Promise.all([
        call('GET', `/v1/vms/${encodeURIComponent(id)}`),
        call('GET', `/v1/events?object=${encodeURIComponent(id)}&limit=50`).catch(() => []),
      ]);
      if ($('#confirm').open) return;
      const u = v.usage || {};
      box.replaceChildren(
        h('div.grid2',
          h('section.card', h('h2', 'Guest'), kv([
            ['State', `${v.state || 'Pending'}${v.desired && v.desired !== 'running' ? ` (wants ${v.desired})` : ''}`],
            ['Reason', v.reason && h('span.reason', v.reason)],
            ['Node', h('a', {href: `#/node/${encodeURIComponent(v.node)}`}, v.node)],
            ['Service', v.service ? `${v.service}/${v.role} (update domain ${v.updateDomain || 0})` : 'none (made by hand)'],
            ['Package', v.package], ['Size', `${v.vcpus} vCPU, ${v.memoryMB} MiB`],
            ['Endpoint', v.endpoint], ['Restarts', String(v.restarts || 0)],
            ['Created', when(v.created)], ['Reported', when(v.observed)]])),
          h('section.card', h('h2', 'Use'), v.usage ? kv([
            ['CPU', `${(u.cpuSeconds || 0).toFixed(1)} s`], ['Memory', bytes(u.memoryBytes)], ['Channel', bytes(u.channelBytes)]])
            : h('p.muted', 'Not reported by its host yet.'))),
        h('div.bar', h('div.actions', ['start', 'stop', 'reboot'].map((a) => actionButton(a[0].toUpperCase() + a.slice(1), '', () =>
          act(`${a[0].toUpperCase() + a.slice(1)} VM ${v.id}`, `${a[0].toUpperCase() + a.slice(1)} the guest on ${v.node}.`,
            a[0].toUpperCase() + a.slice(1), 'POST', `/v1/vms/${encodeURIComponent(v.id)}/${a}`, undefined, () => {}))))),
        h('section.card', h('h2', 'Events'), eventTable(evs, 'No events recorded for this VM.')));
    } catch (e) { box.replaceChildren(h('div.card.empty', e.message)); }
  });
}

// poll re-runs load every ms while the view stays.
function poll(ms, load) {
  const view = S.view;
  let timer = null;
  const tick = async () => {
    await load();
    if (S.view === view) timer = setTimeout(tick, ms);
  };
  view.cleanup = () => clearTimeout(timer);
  tick();
}

function viewVMs() {
  const box = h('section.card', h('p.muted', 'Loading…'));
  $('#main').replaceChildren(h('div.bar', h('h1', 'VMs'), h('span.muted#vm-count')), box);
  const load = async () => {
    try {
      const vms = await call('GET', '/v1/vms');
      $('#vm-count') && ($('#vm-count').textContent = `${vms.length} VM${vms.length === 1 ? '' : 's'}`);
      if (!$('#confirm').open) box.replaceChildren(vmTable(vms, load));
    } catch (e) { box.replaceChildren(h('div.empty', e.message)); }
  };
  poll(3000, load);
}

function viewServices() {
  const box = h('div', h('p.muted', 'Loading…'));
  $('#main').replaceChildren(h('div.bar', h('h1', 'Services')), box);
  poll(4000, async () => {
    try {
      const [svcs, insts] = await Promise.all([call('GET', '/v1/services'), call('GET', '/v1/instances')]);
      if (!svcs.length) { box.replaceChildren(h('div.card.empty', 'No services. Deploy one with loom service deploy.')); return; }
      box.replaceChildren(...svcs.map((s) => {
        const mine = insts.filter((i) => i.service === s.name);
        const eps = new Map((s.endpoints || []).map((e) => [e.role, e]));
        return h('section.card', {style: {'margin-bottom': '16px'}},
          h('h2', s.name, ' ', h('span.muted', `${s.updateDomains} update domain${s.updateDomains === 1 ? '' : 's'}${s.walk ? ` · upgrade ${s.walk.state || ''}` : ''}`)),
          table([
            {label: 'Role', get: (r) => r.name}, {label: 'Kind', get: (r) => r.kind},
            {label: 'Instances', num: true, get: (r) => `${mine.filter((i) => i.role === r.name && i.state === 'Ready').length} ready of ${r.instances}`},
            {label: 'Package', get: (r) => r.package},
            {label: 'Endpoint', get: (r) => { const e = eps.get(r.name); return e ? (e.address ? `${e.address} (${e.inRotation} in rotation)` : e.error) : '—'; }},
          ], s.roles || [], 'No roles.'),
          h('h3', {style: {'margin-top': '12px'}}, 'Instances'),
          table([
            {label: 'Instance', get: (i) => h('span.mono', i.id)}, {label: 'Role', get: (i) => i.role},
            {label: 'Node', get: (i) => (i.node ? h('a', {href: `#/node/${encodeURIComponent(i.node)}`}, i.node) : '—')},
            {label: 'Fault domain', get: (i) => i.faultDomain || '—'}, {label: 'Update domain', num: true, get: (i) => String(i.updateDomain)},
            {label: 'State', get: (i) => h('span', {title: i.reason || ''}, i.state)}, {label: 'Endpoint', get: (i) => i.endpoint || '—'},
            {label: 'Restarts', num: true, get: (i) => String(i.restarts || 0)},
          ], mine, 'No instances.'));
      }));
    } catch (e) { box.replaceChildren(h('div.card.empty', e.message)); }
  });
}

function viewEvents() {
  const body = h('tbody');
  const status = h('span.muted', 'connecting…');
  $('#main').replaceChildren(h('div.bar', h('h1', 'Events'), status),
    h('section.card', h('table', h('thead', h('tr', ['When', 'Kind', 'Object', 'Change', 'By', 'Reason'].map((c) => h('th', c)))), body)));
  const ctl = new AbortController();
  S.view.cleanup = () => ctl.abort();
  const add = (e) => {
    const page = e.object && (e.object.startsWith('vm-') ? 'vm' : e.object.startsWith('n-') ? 'node' : '');
    const obj = page ? h('a.mono', {href: `#/${page}/${encodeURIComponent(e.object)}`}, e.object) : h('span.mono', e.object || '');
    body.prepend(h('tr', h('td', when(e.time)), h('td', e.kind), h('td', obj), h('td', `${e.from || '∅'} → ${e.to || ''}`),
      h('td', e.actor || ''), h('td', e.reason || '')));
    while (body.children.length > 500) body.lastChild.remove();
  };
  (async () => {
    try {
      const r = await fetch('/v1/events?follow=true&limit=200', {credentials: 'same-origin', signal: ctl.signal});
      if (!r.ok) { const v = await r.json().catch(() => ({})); throw new Error(v.error || r.statusText); }
      status.textContent = 'following';
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buf += value;
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          if (line.trim()) add(JSON.parse(line));
        }
      }
      status.textContent = 'the stream ended';
    } catch (e) {
      if (!ctl.signal.aborted) status.textContent = e.message;
    }
  })();
}

document.addEventListener('DOMContentLoaded', async () => {
  $('#login-form').addEventListener('submit', login);
  $('#logout').addEventListener('click', logout);
  window.addEventListener('hashchange', route);
  try {
    S.session = await call('GET', '/ui/session');
    start();
  } catch (e) {
    showLogin('');
  }
});
