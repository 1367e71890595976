/**
 * Send-to-delivery latency and throughput of /sync for N users in one room.
 *
 *   npm run bench -- [--users 50] [--rate 50] [--seconds 20] [--mode embedded|postgres|both]
 *                    [--transport poll|ws|both]
 *
 * Starts real server processes (the embedded default: one process on PGlite; postgres: two
 * processes on PostgreSQL + Redis from BENCH_DATABASE_URL / BENCH_REDIS_URL, defaulting to the
 * TEST_ ones), registers N users who all join one room and long-poll /sync (or, with
 * --transport ws, hold a WebSocket to /_conclave/client/v1/sync), then one sender
 * posts messages at the given rate. Every recipient records when each message arrived; the
 * table gives p50/p99 over every (message, recipient) pair and the delivered events per second.
 * Loopback only.
 */
import os from 'node:os';
import { parseArgs } from 'node:util';
import WebSocket from 'ws';
import { api, cpuSecondsOf, percentile, startServers } from './common.ts';

const { values } = parseArgs({
  options: {
    users: { type: 'string', default: '50' },
    rate: { type: 'string', default: '50' },
    seconds: { type: 'string', default: '20' },
    mode: { type: 'string', default: 'both' },
    transport: { type: 'string', default: 'both' },
  },
});
/** How recipients receive: long-polling /sync, or the WebSocket transport (our extension). */
type Transport = 'poll' | 'ws';
const TRANSPORTS: Transport[] =
  values.transport === 'both' ? ['poll', 'ws'] : [values.transport === 'ws' ? 'ws' : 'poll'];
const USERS = Number(values.users);
const RATE = Number(values.rate);
const SECONDS = Number(values.seconds);
const V3 = '/_matrix/client/v3';
const now = () => performance.timeOrigin + performance.now();

interface Result {
  mode: string;
  samples: number;
  expected: number;
  p50: number;
  p99: number;
  max: number;
  sentPerSecond: number;
  deliveredPerSecond: number;
  /** CPU used while sending and delivering, in cores: the bench's own clients, and the servers. */
  clientCores: number;
  serverCores: number;
  /** Sync responses (or frames) the recipients received, and their mean size in bytes. */
  responses: number;
  meanResponseBytes: number;
}

