/**
 * Federation benchmark: two Conclave processes on loopback (TLS federation with a CA made here,
 * embedded databases), as in test/federation-process.test.ts.
 *   npm run bench:federation -- [--seconds 10] [--members 1000]
 * 1. Send-to-delivery latency: alice on hs1 sends at 10 and then 50 messages per second; bob on
 *    hs2 long-polls /sync; latency is from just before the send request to the sync answer that
 *    carries the message (one clock: same machine).
 * 2. A room of `members` users on hs1; carol on hs2 joins it: the join's time, and hs2's resident
 *    memory before and at its peak (VmHWM).
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { makeTestCa, startHomeserverProcesses } from '../test/helpers/federation.ts';
import { api, percentile } from './common.ts';

const { values } = parseArgs({
  options: { seconds: { type: 'string', default: '10' }, members: { type: 'string', default: '1000' } },
});
const seconds = Number(values.seconds);
const members = Number(values.members);
const cleanups: Array<() => unknown> = [];
const t = { teardown: (fn: () => unknown) => cleanups.push(fn) };
const enc = encodeURIComponent;

function memoryOf(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (name: string) => Number(new RegExp(`${name}:\\s+(\\d+)`).exec(status)?.[1] ?? 0) / 1024;
  return { rss: kb('VmRSS'), peak: kb('VmHWM') };
}

async function register(base: string, username: string): Promise<{ user_id: string; access_token: string }> {
  return (await api(base, 'POST', '/_matrix/client/v3/register', undefined, {
    username,
    password: 'benchmark password',
    auth: { type: 'm.login.dummy' },
  })) as { user_id: string; access_token: string };
}

try {
  const ca = makeTestCa(t);
  // The log level stays at info: the helper waits for the "listening" lines.
  const [hs1, hs2] = await startHomeserverProcesses(t, ca, 2, () => ({
    CONCLAVE_RATE_LIMITS: 'off',
    CONCLAVE_REGISTRATIONS_PER_WINDOW: '1000000',
  }));
  if (!hs1 || !hs2) throw new Error('servers did not start');
  const alice = await register(hs1.base, 'alice');
  const bob = await register(hs2.base, 'bob');
  const { room_id: roomId } = await api(
    hs1.base,
    'POST',
    '/_matrix/client/v3/createRoom',
    alice.access_token,
    {
      preset: 'public_chat',
    },
  );
  await api(
    hs2.base,
    'POST',
    `/_matrix/client/v3/join/${enc(roomId)}?server_name=${enc(hs1.serverName)}`,
    bob.access_token,
    {},
  );

  console.log(
    `\nFederation: two Conclave processes (embedded databases), TLS on loopback, ${new Date().toISOString()}\n`,
  );
  console.log('| rate | sent | delivered | p50 ms | p99 ms | max ms |');
  console.log('| --- | --- | --- | --- | --- | --- |');
  let since = (await api(hs2.base, 'GET', '/_matrix/client/v3/sync?timeout=0', bob.access_token))
    .next_batch as string;
  for (const rate of [10, 50]) {
    const sentAt = new Map<string, number>();
    const latencies: number[] = [];
    let polling = true;
    let lastSend = performance.now();
    const poller = (async () => {
      while (polling || latencies.length < sentAt.size) {
        const r = await api(
          hs2.base,
          'GET',
          // A timeline limit above any batch: a limited timeline would hide delivered messages.
          `/_matrix/client/v3/sync?timeout=2000&since=${since}&filter=${enc(JSON.stringify({ room: { timeline: { limit: 1000 } } }))}`,
          bob.access_token,
        );
        since = r.next_batch as string;
        const now = performance.now();
        for (const e of r.rooms?.join?.[roomId]?.timeline?.events ?? []) {
          const at = sentAt.get(e.content?.body);
          if (at !== undefined) latencies.push(now - at);
        }
        if (!polling && performance.now() - lastSend > 30_000) break;
      }
    })();
    const total = rate * seconds;
    const started = performance.now();
    const sends: Promise<unknown>[] = [];
    for (let i = 0; i < total; i++) {
      const due = started + (i * 1000) / rate;
      const wait = due - performance.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      const body = `m${rate}-${i}`;
      sentAt.set(body, performance.now());
      lastSend = performance.now();
      sends.push(
        api(
          hs1.base,
          'PUT',
          `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/${body}`,
          alice.access_token,
          { msgtype: 'm.text', body },
        ),
      );
    }
    await Promise.all(sends);
    polling = false;
    await poller;
    latencies.sort((a, b) => a - b);
    const f = (x: number) => x.toFixed(0);
    console.log(
      `| ${rate} msg/s | ${total} | ${latencies.length} | ${f(percentile(latencies, 50))} | ${f(percentile(latencies, 99))} | ${f(latencies.at(-1) ?? 0)} |`,
    );
  }

  // A large room on hs1, joined from hs2.
  const owner = await register(hs1.base, 'owner');
  const { room_id: bigRoom } = await api(
    hs1.base,
    'POST',
    '/_matrix/client/v3/createRoom',
    owner.access_token,
    { preset: 'public_chat' },
  );
  const fillStart = performance.now();
  const batch = 8;
  for (let i = 0; i < members; i += batch) {
    await Promise.all(
      Array.from({ length: Math.min(batch, members - i) }, async (_, j) => {
        const u = await register(hs1.base, `member${i + j}`);
        await api(hs1.base, 'POST', `/_matrix/client/v3/join/${enc(bigRoom)}`, u.access_token, {});
      }),
    );
  }
  const fillSeconds = (performance.now() - fillStart) / 1000;
  const carol = await register(hs2.base, 'carol');
  const pid = hs2.proc.child.pid!;
  const before = memoryOf(pid);
  const joinStart = performance.now();
  await api(
    hs2.base,
    'POST',
    `/_matrix/client/v3/join/${enc(bigRoom)}?server_name=${enc(hs1.serverName)}`,
    carol.access_token,
    {},
  );
  const joinMs = performance.now() - joinStart;
  const after = memoryOf(pid);
  console.log(
    `\nA room of ${members + 1} members on hs1 (filled in ${fillSeconds.toFixed(0)} s); carol on hs2 joins it:`,
  );
  console.log(
    `  join: ${(joinMs / 1000).toFixed(2)} s; hs2 RSS ${before.rss.toFixed(0)} MB before, ${after.rss.toFixed(0)} MB after, peak ${after.peak.toFixed(0)} MB (peak before the join: ${before.peak.toFixed(0)} MB)`,
  );
} finally {
  for (const fn of cleanups.reverse()) await fn();
}
