// Sandboxes: the runtime actions run in and the isolation in force, the runtimes installed,
// and the execution queue (from /api/status).
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

async function show() {
  const s = await api('/api/status');
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
    el('section', { class: 'card' }, el('h2', {}, 'Actions'),
       dl({ pending: s.pending, ...s.actions, 'audit entries': s.audit_entries,
            database: s.database, 'approval TTL (s)': s.approval_ttl_s })));
}

show().then(() => { app.dataset.ready = '1'; })
  .catch((e) => status(`${e.code || 'error'}: ${e.message}`, 'error'));
