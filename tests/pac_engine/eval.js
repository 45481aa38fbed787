// Evaluates a PAC file in a real PAC engine: pac-resolver (the engine of
// Node's proxy-agent stack) running the PAC in QuickJS, with the standard
// PAC functions (shExpMatch, dnsDomainIs, isInNet, ...).
//
// Input on stdin, one JSON object:
//   {"pac": "<PAC text>", "cases": [{"url": "http://x/", "host": "x"}, ...]}
// Output on stdout, one JSON object:
//   {"results": [{"url": ..., "host": ..., "result": "PROXY ...", "lookups": [...]}, ...]}
//
// `host` is handed to FindProxyForURL exactly as given (browsers pass the
// host unchanged, trailing dot included). `lookups` lists every call the PAC
// made that needs DNS: dnsResolve or isResolvable on a name, myIpAddress, and
// isInNet on a host that is not an IPv4 literal. Those calls are answered
// here without touching the network (a name never resolves), so the
// evaluation is hermetic.
//
// Installed by scripts/install-test-deps.sh (`npm ci` in this folder).
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { createPacResolver, sandbox } from 'pac-resolver';
import { QuickJS } from 'quickjs-wasi';

async function main() {
  const input = JSON.parse(readFileSync(0, 'utf8'));
  // With no argument, quickjs-wasi loads the quickjs.wasm it ships.
  const qjs = await QuickJS.create();

  let lookups = [];
  const note = (what) => lookups.push(what);
  const overrides = {
    dnsResolve: async function dnsResolve(host) {
      if (isIP(String(host))) return String(host);
      note(`dnsResolve(${host})`);
      return null;
    },
    isResolvable: async function isResolvable(host) {
      if (isIP(String(host))) return true;
      note(`isResolvable(${host})`);
      return false;
    },
    myIpAddress: async function myIpAddress() {
      note('myIpAddress()');
      return '127.0.0.1';
    },
    isInNet: async function isInNet(host, pattern, mask) {
      if (isIP(String(host)) !== 4) {
        note(`isInNet(${host}, ${pattern}, ${mask})`);
        return false;
      }
      return sandbox.isInNet(host, pattern, mask);
    },
  };
  const find = createPacResolver(qjs, input.pac, { sandbox: overrides });

  const results = [];
  for (const c of input.cases) {
    lookups = [];
    let result;
    try {
      result = await find(c.url, c.host);
    } catch (err) {
      result = `ERROR: ${err && err.message ? err.message : String(err)}`;
    }
    results.push({ url: c.url, host: c.host, result, lookups });
  }
  process.stdout.write(JSON.stringify({ engine: 'pac-resolver 9 / quickjs-wasi', results }) + '\n');
}

main().catch((err) => {
  process.stderr.write(`eval.js: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