async function run(mode: 'embedded' | 'postgres', transport: Transport): Promise<Result> {
  // One sender at 50 messages a second is the point here, not a flood to refuse.
  const servers = await startServers(mode, { CONCLAVE_RATE_LIMITS: 'off' });
  try {
    const users: Array<{ base: string; token: string; userId: string }> = [];
    for (let i = 0; i < USERS; i++) {
      const base = servers.bases[i % servers.bases.length]!;
      const r = await api(base, 'POST', `${V3}/register`, undefined, {
        username: `user${i}`,
        password: 'bench password 123',
        auth: { type: 'm.login.dummy' },
      });
      users.push({ base, token: r.access_token, userId: r.user_id });
    }
    const sender = users[0]!;
    const room = await api(sender.base, 'POST', `${V3}/createRoom`, sender.token, { preset: 'public_chat' });
    const roomId: string = room.room_id;
    for (const u of users.slice(1))
      await api(u.base, 'POST', `${V3}/join/${encodeURIComponent(roomId)}`, u.token, {});

    const latencies: number[] = [];
    let delivered = 0;
    // What the recipients received, to tell a few large responses from many small ones.
    let responses = 0;
    let responseBytes = 0;
    let stopping = false;
    const filter = encodeURIComponent(JSON.stringify({ room: { timeline: { limit: 1000 } } }));
    const recipients = users.slice(1);
    const failures: string[] = [];
    // Every recipient finishes its initial sync before the first message is sent, so each
    // message reaches every recipient through an incremental sync and is counted.
    let ready = 0;
    // biome-ignore lint/suspicious/noExplicitAny: a loose client for the benchmark
    const record = (r: Record<string, any>) => {
      const arrived = now();
      for (const e of r.rooms?.join?.[roomId]?.timeline?.events ?? []) {
        if (e.type === 'm.room.message' && typeof e.content.sent_at_us === 'number') {
          latencies.push(arrived - e.content.sent_at_us / 1000);
          delivered++;
        }
      }
    };
    const sockets: WebSocket[] = [];
    const loops = recipients.map(async (u) => {
      let since: string = (await api(u.base, 'GET', `${V3}/sync?filter=${filter}`, u.token)).next_batch;
      if (transport === 'ws') {
        // Frames from the token of the initial sync on: each new message arrives as a frame.
        const socket = new WebSocket(
          `${u.base.replace('http', 'ws')}/_conclave/client/v1/sync?since=${since}&filter=${filter}`,
          { headers: { authorization: `Bearer ${u.token}` } },
        );
        sockets.push(socket);
        await new Promise<void>((resolve, reject) => {
          socket.once('open', () => resolve());
          socket.once('error', reject);
        });
        socket.on('message', (data) => {
          const text = String(data);
          responses++;
          responseBytes += text.length;
          // biome-ignore lint/suspicious/noExplicitAny: a loose client for the benchmark
          const frame = JSON.parse(text) as Record<string, any>;
          if (frame.type === 'sync') record(frame);
        });
        ready++;
        await new Promise<void>((resolve) => socket.once('close', () => resolve()));
        return;
      }
      ready++;
      while (!stopping) {
        const r = await api(
          u.base,
          'GET',
          `${V3}/sync?since=${since}&timeout=5000&filter=${filter}`,
          u.token,
        );
        responses++;
        responseBytes += JSON.stringify(r).length;
        record(r);
        since = r.next_batch;
      }
    });
    void Promise.allSettled(loops).then((results) => {
      for (const r of results)
        if (r.status === 'rejected') failures.push(`loop: ${String(r.reason).slice(0, 200)}`);
    });
    while (ready < recipients.length) await new Promise((r) => setTimeout(r, 50));
    await new Promise((r) => setTimeout(r, 200));

    const total = RATE * SECONDS;
    const clientCpuAtStart = process.cpuUsage();
    const serverCpuAtStart = servers.pids.map(cpuSecondsOf);
    const startedAt = now();
    let sent = 0;
    const sends: Promise<unknown>[] = [];
    for (let i = 0; i < total; i++) {
      const due = startedAt + (i * 1000) / RATE;
      const wait = due - now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      sends.push(
        api(
          sender.base,
          'PUT',
          `${V3}/rooms/${encodeURIComponent(roomId)}/send/m.room.message/b${i}`,
          sender.token,
          {
            msgtype: 'm.text',
            body: `bench ${i}`,
            // Event content must be integers (canonical JSON): microseconds since the epoch.
            sent_at_us: Math.round(now() * 1000),
          },
        ).then(() => {
          sent++;
        }),
      );
    }
    await Promise.all(sends);
    const sendSeconds = (now() - startedAt) / 1000;
    const expected = total * recipients.length;
    const deadline = now() + 15_000;
    while (delivered < expected && now() < deadline) await new Promise((r) => setTimeout(r, 100));
    const deliverSeconds = (now() - startedAt) / 1000;
    const clientCpu = process.cpuUsage(clientCpuAtStart);
    const clientCores = (clientCpu.user + clientCpu.system) / 1e6 / deliverSeconds;
    const serverCores =
      servers.pids.reduce((sum, pid, i) => sum + cpuSecondsOf(pid) - serverCpuAtStart[i]!, 0) /
      deliverSeconds;
    stopping = true;
    for (const socket of sockets) socket.close();
    await Promise.race([Promise.allSettled(loops), new Promise((r) => setTimeout(r, 6000))]);
    latencies.sort((a, b) => a - b);
    if (failures.length > 0) console.error(`${failures.length} failed syncs, e.g. ${failures[0]}`);
    return {
      mode: `${mode === 'embedded' ? 'embedded (PGlite, 1 process)' : 'PostgreSQL + Redis, 2 processes'}, ${transport === 'ws' ? 'WebSocket' : '/sync long-poll'}`,
      samples: latencies.length,
      expected,
      p50: percentile(latencies, 50),
      p99: percentile(latencies, 99),
      max: latencies.at(-1) ?? Number.NaN,
      sentPerSecond: sent / sendSeconds,
      deliveredPerSecond: delivered / deliverSeconds,
      clientCores,
      serverCores,
      responses,
      meanResponseBytes: responses > 0 ? responseBytes / responses : 0,
    };
  } finally {
    await servers.stop();
  }
}

const modes: Array<'embedded' | 'postgres'> =
  values.mode === 'both' ? ['embedded', 'postgres'] : [values.mode as 'embedded' | 'postgres'];
const results: Result[] = [];
for (const mode of modes) for (const transport of TRANSPORTS) results.push(await run(mode, transport));
console.log(
  `\n${USERS} users in one room, ${RATE} messages/s for ${SECONDS} s, on ${os.cpus().length} cores\n`,
);
console.log(
  '| set-up | deliveries | p50 ms | p99 ms | max ms | sent/s | delivered events/s | CPU cores: clients / servers | responses (mean bytes) |',
);
console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- |');
for (const r of results) {
  console.log(
    `| ${r.mode} | ${r.samples}/${r.expected} | ${r.p50.toFixed(1)} | ${r.p99.toFixed(1)} | ${r.max.toFixed(1)} | ${r.sentPerSecond.toFixed(1)} | ${r.deliveredPerSecond.toFixed(0)} | ${r.clientCores.toFixed(2)} / ${r.serverCores.toFixed(2)} | ${r.responses} (${r.meanResponseBytes.toFixed(0)}) |`,
  );
}
