// Providers: which are local and which cloud, their health and models (/api/providers).
import { api, el, status } from './common.js';

const app = document.getElementById('app');

async function show() {
  const { providers } = await api('/api/providers');
  const rows = providers.map((p) => el('tr', { 'data-name': p.name },
    el('th', { scope: 'row' }, p.name),
    el('td', {}, p.type || ''),
    el('td', {}, el('span', { class: 'locality locality-' + (p.locality || 'unknown') }, p.locality || 'unknown')),
    el('td', {}, el('span', { class: p.healthy ? 'health ok' : 'health bad' },
                    p.healthy ? `healthy (${Math.round(p.latency_ms || 0)} ms)` : 'unreachable'),
       p.detail ? el('small', {}, ' ', p.detail) : ''),
    el('td', {}, `default: ${p.default_model || ''}`,
       p.models && p.models.length ? el('small', {}, ' · ' + p.models.join(', ')) : '')));
  app.replaceChildren(el('div', { class: 'table-wrap' }, el('table', { class: 'providers' },
    el('caption', {}, 'Model providers'),
    el('thead', {}, el('tr', {}, ['name', 'type', 'where', 'health', 'models']
      .map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, rows))));
}

show().then(() => { app.dataset.ready = '1'; })
  .catch((e) => status(`${e.code || 'error'}: ${e.message}`, 'error'));
