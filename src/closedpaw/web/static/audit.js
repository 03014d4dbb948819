// Audit: the log page by page (oldest first, by seq), filtered by event, principal or action,
// and "Verify chain": intact, or the first bad seq.
import { api, el, status } from './common.js';

const app = document.getElementById('app');
const PAGE = 50;
const field = (id, label, placeholder) => {
  const input = el('input', { id, name: id, type: 'text', placeholder });
  return { input, node: el('span', { class: 'field' }, el('label', { for: id }, label), input) };
};
const fEvent = field('f-event', 'Event', 'action.  or  web.login');
const fPrincipal = field('f-principal', 'Principal', 'admin');
const fAction = field('f-action', 'Action', 'action id');
const filters = el('form', { class: 'filters' }, fEvent.node, fPrincipal.node, fAction.node,
                   el('button', { type: 'submit' }, 'Apply filters'));
const verifyBtn = el('button', { type: 'button', class: 'verify' }, 'Verify chain');
const verdict = el('p', { class: 'verdict', role: 'status', 'aria-live': 'polite' });
const tbody = el('tbody');
const table = el('table', { class: 'audit' },
  el('caption', {}, 'Audit entries'),
  el('thead', {}, el('tr', {}, ['seq', 'time', 'event', 'principal', 'action', 'details']
    .map((h) => el('th', { scope: 'col' }, h)))),
  tbody);
const prevBtn = el('button', { type: 'button' }, 'Previous page');
const nextBtn = el('button', { type: 'button' }, 'Next page');
const where = el('span', { class: 'where' });
app.append(el('div', { class: 'toolbar' }, verifyBtn, verdict), filters,
           el('div', { class: 'table-wrap' }, table),
           el('div', { class: 'pager' }, prevBtn, where, nextBtn));

const cursors = [0];   // after_seq of each page seen
let next = null;

async function show() {
  const q = new URLSearchParams({ after_seq: String(cursors[cursors.length - 1]),
                                  limit: String(PAGE) });
  if (fEvent.input.value.trim()) q.set('event', fEvent.input.value.trim());
  if (fPrincipal.input.value.trim()) q.set('principal', fPrincipal.input.value.trim());
  if (fAction.input.value.trim()) q.set('action_id', fAction.input.value.trim());
  const page = await api('/api/audit-logs?' + q);
  tbody.replaceChildren(...page.entries.map((e) => el('tr', { 'data-seq': e.seq },
    el('td', {}, String(e.seq)), el('td', {}, e.ts), el('td', {}, el('code', {}, e.event)),
    el('td', {}, e.principal), el('td', {}, e.action_id ? el('code', {}, e.action_id) : ''),
    el('td', {}, el('code', { class: 'details' }, JSON.stringify(e.details))))));
  next = page.next_after_seq;
  nextBtn.disabled = next === null;
  prevBtn.disabled = cursors.length < 2;
  where.textContent = `page ${cursors.length}`;
}

filters.addEventListener('submit', (e) => {
  e.preventDefault();
  cursors.length = 1;
  show().catch((err) => status(`${err.code}: ${err.message}`, 'error'));
});
nextBtn.addEventListener('click', () => { if (next !== null) { cursors.push(next); show(); } });
prevBtn.addEventListener('click', () => { if (cursors.length > 1) { cursors.pop(); show(); } });
verifyBtn.addEventListener('click', async () => {
  verifyBtn.disabled = true;
  verdict.textContent = 'verifying…';
  verdict.className = 'verdict';
  try {
    const r = await api('/api/audit/verify');
    if (r.ok) {
      verdict.textContent = `intact: ${r.entries} entries, last seq ${r.last_seq}`;
      verdict.className = 'verdict ok';
    } else {
      verdict.textContent = `broken: first bad seq ${r.first_bad_seq} (${r.problem})`;
      verdict.className = 'verdict bad';
    }
    verdict.dataset.ok = r.ok ? '1' : '0';
  } catch (err) {
    verdict.textContent = `${err.code}: ${err.message}`;
  } finally {
    verifyBtn.disabled = false;
  }
});

show().then(() => { app.dataset.ready = '1'; })
  .catch((e) => status(`${e.code || 'error'}: ${e.message}`, 'error'));
