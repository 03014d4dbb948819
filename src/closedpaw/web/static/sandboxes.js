// Sandboxes: the runtime actions run in and the isolation in force, the runtimes installed,
// and the execution queue (from /api/status); live sandboxes with their CPU time and memory,
// warm pools, images and policies (from /api/sandboxes, admin).
import { api, el, status } from './common.js';

const app = document.getElementById('app');

function dl(obj) {
  const d = el('dl', { class: 'kv' });
  for (const [k, v] of Object.entries(obj || {})) {
    d.append(el('dt', {}, k), el('dd', {}, v !== null && typeof v === 'object'
      ? el('pre', {}, el('code', {}, JSON.stringify(v, null, 2))) : String(v)));
  }
  return d;
}

function cell(v) {
  return v !== null && typeof v === 'object' ? JSON.stringify(v) : String(v ?? '');
}

function table(caption, rows, cols) {
  const body = rows.length
    ? rows.map((r) => el('tr', {}, cols.map((c) => el('td', {}, cell(r[c])))))
    : [el('tr', {}, el('td', { colspan: cols.length }, 'none'))];
  return el('div', { class: 'table-wrap' }, el('table', {},
    el('caption', {}, caption),
    el('thead', {}, el('tr', {}, cols.map((c) => el('th', { scope: 'col' }, c)))),
    el('tbody', {}, body)));
}

async function show() {
  const s = await api('/api/status');
  let more = null;
  try { more = await api('/api/sandboxes'); } catch (e) { more = { error: `${e.code}: ${e.message}` }; }
  const sb = s.sandbox || {};
  const installed = el('table', { class: 'runtimes' },
    el('caption', {}, 'Runtimes installed'),
    el('thead', {}, el('tr', {}, ['name', 'version', 'platform'].map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, (sb.installed || []).map((r) =>
      el('tr', {}, el('td', {}, r.name), el('td', {}, r.version || ''), el('td', {}, r.platform || '')))));
  const inForce = sb.usable
    ? { runtime: sb.runtime, version: sb.version, platform: sb.platform, network: sb.network,
        seccomp: sb.seccomp }
    : { usable: false, detail: sb.detail };
  app.replaceChildren(
    el('section', { class: 'card' }, el('h2', {}, 'Isolation in force'), dl(inForce)),
    el('section', { class: 'card' }, installed),
    el('section', { class: 'card' }, el('h2', {}, 'Execution queue'), dl(s.queue)),
    more.error ? el('p', { class: 'error' }, more.error) : el('section', { class: 'card' },
      table('Live sandboxes of this server', more.live, ['id', 'status', 'runtime', 'created_at',
                                                          'cpu_ms', 'memory_mib',
                                                          'peak_memory_mib']),
      table('Warm pools', more.pools, ['policy', 'ready', 'size', 'created', 'acquired_warm',
                                       'acquired_cold', 'expired', 'refill_failures']),
      table('Images', more.images, ['name', 'digest', 'created', 'size']),
      table('Execution policies', more.policies.map((x) => ({ ...x, policy: x.name })),
            ['policy', 'language', 'image', 'memory_mb', 'cpus', 'pids', 'timeout_s', 'network',
             'readonly_root', 'secrets'])),
    el('section', { class: 'card' }, el('h2', {}, 'Actions'),
       dl({ pending: s.pending, ...s.actions, 'audit entries': s.audit_entries,
            database: s.database, 'approval TTL (s)': s.approval_ttl_s })));
}

show().then(() => { app.dataset.ready = '1'; })
  .catch((e) => status(`${e.code || 'error'}: ${e.message}`, 'error'));
