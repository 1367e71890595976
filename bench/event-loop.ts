/**
 * Can one request hold the event loop? GET /versions latency while the heaviest request of each
 * kind runs back to back.
 *
 *   npx tsx bench/event-loop.ts [--seconds 5] [--mode embedded|postgres] [--claim N]
 *                               [--upload N] [--query-users N] [--to-device-users N]
 *
 * Starts a real server process, then for each kind of request (a /keys/claim naming N devices, a
 * /keys/upload of N signed one-time keys, a /keys/query naming N users, a /sendToDevice to every
 * device of N users, a filter upload with the longest lists) one attacker sends it again and
 * again for the given time while a prober sends GET /_matrix/client/versions every 10 ms. Prints,
 * per kind, the probe latency p50/p99/max and how long the attacker's requests took and what they
 * answered. The defaults are the server's own limits (spec/limits.md): the largest requests it
 * accepts. Larger sizes (the issue measured a 30,000-device claim and a 4,172-key upload) show
 * how fast an over-limit request is refused. Loopback only.
 */
import os from 'node:os';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';
import { oneTimeKeys, testDevice } from '../test/helpers/e2ee.ts';
import { api, percentile, startServers } from './common.ts';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '5' },
    mode: { type: 'string', default: 'embedded' },
    claim: { type: 'string', default: '1000' },
    upload: { type: 'string', default: '100' },
    'query-users': { type: 'string', default: '1000' },
    'to-device-users': { type: 'string', default: '1000' },
  },
});
const SECONDS = Number(values.seconds);
const V3 = '/_matrix/client/v3';
const SERVER = 'bench.test';

interface Attack {
  name: string;
  /** Sends one request; resolves with its HTTP status. */
  send(): Promise<number>;
}

interface Row {
  name: string;
  probes: number;
  p50: number;
  p99: number;
  max: number;
  requests: number;
  requestMs: number;
  statuses: string;
}

/** How long the last attacker request took, from sending to the end of the answer (not building it). */
let lastRequestMs = 0;

async function raw(base: string, method: string, url: string, token: string, body: unknown): Promise<number> {
  const payload = JSON.stringify(body);
  const start = performance.now();
  const res = await fetch(`${base}${url}`, {
    method,
    headers: { authorization: `Bearer ${token}` },
    body: payload,
  });
  await res.arrayBuffer();
  lastRequestMs = performance.now() - start;
  return res.status;
}

/**
 * The prober runs in a worker thread, with an event loop of its own, so that the time this
 * process spends building the attacker's requests (thousands of signatures) does not count.
 */
const PROBER = `
const { parentPort, workerData } = require('node:worker_threads');
let stopping = false;
parentPort.on('message', () => { stopping = true; });
const probes = [];
(async () => {
  while (!stopping) {
    const start = performance.now();
    const res = await fetch(workerData.url);
    await res.arrayBuffer();
    probes.push(performance.now() - start);
    await new Promise((r) => setTimeout(r, 10));
  }
  parentPort.postMessage(probes);
})();
`;

/** Runs `attack` back to back for SECONDS while probing /versions; the probe and attack figures. */
async function measure(base: string, attack: Attack): Promise<Row> {
  const worker = new Worker(PROBER, { eval: true, workerData: { url: `${base}/_matrix/client/versions` } });
  const probed = new Promise<number[]>((resolve) => worker.once('message', resolve));
  const durations: number[] = [];
  const statuses = new Map<number, number>();
  const started = performance.now();
  // At least one request, even when it outlasts the time given.
  while (durations.length === 0 || performance.now() - started < SECONDS * 1000) {
    lastRequestMs = 0;
    const status = await attack.send();
    durations.push(lastRequestMs);
    statuses.set(status, (statuses.get(status) ?? 0) + 1);
  }
  worker.postMessage('stop');
  const probes = (await probed).sort((a, b) => a - b);
  await worker.terminate();
  durations.sort((a, b) => a - b);
  return {
    name: attack.name,
    probes: probes.length,
    p50: percentile(probes, 50),
    p99: percentile(probes, 99),
    max: probes.at(-1) ?? Number.NaN,
    requests: durations.length,
    requestMs: percentile(durations, 50),
    statuses: [...statuses].map(([s, n]) => `${s}×${n}`).join(' '),
  };
}

