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

function runCell(code, cap) {
  n += 1;
  let value = null, error = null;
  try {
    const v = vm.runInContext(code, ctx, {filename: `<cell ${n}>`});
    if (v !== undefined) value = util.inspect(v).slice(0, cap);
  } catch (e) {
    const name = (e && e.name) || typeof e;
    const message = (e && e.message !== undefined) ? String(e.message) : String(e);
    const stack = (e && e.stack) ? String(e.stack) : `${name}: ${message}`;
    error = {name, message: message.slice(0, cap), traceback: stack.slice(-cap)};
  }
  return {value, error};
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
    writeAll(res, Buffer.from(JSON.stringify(out) + '\n'));
  }
}
