// Approvals: the pending queue (newest first), live from /api/events (no polling), with the
// time left before each action expires, its exact canonical parameters and hash.
import { api, clock, decisionControls, el, hashView, levelBadge, paramsView, status, when }
  from './common.js';

const app = document.getElementById('app');
const list = el('ol', { class: 'queue', 'aria-label': 'Pending actions' });
const empty = el('p', { class: 'empty' }, 'Nothing waits for a decision.');
app.append(empty, list);
const cards = new Map();   // action_id -> {li, action}
let skew = 0;              // server time - our time (seconds), from the Date header

function setStatus(card, st) {
  card.li.dataset.status = st;
  card.state.textContent = st;
  if (st !== 'pending') {
    card.left.textContent = st === 'expired' ? 'expired' : `decided: ${st}`;
    card.li.classList.add('decided');
    for (const b of card.li.querySelectorAll('button, input')) b.disabled = true;
  }
}

function tick() {
  const now = Date.now() / 1000 + skew;
  for (const card of cards.values()) {
    if (card.li.dataset.status !== 'pending' || !card.action.expires_at) continue;
    const left = card.action.expires_at - now;
    if (left <= 0) {
      card.left.textContent = 'expired';
      setStatus(card, 'expired');
    } else {
      card.left.textContent = `expires in ${clock(left)}`;
    }
  }
  empty.hidden = [...cards.values()].some((c) => c.li.dataset.status === 'pending');
}

function add(a) {
  if (cards.has(a.action_id)) return;
  const left = el('span', { class: 'left' });
  const state = el('span', { class: 'state' }, a.status);
  const li = el('li', { class: `action card risk-${a.security_level}`, 'data-id': a.action_id,
                        'data-status': a.status },
    el('h2', {}, levelBadge(a.security_level), ' ', el('span', { class: 'type' }, a.action_type),
       ' ', el('code', { class: 'id' }, a.action_id)),
    el('p', { class: 'meta' }, `requested by ${a.requester} at ${when(a.created_at)} · `, left,
       ' · ', state),
    el('p', { class: 'reason-text' }, 'Why this level: ', el('span', {}, a.level_reason)),
    paramsView(a.canonical_parameters),
    hashView(a.params_sha256),
    decisionControls(a, (rec) => setStatus(cards.get(a.action_id), rec.status)));
  const card = { li, action: a, left, state };
  cards.set(a.action_id, card);
  list.prepend(li);   // newest first
  return card;
}

async function load() {
  const r = await fetch('/api/actions/pending', { credentials: 'same-origin' });
  const date = Date.parse(r.headers.get('date'));
  if (!Number.isNaN(date)) skew = (date - Date.now()) / 1000;
  if (r.status === 401) { window.location.assign('/login'); return; }
  const body = await r.json();
  const actions = body.actions.slice().sort((x, y) => x.created_at - y.created_at);
  for (const a of actions) add(a);
  tick();
}

function listen() {
  const es = new EventSource('/api/events');
  es.addEventListener('action', async (e) => {
    const ev = JSON.parse(e.data);
    const card = cards.get(ev.action_id);
    if (card) { setStatus(card, ev.status); tick(); return; }
    if (ev.status === 'pending') {
      try { add(await api(`/api/actions/${encodeURIComponent(ev.action_id)}`)); tick(); }
      catch (err) { status(`${err.code}: ${err.message}`, 'error'); }
    }
  });
  es.addEventListener('revoked', () => { es.close(); window.location.assign('/login'); });
  es.addEventListener('open', () => status('live', 'ok'));
  es.addEventListener('error', () => status('reconnecting to the event stream…', 'warn'));
}

listen();   // first, so nothing decided while the list loads is missed
load().then(() => {
  setInterval(tick, 1000);
  app.dataset.ready = '1';
}).catch((e) => status(`${e.code || 'error'}: ${e.message}`, 'error'));