const servers = await startServers(values.mode === 'postgres' ? 'postgres' : 'embedded', {
  // The point is the cost of one request, not the rate limits: let the attacker through.
  CONCLAVE_RATE_LIMITS: 'off',
});
try {
  const base = servers.bases[0]!;
  const register = async (username: string) =>
    api(base, 'POST', `${V3}/register`, undefined, {
      username,
      password: 'bench password 123',
      auth: { type: 'm.login.dummy' },
    });
  const attacker = await register('mallory');
  const token: string = attacker.access_token;
  const device = testDevice(attacker as { user_id: string; device_id: string });
  await api(base, 'POST', `${V3}/keys/upload`, token, { device_keys: device.deviceKeys });

  const claimN = Number(values.claim);
  const uploadN = Number(values.upload);
  const queryN = Number(values['query-users']);
  const toDeviceN = Number(values['to-device-users']);
  const users = (n: number) => Array.from({ length: n }, (_, i) => `@user${i}:${SERVER}`);
  let round = 0;

  const attacks: Attack[] = [
    {
      name: `/keys/claim, ${claimN} devices`,
      send: () => {
        const devices: Record<string, string> = {};
        for (let i = 0; i < claimN; i++) devices[`DEV${i}`] = 'signed_curve25519';
        return raw(base, 'POST', `${V3}/keys/claim`, token, {
          one_time_keys: { [attacker.user_id]: devices },
        });
      },
    },
    {
      name: `/keys/upload, ${uploadN} signed one-time keys`,
      send: () => {
        round++;
        const ids = Array.from({ length: uploadN }, (_, i) => `r${round}k${i}`);
        return raw(base, 'POST', `${V3}/keys/upload`, token, { one_time_keys: oneTimeKeys(device, ids) });
      },
    },
    {
      name: `/keys/query, ${queryN} users`,
      send: () =>
        raw(base, 'POST', `${V3}/keys/query`, token, {
          device_keys: Object.fromEntries(users(queryN).map((u) => [u, ['A', 'B', 'C']])),
        }),
    },
    {
      name: `/sendToDevice, every device of ${toDeviceN} users`,
      send: () => {
        round++;
        const messages = Object.fromEntries(
          [attacker.user_id, ...users(toDeviceN - 1)].map((u) => [u, { '*': { n: round } }]),
        );
        return raw(base, 'PUT', `${V3}/sendToDevice/m.bench/t${round}`, token, { messages });
      },
    },
    {
      name: 'filter upload, 1000 entries in three lists (~56 KB)',
      send: () => {
        const list = users(1000);
        return raw(base, 'POST', `${V3}/user/${encodeURIComponent(attacker.user_id)}/filter`, token, {
          room: {
            rooms: list.map((_, i) => `!room${i}:${SERVER}`),
            timeline: { types: list.map((_, i) => `m.type.${i}`), senders: list },
          },
        });
      },
    },
  ];

  const rows: Row[] = [
    await measure(base, {
      name: 'idle (no attacker)',
      send: () => new Promise<number>((r) => setTimeout(() => r(0), 100)),
    }),
  ];
  for (const attack of attacks) rows.push(await measure(base, attack));

  console.log(
    `\n/versions latency while each request runs back to back for ${SECONDS} s, on ${os.cpus().length} cores`,
  );
  console.log(`(${values.mode === 'postgres' ? 'PostgreSQL' : 'embedded PGlite'})\n`);
  console.log('| request | probes | p50 ms | p99 ms | max ms | requests | request p50 ms | statuses |');
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const r of rows) {
    console.log(
      `| ${r.name} | ${r.probes} | ${r.p50.toFixed(1)} | ${r.p99.toFixed(1)} | ${r.max.toFixed(1)} | ${r.requests} | ${r.requestMs.toFixed(0)} | ${r.statuses} |`,
    );
  }
} finally {
  await servers.stop();
}
