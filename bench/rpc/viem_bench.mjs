// bench/rpc/viem_bench.mjs — the client-side baselines of `make bench-rpc` (P3), run by run.py.
//
// Reads one JSON config on stdin:
//   {url, chainId, multicall, token, staking, delegate, wallets: [...], sizes: [200, 2000],
//    reps: 15, modes: ["viem_slices200", "viem_default", "naive"]}
// and prints one JSON document on stdout: for every (mode, N) the wall time of each repetition
// (ms, performance.now() around the whole read of N wallets, after one untimed warm-up), the HTTP
// requests each repetition sent (viem http transport onFetchRequest) and the sum of all values read
// (a cross-check against the extension's answer).
//
// Modes (all read balanceOf + totalStakedFor + getTotalDelegatorStake of every wallet):
//   viem_slices200  client.multicall({contracts: 600 calls, allowFailure: true, batchSize: 0}) per
//                   200-holder slice, slices one after the other (the extension's chunking);
//   viem_default    one client.multicall({contracts: all 3N calls}) with viem's defaults
//                   (allowFailure true, batchSize 1024 calldata bytes per aggregate3, the chunks
//                   sent concurrently);
//   naive           3N plain eth_calls (client.readContract), one after the other.
import { createPublicClient, http, parseAbi } from 'viem';

const input = await new Promise((resolve, reject) => {
  let s = '';
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (d) => { s += d; });
  process.stdin.on('end', () => resolve(s));
  process.stdin.on('error', reject);
});
const cfg = JSON.parse(input);

const abi = parseAbi([
  'function balanceOf(address) view returns (uint256)',
  'function totalStakedFor(address) view returns (uint256)',
  'function getTotalDelegatorStake(address) view returns (uint256)',
]);

let fetches = 0;
const chain = {
  id: cfg.chainId,
  name: 'anvil',
  nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 },
  rpcUrls: { default: { http: [cfg.url] } },
  contracts: { multicall3: { address: cfg.multicall } },
};
const client = createPublicClient({
  chain,
  transport: http(cfg.url, { retryCount: 0, timeout: 300_000, onFetchRequest: () => { fetches += 1; } }),
});

function callsFor(wallets) {
  const out = [];
  for (const w of wallets) {
    out.push({ address: cfg.token, abi, functionName: 'balanceOf', args: [w] });
    out.push({ address: cfg.staking, abi, functionName: 'totalStakedFor', args: [w] });
    out.push({ address: cfg.delegate, abi, functionName: 'getTotalDelegatorStake', args: [w] });
  }
  return out;
}

function sumResults(results) {
  let s = 0n;
  let failed = 0;
  for (const r of results) {
    if (r.status === 'success') s += r.result;
    else failed += 1;
  }
  return { sum: s, failed };
}

const MODES = {
  async viem_slices200(wallets) {
    let sum = 0n;
    let failed = 0;
    for (let i = 0; i < wallets.length; i += 200) {
      const res = await client.multicall({
        contracts: callsFor(wallets.slice(i, i + 200)), allowFailure: true, batchSize: 0,
      });
      const r = sumResults(res);
      sum += r.sum;
      failed += r.failed;
    }
    return { sum, failed };
  },
  async viem_default(wallets) {
    return sumResults(await client.multicall({ contracts: callsFor(wallets) }));
  },
  async naive(wallets) {
    let sum = 0n;
    for (const c of callsFor(wallets)) {
      sum += await client.readContract(c);
    }
    return { sum, failed: 0 };
  },
};

const out = { viem: null, results: [] };
try {
  const pkg = await import('viem/package.json', { with: { type: 'json' } });
  out.viem = pkg.default.version;
} catch {
  out.viem = '?';
}
for (const mode of cfg.modes) {
  for (const n of cfg.sizes) {
    if (mode === 'naive' && cfg.naiveMax && n > cfg.naiveMax) continue;
    const wallets = cfg.wallets.slice(0, n);
    await MODES[mode](wallets); // warm-up (untimed)
    const times = [];
    const requests = [];
    let check = null;
    for (let r = 0; r < cfg.reps; r++) {
      fetches = 0;
      const t0 = performance.now();
      const res = await MODES[mode](wallets);
      times.push(performance.now() - t0);
      requests.push(fetches);
      check = res;
    }
    out.results.push({
      mode, n, times_ms: times, requests, sum: check.sum.toString(), failed: check.failed,
    });
    process.stderr.write(`viem ${mode} N=${n}: median ${times.slice().sort((a, b) => a - b)[times.length >> 1].toFixed(1)} ms, ${requests[0]} requests\n`);
  }
}
process.stdout.write(JSON.stringify(out));
