#!/usr/bin/env node
// Compiles every tests/contracts/*.sol with the pinned solc-js (tools/node_modules/solc), offline,
// into tests/.build/contracts.json: { hash, solc, contracts: { Name: { abi, bytecode, methods } } }.
// Skips the work when the sources, the compiler version and the settings hash the same as last time.
// Usage: node tests/contracts/compile.js [--force]
'use strict';

const fs = require('fs');
const path = require('path');
const crypto = require('crypto');

const here = __dirname;
const root = path.resolve(here, '..', '..');
const outDir = path.join(root, 'tests', '.build');
const outFile = path.join(outDir, 'contracts.json');
const solc = require(path.join(root, 'tools', 'node_modules', 'solc'));

const settings = {
  optimizer: { enabled: true, runs: 200 },
  evmVersion: 'cancun',
  outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.methodIdentifiers'] } },
};

const files = fs.readdirSync(here).filter((f) => f.endsWith('.sol')).sort();
if (files.length === 0) {
  console.error('compile.js: no .sol files in ' + here);
  process.exit(1);
}
const sources = {};
for (const f of files) sources[f] = { content: fs.readFileSync(path.join(here, f), 'utf8') };

const hash = crypto.createHash('sha256')
  .update(JSON.stringify({ sources, settings, solc: solc.version() }))
  .digest('hex');

if (!process.argv.includes('--force') && fs.existsSync(outFile)) {
  try {
    if (JSON.parse(fs.readFileSync(outFile, 'utf8')).hash === hash) {
      console.log('compile.js: up to date (' + outFile + ')');
      process.exit(0);
    }
  } catch (e) { /* recompile */ }
}

const output = JSON.parse(solc.compile(JSON.stringify({ language: 'Solidity', sources, settings })));
const errors = (output.errors || []).filter((e) => e.severity === 'error');
for (const e of output.errors || []) console.error(e.formattedMessage || e.message);
if (errors.length) {
  console.error('compile.js: ' + errors.length + ' error(s)');
  process.exit(1);
}

const contracts = {};
for (const [file, byName] of Object.entries(output.contracts || {})) {
  for (const [name, c] of Object.entries(byName)) {
    if (!c.evm.bytecode.object) continue; // interfaces / abstract contracts
    contracts[name] = {
      source: file,
      abi: c.abi,
      bytecode: '0x' + c.evm.bytecode.object,
      methods: c.evm.methodIdentifiers,
    };
  }
}

fs.mkdirSync(outDir, { recursive: true });
const tmp = outFile + '.tmp' + process.pid;
fs.writeFileSync(tmp, JSON.stringify({ hash, solc: solc.version(), contracts }, null, 1));
fs.renameSync(tmp, outFile);
console.log('compile.js: compiled ' + Object.keys(contracts).join(', ') + ' with solc ' + solc.version());
