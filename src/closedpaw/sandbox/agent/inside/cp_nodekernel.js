// A persistent node interpreter for stateful code cells, started by the ClosedPaw agent.
// Each line on the control fd is a JSON cell {"code", "value_cap"}; it runs with the `vm`
// module in one context shared by every cell; prints go to this process's stdout/stderr; one
// JSON line goes to the result fd: the inspected value of the completion (unless undefined)
// or the error with its stack.
'use strict';
const fs = require('fs');
const vm = require('vm');
const util = require('util');
const ctl = Number(process.argv[2]);
const res = Number(process.argv[3]);
const ctx = vm.createContext({console, require, process, Buffer, setTimeout, clearTimeout,
  setInterval, clearInterval, URL, TextEncoder, TextDecoder});
let pending = Buffer.alloc(0);
const chunk = Buffer.alloc(65536);
let n = 0;

function writeAll(fd, buf) {
  let off = 0;
  while (off < buf.length) off += fs.writeSync(fd, buf, off);
}

// Lone UTF-16 surrogates (made by a cell, or by cutting a string inside a pair) become
// U+FFFD: every text leaves as valid UTF-8.
const LONE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;
function wellFormed(s) { return s.replace(LONE, '\ufffd'); }
function isHigh(c) { return c >= 0xd800 && c <= 0xdbff; }
// The first `keep` code units (or the last, with tail), never half a surrogate pair.
function head(s, keep) { return s.slice(0, keep > 0 && isHigh(s.charCodeAt(keep - 1)) ? keep - 1 : keep); }
function tail(s, keep) {
  const start = s.length - keep;
  return s.slice(start > 0 && isHigh(s.charCodeAt(start - 1)) ? start + 1 : start);
}
function marker(n) { return ` [closedpaw: ${n} characters cut] `; }
// At most `cap` code units of text, cut with a marker (a traceback keeps its end).
function capped(s, cap, atEnd) {
  s = wellFormed(s);
  if (s.length <= cap) return s;
  const kept = atEnd ? tail(s, cap) : head(s, cap);
  return atEnd ? marker(s.length - kept.length) + kept : kept + marker(s.length - kept.length);
}
// A property read or conversion of a thrown value may itself throw: never the kernel's end.
function safe(f, fallback) {
  try { return String(f()); } catch (_) { return fallback; }
}

function runCell(code, cap) {
  n += 1;
  let value = null, error = null;
  try {
    const v = vm.runInContext(code, ctx, {filename: `<cell ${n}>`});
    if (v !== undefined) value = capped(safe(() => util.inspect(v), '<the value could not be inspected>'), cap, false);
  } catch (e) {
    const name = safe(() => (e && e.name) || typeof e, 'Error');
    const message = safe(() => (e && e.message !== undefined) ? e.message : e, '<the error could not be converted to text>');
    const stack = safe(() => (e && e.stack) ? e.stack : `${name}: ${message}`, `${name}: ${message}`);
    error = {name: capped(name, 200, false), message: capped(message, cap, false), traceback: capped(stack, cap, true)};
  }
  return {value, error};
}

// One JSON line of at most LINE_CAP bytes: the longest text is halved, with a marker.
const LINE_CAP = 192 * 1024;
function fit(out) {
  for (;;) {
    const line = JSON.stringify(out);
    const spots = [[out, 'value']];
    if (out.error) for (const k of ['name', 'message', 'traceback']) spots.push([out.error, k]);
    let best = spots[0];
    for (const s of spots) if (String(s[0][s[1]] || '').length > String(best[0][best[1]] || '').length) best = s;
    const text = String(best[0][best[1]] || '');
    if (Buffer.byteLength(line) <= LINE_CAP || text.length < 128) return line;
    const keep = Math.floor(text.length / 2);
    const atEnd = best[1] === 'traceback';
    const kept = atEnd ? tail(text, keep) : head(text, keep);
    best[0][best[1]] = atEnd ? marker(text.length - kept.length) + kept : kept + marker(text.length - kept.length);
  }
}

for (;;) {
  let got;
  try {
    got = fs.readSync(ctl, chunk, 0, chunk.length, null);
  } catch (e) {
    if (e.code === 'EAGAIN') continue;
    throw e;
  }
  if (got === 0) break;
  pending = Buffer.concat([pending, chunk.subarray(0, got)]);
  let nl;
  while ((nl = pending.indexOf(10)) >= 0) {
    const req = JSON.parse(pending.subarray(0, nl).toString('utf8'));
    pending = pending.subarray(nl + 1);
    const out = runCell(String(req.code), Number(req.value_cap));
    writeAll(res, Buffer.from(fit(out) + '\n'));
  }
}
