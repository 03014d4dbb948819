// Shared by every page. Text from the server is only ever put into the page through
// textContent (el() below): a model's answer, a tool's output or an action's parameters
// can hold "<script>" and it stays text.

export const csrf = document.querySelector('meta[name="csrf-token"]').content;
export const me = { name: document.body.dataset.user, role: document.body.dataset.role };

/** el('div', {class: 'x', onclick: f}, 'text', child, ...): children are text or nodes. */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (k === 'class') node.className = v;
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export function status(text, kind) {
  const s = document.getElementById('status');
  s.textContent = text || '';
  s.className = 'status' + (kind ? ' ' + kind : '');
}

export class ApiError extends Error {
  constructor(code, message, httpStatus) {
    super(message);
    this.code = code;
    this.httpStatus = httpStatus;
  }
}

async function failed(r) {
  if (r.status === 401) { window.location.assign('/login'); }
  let code = 'http_' + r.status, message = r.statusText;
  try {
    const body = await r.json();
    if (body && body.error) { code = body.error.code; message = body.error.message; }
  } catch (e) { /* not JSON */ }
  return new ApiError(code, message, r.status);
}

/** JSON request to our API with the session cookie and, for changes, the CSRF header. */
export async function api(path, { method = 'GET', body } = {}) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET') headers['X-CSRF-Token'] = csrf;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(path, {
    method, headers, credentials: 'same-origin', cache: 'no-store',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!r.ok) throw await failed(r);
  return r.status === 204 ? null : r.json();
}

/** POST that answers a server-sent-event stream; onEvent(name, data) per event. */
export async function postStream(path, body, onEvent) {
  const r = await fetch(path, {
    method: 'POST', credentials: 'same-origin', cache: 'no-store',
    headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf,
               Accept: 'text/event-stream' },
    body: JSON.stringify(body),
  });
  if (!r.ok) throw await failed(r);
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      let name = 'message', data = '';
      for (const line of block.split('\n')) {
        if (line.startsWith('event: ')) name = line.slice(7);
        else if (line.startsWith('data: ')) data += line.slice(6);
      }
      if (data) onEvent(name, JSON.parse(data));
    }
  }
}

export const LEVELS = ['low', 'medium', 'high', 'critical'];

export function levelBadge(level) {
  const l = LEVELS.includes(level) ? level : 'unknown';
  return el('span', { class: 'level level-' + l, title: 'risk level' }, l);
}

export function when(ts) {
  return ts ? new Date(ts * 1000).toLocaleString() : '';
}

/** seconds -> "14:05" / "1:02:03" */
export function clock(s) {
  s = Math.max(0, Math.floor(s));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  const mm = String(m).padStart(h ? 2 : 1, '0'), ss = String(sec).padStart(2, '0');
  return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

const FOLD = 400;

/** One value of an action's parameters: code as code, long values folded. */
export function valueView(key, value) {
  const text = typeof value === 'string' ? value : JSON.stringify(value, null, 2);
  const isCode = key === 'code' || key === 'command' || key === 'script' || text.includes('\n');
  const body = isCode ? el('pre', {}, el('code', {}, text)) : el('span', { class: 'value' }, text);
  if (text.length <= FOLD) return body;
  return el('details', {}, el('summary', {}, `${text.slice(0, 80)}… (${text.length} characters)`),
            body);
}

/** The canonical parameters of an action (the exact JSON its hash is of), key by key, and the
 *  canonical text itself. */
export function paramsView(canonical) {
  let parsed = null;
  try { parsed = JSON.parse(canonical); } catch (e) { /* shown raw below */ }
  const params = parsed && parsed.parameters ? parsed.parameters : null;
  const dl = el('dl', { class: 'params' });
  if (params && typeof params === 'object') {
    for (const [k, v] of Object.entries(params)) dl.append(el('dt', {}, k), el('dd', {}, valueView(k, v)));
  }
  return el('div', { class: 'canonical' }, dl,
            el('details', {}, el('summary', {}, 'canonical parameters (exactly what is hashed)'),
               el('pre', {}, el('code', { class: 'canonical-text' }, canonical))));
}

/** Approve / Reject controls for a pending action (used on the Approvals and Chat pages). */
export function decisionControls(action, onDone) {
  const id = action.action_id;
  const reason = el('input', { type: 'text', id: 'reason-' + id, class: 'reason',
                               placeholder: 'why (sent with a rejection)' });
  const msg = el('span', { class: 'decision-msg', role: 'status' });
  const approve = el('button', { type: 'button', class: 'approve',
                                 'aria-label': `Approve action ${id}` }, 'Approve');
  const reject = el('button', { type: 'button', class: 'reject',
                                'aria-label': `Reject action ${id}` }, 'Reject');
  const busy = (b) => { approve.disabled = b; reject.disabled = b; reason.disabled = b; };
  async function decide(kind) {
    busy(true);
    msg.textContent = kind === 'approve' ? 'approving…' : 'rejecting…';
    try {
      const rec = kind === 'approve'
        ? await api(`/api/actions/${encodeURIComponent(id)}/approve`,
                    { method: 'POST', body: { params_sha256: action.params_sha256 } })
        : await api(`/api/actions/${encodeURIComponent(id)}/reject`,
                    { method: 'POST', body: { reason: reason.value } });
      msg.textContent = rec.status;
      if (onDone) onDone(rec);
    } catch (e) {
      msg.textContent = `${e.code}: ${e.message}`;
      busy(false);
    }
  }
  approve.addEventListener('click', () => decide('approve'));
  reject.addEventListener('click', () => decide('reject'));
  return el('div', { class: 'decision' },
            el('label', { for: 'reason-' + id }, 'Reason'), reason, approve, reject, msg);
}

export function hashView(sha) {
  return el('p', { class: 'hash' }, 'sha256 ', el('code', {}, sha));
}
