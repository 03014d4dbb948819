// Chat: conversations, a streaming answer, each tool call inline with its risk level and
// reason; a call that waits for approval shows its canonical parameters with Approve/Reject;
// a turn resumed after a decision streams in through /api/conversations/{id}/events.
import { api, decisionControls, el, hashView, levelBadge, paramsView, postStream, status, when }
  from './common.js';

const app = document.getElementById('app');
const convList = el('ul', { class: 'conversations', 'aria-label': 'Conversations' });
const newBtn = el('button', { type: 'button', class: 'new' }, 'New conversation');
const log = el('div', { class: 'log', 'aria-live': 'polite', 'aria-label': 'Messages' });
const input = el('textarea', { id: 'message', name: 'message', rows: 3, required: true });
const sendBtn = el('button', { type: 'submit' }, 'Send');
const form = el('form', { class: 'composer' },
                el('label', { for: 'message' }, 'Message'), input, sendBtn);
app.append(el('div', { class: 'chat' },
              el('aside', { class: 'side' }, newBtn, convList),
              el('section', { class: 'thread' }, log, form)));

let current = null;      // conversation id
let events = null;       // EventSource of the current conversation
let posting = false;     // a POST stream is carrying this turn's events
let awaiting = null;     // the action a paused turn waits on (its result resumes the turn)
let resumed = false;     // the event stream is carrying a resumed turn
let bubble = null;       // the assistant message being streamed
const tools = new Map(); // action_id -> tool card

function msg(kind, text) {
  const m = el('div', { class: 'msg ' + kind }, el('span', { class: 'who' }, kind),
               el('div', { class: 'text' }, text));
  log.append(m);
  m.scrollIntoView({ block: 'end' });
  return m;
}

function resultView(content) {
  let r = null;
  try { r = JSON.parse(content); } catch (e) { /* not JSON: shown as it is */ }
  if (!r || typeof r !== 'object') return el('pre', { class: 'output' }, content);
  const parts = [];
  if (r.stdout !== undefined && r.stdout !== null && r.stdout !== '')
    parts.push(el('p', {}, 'stdout'), el('pre', { class: 'output stdout' }, String(r.stdout)));
  if (r.stderr) parts.push(el('p', {}, 'stderr'), el('pre', { class: 'output stderr' }, String(r.stderr)));
  if (r.exit_code !== undefined) parts.push(el('p', {}, `exit code ${r.exit_code}`));
  if (r.error) parts.push(el('p', { class: 'error' }, String(r.error)));
  if (r.result !== undefined) parts.push(el('pre', { class: 'output' }, JSON.stringify(r.result, null, 2)));
  return el('div', {}, parts.length ? parts : el('pre', { class: 'output' }, content));
}

function toolCard(ev) {
  const key = ev.action_id || `invalid-${tools.size}`;
  let card = tools.get(key);
  if (card) return card;
  const state = el('span', { class: 'state' }, ev.status || '');
  const box = el('div', { class: `tool card risk-${ev.level || 'unknown'}`, 'data-id': key },
    el('h3', {}, 'Tool call ', el('code', {}, ev.name), ' ', levelBadge(ev.level), ' ', state),
    el('p', { class: 'reason-text' }, 'Why: ', el('span', {}, ev.reason || '')),
    el('details', {}, el('summary', {}, 'arguments'),
       el('pre', {}, el('code', {}, JSON.stringify(ev.arguments, null, 2)))));
  card = { box, state };
  tools.set(key, card);
  log.append(box);
  box.scrollIntoView({ block: 'end' });
  bubble = null;
  return card;
}

function onEvent(name, ev) {
  if (name === 'token') {
    if (!bubble) bubble = msg('assistant', '');
    bubble.querySelector('.text').textContent += ev.text;
  } else if (name === 'tool_call') {
    toolCard(ev);
  } else if (name === 'approval_required') {
    awaiting = ev.action_id;
    resumed = false;
    const card = toolCard({ action_id: ev.action_id, name: '', level: ev.level });
    if (card.box.dataset.status === 'pending') return;
    card.state.textContent = 'waiting for approval';
    card.box.dataset.status = 'pending';
    card.box.append(paramsView(ev.canonical_parameters), hashView(ev.params_sha256),
                    decisionControls(ev, (rec) => { card.state.textContent = rec.status; }));
    loadList();   // the conversation now awaits approval
  } else if (name === 'tool_result') {
    if (ev.action_id === awaiting) awaiting = null;
    const card = tools.get(ev.action_id) || toolCard(ev);
    card.state.textContent = ev.status;
    card.box.dataset.status = ev.status;
    for (const b of card.box.querySelectorAll('.decision button, .decision input')) b.disabled = true;
    card.box.append(el('div', { class: 'result', 'data-status': ev.status },
                        el('h4', {}, `Result: ${ev.status}`), resultView(ev.content)));
    card.box.scrollIntoView({ block: 'end' });
  } else if (name === 'final') {
    if (!bubble && ev.text) bubble = msg('assistant', '');
    if (bubble) {
      bubble.querySelector('.text').textContent = ev.text;
      bubble.dataset.final = '1';
    }
    bubble = null;
    resumed = false;
    loadList();
  } else if (name === 'error') {
    msg('error', `${ev.code}: ${ev.message}`);
    bubble = null;
    resumed = false;
  }
}

function subscribe(id) {
  if (events) events.close();
  events = new EventSource(`/api/conversations/${encodeURIComponent(id)}/events`);
  for (const n of ['token', 'tool_call', 'approval_required', 'tool_result', 'final', 'error']) {
    events.addEventListener(n, (e) => {
      // the stream hears every turn of the conversation, the posted one too: take from it
      // only what follows the decision a paused turn waits on
      const ev = JSON.parse(e.data);
      if (posting) return;
      if (!resumed) {
        if (n !== 'tool_result' || !awaiting || ev.action_id !== awaiting) return;
        resumed = true;
      }
      onEvent(n, ev);
    });
  }
}

function historyView(m) {
  if (m.provenance === 'user') return msg('user', m.content);
  if (m.role === 'tool') {
    const card = toolCard({ action_id: m.action_id, name: m.tool_name, level: null });
    const nl = m.content.indexOf('\n');
    const body = nl >= 0 ? m.content.slice(nl + 1) : m.content;
    let st = '';
    try { st = JSON.parse(body).status || ''; } catch (e) { /* truncated */ }
    card.state.textContent = st;
    card.box.append(el('div', { class: 'result' }, resultView(body)));
    return card.box;
  }
  const box = msg('assistant', m.content || '');
  for (const c of m.tool_calls || []) {
    box.append(el('p', { class: 'call' }, 'asked for ', el('code', {}, c.name)));
  }
  return box;
}

async function open(id) {
  current = id;
  awaiting = null;
  resumed = false;
  tools.clear();
  bubble = null;
  log.replaceChildren();
  for (const li of convList.children) li.classList.toggle('current', li.dataset.id === id);
  subscribe(id);
  const c = await api(`/api/conversations/${encodeURIComponent(id)}`);
  for (const m of c.messages) historyView(m);
  if (c.pending_action_id) {
    try {
      const a = await api(`/api/actions/${encodeURIComponent(c.pending_action_id)}`);
      if (a.status === 'pending') {
        onEvent('tool_call', { action_id: a.action_id, name: a.action_type,
                               level: a.security_level, reason: a.level_reason,
                               status: a.status, arguments: a.parameters });
        onEvent('approval_required', a);
      }
    } catch (e) { status(`${e.code}: ${e.message}`, 'error'); }
  }
  input.focus();
}

async function loadList() {
  const body = await api('/api/conversations');
  convList.replaceChildren();
  for (const c of body.conversations) {
    const b = el('button', { type: 'button' }, c.title || c.conversation_id, ' ',
                 el('small', {}, `${c.status} · ${when(c.updated_at)}`));
    b.addEventListener('click', () => open(c.conversation_id));
    convList.append(el('li', { 'data-id': c.conversation_id,
                               class: c.conversation_id === current ? 'current' : '' }, b));
  }
  return body.conversations;
}

newBtn.addEventListener('click', async () => {
  const c = await api('/api/conversations', { method: 'POST', body: {} });
  await loadList();
  await open(c.conversation_id);
});

form.addEventListener('submit', async (e) => {
  e.preventDefault();
  const text = input.value.trim();
  if (!text) return;
  if (!current) {
    const c = await api('/api/conversations', { method: 'POST', body: {} });
    await loadList();
    await open(c.conversation_id);
  }
  input.value = '';
  msg('user', text);
  sendBtn.disabled = true;
  posting = true;
  try {
    await postStream(`/api/conversations/${encodeURIComponent(current)}/messages`,
                     { content: text }, onEvent);
  } catch (err) {
    msg('error', `${err.code}: ${err.message}`);
  } finally {
    posting = false;
    sendBtn.disabled = false;
  }
});

input.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) form.requestSubmit();
});

loadList().then(async (convs) => {
  const want = new URLSearchParams(window.location.search).get('c');
  const pick = convs.find((c) => c.conversation_id === want) || convs[0];
  if (pick) await open(pick.conversation_id);
  app.dataset.ready = '1';
}).catch((e) => status(`${e.code || 'error'}: ${e.message}`, 'error'));
