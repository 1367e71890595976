/**
 * One abusive client runs every attack the detectors watch for while normal users chat.
 *
 *   npm run bench:abuse -- [--users 50] [--rate 20] [--seconds 25] [--transport poll|ws]
 *
 * Starts a real server process (embedded PGlite, rate limits on, detection on with the thresholds
 * below, alerts POSTed to a webhook this script serves on 127.0.0.1). Normal users, each from an
 * address of its own on the loopback network (127.0.1.x), sit in one room, sync (long-poll, or the
 * WebSocket), and send messages at `rate` a second between them. Meanwhile the attacker, from
 * other loopback addresses, runs each attack at once, each from an account of its own: failed
 * logins against one account, failed logins from one address, a registration burst, a message
 * flood (in the normal users' room), invites of strangers, a join flood, a room-creation flood, a
 * key-query flood, a to-device flood, and logins of one account from many addresses. It prints the
 * normal users' delivery latency (p50, p99), whether any normal user got a 429/401/403 or was
 * named by an alert, and which detectors fired. The per-user baselines need minutes of history
 * and are not exercised here (test/detection-baseline.test.ts covers them).
 */
import http from 'node:http';
import os from 'node:os';
import { parseArgs } from 'node:util';
import WebSocket from 'ws';
import { cpuSecondsOf, percentile, startServers } from './common.ts';

const { values } = parseArgs({
  options: {
    users: { type: 'string', default: '50' },
    rate: { type: 'string', default: '20' },
    seconds: { type: 'string', default: '25' },
    transport: { type: 'string', default: 'poll' },
  },
});
const USERS = Number(values.users);
const RATE = Number(values.rate);
const SECONDS = Number(values.seconds);
const WS = values.transport === 'ws';
const V3 = '/_matrix/client/v3';
const PASSWORD = 'bench password 123';
const enc = encodeURIComponent;
const now = () => performance.timeOrigin + performance.now();

/** Thresholds an attack reaches within seconds, far above what a chatting user does. */
const DETECTION_ENV = {
  CONCLAVE_DETECTION: 'on',
  // The attacker's addresses are throttled too (off by default: behind a proxy all share one).
  CONCLAVE_DETECT_FAILED_LOGINS_ADDRESS_RESPONSES: 'throttle,notify',
  CONCLAVE_DETECT_REGISTRATIONS_ADDRESS_RESPONSES: 'throttle,notify',
  CONCLAVE_LOGIN_FAILURES_PER_WINDOW: '10',
  CONCLAVE_DETECT_FAILED_LOGINS_ACCOUNT: '5,3600000',
  CONCLAVE_DETECT_FAILED_LOGINS_ADDRESS: '8,3600000',
  CONCLAVE_DETECT_MESSAGE_FLOOD: '100,60000',
  CONCLAVE_DETECT_INVITE_FLOOD: '20,600000',
  CONCLAVE_DETECT_JOIN_FLOOD: '10,600000',
  CONCLAVE_DETECT_ROOM_CREATION_FLOOD: '8,600000',
  CONCLAVE_DETECT_KEY_FLOOD: '100,60000',
  CONCLAVE_DETECT_TO_DEVICE_FLOOD: '150,60000',
};

// biome-ignore lint/suspicious/noExplicitAny: a loose client for the benchmark
type Json = Record<string, any>;
const agents = new Map<string, http.Agent>();

/** One request from a chosen loopback address; never throws on an HTTP error status. */
function call(base: string, from: string, method: string, path: string, token?: string, body?: unknown) {
  let agent = agents.get(from);
  if (!agent) {
    agent = new http.Agent({ keepAlive: true, localAddress: from } as http.AgentOptions);
    agents.set(from, agent);
  }
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise<{ status: number; json: Json }>((resolve, reject) => {
    const req = http.request(
      `${base}${path}`,
      {
        method,
        agent,
        headers: {
          ...(token ? { authorization: `Bearer ${token}` } : {}),
          ...(payload
            ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }
            : {}),
        },
      },
      (res) => {
        let data = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (data += c));
        res.on('end', () => {
          let json: Json = {};
          try {
            json = JSON.parse(data) as Json;
          } catch {
            // not JSON (the metrics)
            json = { text: data };
          }
          resolve({ status: res.statusCode ?? 0, json });
        });
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

async function ok(base: string, from: string, method: string, path: string, token?: string, body?: unknown) {
  const r = await call(base, from, method, path, token, body);
  if (r.status !== 200) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(r.json)}`);
  return r.json;
}

async function register(base: string, from: string, username: string) {
  const r = await ok(base, from, 'POST', `${V3}/register`, undefined, {
    username,
    password: PASSWORD,
    auth: { type: 'm.login.dummy' },
  });
  return {
    userId: r.user_id as string,
    token: r.access_token as string,
    deviceId: r.device_id as string,
    from,
  };
}

type Account = Awaited<ReturnType<typeof register>>;

// The webhook: every alert the server raises.
const alerts: Json[] = [];
const hook = http.createServer((req, res) => {
  let data = '';
  req.on('data', (c) => (data += c));
  req.on('end', () => {
    try {
      alerts.push(JSON.parse(data) as Json);
    } catch {
      // ignore
    }
    res.writeHead(204).end();
  });
});
await new Promise<void>((r) => hook.listen(0, '127.0.0.1', r));
const hookPort = (hook.address() as { port: number }).port;

const servers = await startServers('embedded', {
  CONCLAVE_DETECTION_WEBHOOK_URL: `http://127.0.0.1:${hookPort}/alerts`,
  CONCLAVE_METRICS_LISTEN: 'main',
  // The bench's own set-up registers many accounts; the registration detector still watches.
  CONCLAVE_REGISTRATIONS_PER_WINDOW: '100',
  ...DETECTION_ENV,
});
const base = servers.bases[0]!;
try {
  // Normal users, each from an address of its own.
  const users: Account[] = [];
  for (let i = 0; i < USERS; i++) users.push(await register(base, `127.0.1.${i + 1}`, `user${i}`));
  const roomId = (
    await ok(base, users[0]!.from, 'POST', `${V3}/createRoom`, users[0]!.token, { preset: 'public_chat' })
  ).room_id as string;
  for (const u of users.slice(1)) await ok(base, u.from, 'POST', `${V3}/join/${enc(roomId)}`, u.token, {});
  // The attacker's accounts (one per attack) and the strangers it will invite.
  const att = (n: number) => `127.0.2.${n}`;
  const [flooder, inviter, joiner, maker, keyer, pager] = await Promise.all(
    ['flooder', 'inviter', 'joiner', 'maker', 'keyer', 'pager', 'roamer'].map((n, i) =>
      register(base, att(i + 1), n),
    ),
  );
  await register(base, '127.0.3.1', 'victim');
  const strangers: Account[] = [];
  for (let i = 0; i < 25; i++) strangers.push(await register(base, `127.0.3.${i + 2}`, `stranger${i}`));
  await ok(base, flooder!.from, 'POST', `${V3}/join/${enc(roomId)}`, flooder!.token, {});
  const normalIds = new Set(users.map((u) => u.userId));
  const normalAddresses = new Set(users.map((u) => u.from));

  // Normal users receive.
  const latencies: number[] = [];
  const refusals: string[] = [];
  let delivered = 0;
  let stopping = false;
  const filter = enc(JSON.stringify({ room: { timeline: { limit: 1000 } } }));
  const record = (r: Json) => {
    const arrived = now();
    for (const e of r.rooms?.join?.[roomId]?.timeline?.events ?? []) {
      if (
        e.type === 'm.room.message' &&
        typeof e.content.sent_at_us === 'number' &&
        normalIds.has(e.sender)
      ) {
        latencies.push(arrived - e.content.sent_at_us / 1000);
        delivered++;
      }
    }
  };
  const sockets: WebSocket[] = [];
  let ready = 0;
  const loops = users.map(async (u) => {
    let since = (await ok(base, u.from, 'GET', `${V3}/sync?filter=${filter}`, u.token)).next_batch as string;
    if (WS) {
      const socket = new WebSocket(
        `${base.replace('http', 'ws')}/_conclave/client/v1/sync?since=${since}&filter=${filter}`,
        {
          headers: { authorization: `Bearer ${u.token}` },
          localAddress: u.from,
        },
      );
      sockets.push(socket);
      await new Promise<void>((resolve, reject) =>
        socket.once('open', () => resolve()).once('error', reject),
      );
      socket.on('message', (data) => {
        const frame = JSON.parse(String(data)) as Json;
        if (frame.type === 'sync') record(frame);
      });
      socket.on('close', (code) => {
        if (!stopping) refusals.push(`${u.userId}: websocket closed ${code}`);
      });
      ready++;
      return;
    }
    ready++;
    while (!stopping) {
      const r = await call(
        base,
        u.from,
        'GET',
        `${V3}/sync?since=${since}&timeout=5000&filter=${filter}`,
        u.token,
      );
      if (r.status !== 200) {
        refusals.push(`${u.userId}: sync ${r.status} ${r.json.errcode}`);
        await new Promise((res) => setTimeout(res, 200));
        continue;
      }
      record(r.json);
      since = r.json.next_batch;
    }
  });
  while (ready < users.length) await new Promise((r) => setTimeout(r, 50));

  // The attacks, all at once, each until the window ends.
  const attackCounts: Record<string, { ok: number; refused: number }> = {};
  const until = now() + SECONDS * 1000;
  const attack = async (name: string, step: (i: number) => Promise<{ status: number }>) => {
    const c = { ok: 0, refused: 0 };
    attackCounts[name] = c;
    for (let i = 0; now() < until; i++) {
      const r = await step(i);
      if (r.status === 200) c.ok++;
      else c.refused++;
      // Refused: the attacker backs off a little (as a script would), then tries again.
      if (r.status === 429) await new Promise((res) => setTimeout(res, 200));
    }
  };
  const badLogin = (from: string, user: string) =>
    call(base, from, 'POST', `${V3}/login`, undefined, {
      type: 'm.login.password',
      identifier: { type: 'm.id.user', user },
      password: 'not the password',
    });
  const own = async (who: typeof flooder) =>
    (await ok(base, who!.from, 'POST', `${V3}/createRoom`, who!.token, {})).room_id as string;
  const inviteRoom = await own(inviter);
  const joinRoom = (
    await ok(base, maker!.from, 'POST', `${V3}/createRoom`, maker!.token, { preset: 'public_chat' })
  ).room_id as string;
  const attacks = [
    attack('failed logins, one account (rotating addresses)', (i) =>
      badLogin(`127.0.4.${(i % 200) + 1}`, 'victim'),
    ),
    attack('failed logins, one address', (i) => badLogin('127.0.0.2', `nobody${i}`)),
    attack('registration burst, one address', (i) =>
      call(base, '127.0.0.3', 'POST', `${V3}/register`, undefined, {
        username: `sock${i}`,
        password: PASSWORD,
        auth: { type: 'm.login.dummy' },
      }),
    ),
    attack('message flood (in the chat room)', (i) =>
      call(
        base,
        flooder!.from,
        'PUT',
        `${V3}/rooms/${enc(roomId)}/send/m.room.message/f${i}`,
        flooder!.token,
        {
          msgtype: 'm.text',
          body: `spam ${i}`,
        },
      ),
    ),
    attack('invites of strangers', (i) =>
      call(base, inviter!.from, 'POST', `${V3}/rooms/${enc(inviteRoom)}/invite`, inviter!.token, {
        user_id: strangers[i % strangers.length]!.userId,
      }),
    ),
    attack('join flood (join, leave, join...)', (i) =>
      call(
        base,
        joiner!.from,
        'POST',
        `${V3}/rooms/${enc(joinRoom)}/${i % 2 ? 'leave' : 'join'}`,
        joiner!.token,
        {},
      ),
    ),
    attack('room-creation flood', () =>
      call(base, maker!.from, 'POST', `${V3}/createRoom`, maker!.token, {}),
    ),
    attack('key-query flood', () =>
      call(base, keyer!.from, 'POST', `${V3}/keys/query`, keyer!.token, {
        device_keys: { [users[0]!.userId]: [] },
      }),
    ),
    attack('to-device flood', (i) =>
      call(base, pager!.from, 'PUT', `${V3}/sendToDevice/m.bench/${i}`, pager!.token, {
        messages: { [strangers[0]!.userId]: { '*': { n: i } } },
      }),
    ),
    attack('logins from many addresses', async (i) => {
      const r = await call(base, `127.0.5.${(i % 50) + 1}`, 'POST', `${V3}/login`, undefined, {
        type: 'm.login.password',
        identifier: { type: 'm.id.user', user: 'roamer' }, // registered above
        password: PASSWORD,
      });
      await new Promise((res) => setTimeout(res, 500));
      return r;
    }),
  ];

  // Normal users chat: `RATE` messages a second between them, each from its own address.
  const serverCpuAtStart = servers.pids.map(cpuSecondsOf);
  const startedAt = now();
  let sent = 0;
  const sends: Promise<void>[] = [];
  for (let i = 0; now() < until; i++) {
    const due = startedAt + (i * 1000) / RATE;
    const wait = due - now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const u = users[i % users.length]!;
    sends.push(
      call(base, u.from, 'PUT', `${V3}/rooms/${enc(roomId)}/send/m.room.message/n${i}`, u.token, {
        msgtype: 'm.text',
        body: `hello ${i}`,
        sent_at_us: Math.round(now() * 1000),
      }).then((r) => {
        if (r.status === 200) sent++;
        else refusals.push(`${u.userId}: send ${r.status} ${r.json.errcode}`);
      }),
    );
  }
  await Promise.all(sends);
  await Promise.all(attacks);
  // Every user, the sender too, gets each message through its sync.
  const expected = sent * users.length;
  const deadline = now() + 10_000;
  while (delivered < expected && now() < deadline) await new Promise((r) => setTimeout(r, 100));
  const seconds = (now() - startedAt) / 1000;
  const serverCores =
    servers.pids.reduce((s, pid, i) => s + cpuSecondsOf(pid) - serverCpuAtStart[i]!, 0) / seconds;
  stopping = true;
  for (const s of sockets) s.close();
  await Promise.race([Promise.allSettled(loops), new Promise((r) => setTimeout(r, 6000))]);
  await new Promise((r) => setTimeout(r, 500)); // the last webhook posts
  const metrics = (await call(base, '127.0.0.1', 'GET', '/metrics')).json.text as string;

  latencies.sort((a, b) => a - b);
  const flagged = alerts.filter((a) => normalIds.has(a.subject?.id) || normalAddresses.has(a.subject?.id));
  const byDetector = new Map<string, string[]>();
  for (const a of alerts) byDetector.set(a.detector, [...(byDetector.get(a.detector) ?? []), a.subject.id]);
  console.log(
    `\n${USERS} normal users chatting at ${RATE} messages/s for ${SECONDS} s (${WS ? 'WebSocket' : '/sync long-poll'}), every attack at once, on ${os.cpus().length} cores (load ${os.loadavg()[0]!.toFixed(1)})\n`,
  );
  console.log(
    '| normal deliveries | p50 ms | p99 ms | max ms | server CPU cores | normal users refused (429/401/403) | normal users flagged |',
  );
  console.log('| --- | --- | --- | --- | --- | --- | --- |');
  console.log(
    `| ${latencies.length}/${expected} | ${percentile(latencies, 50).toFixed(1)} | ${percentile(latencies, 99).toFixed(1)} | ${(latencies.at(-1) ?? Number.NaN).toFixed(1)} | ${serverCores.toFixed(2)} | ${refusals.length} | ${flagged.length} |`,
  );
  if (refusals.length > 0) console.log(`refusals, e.g.: ${refusals.slice(0, 5).join('; ')}`);
  if (flagged.length > 0) console.log(`flagged: ${JSON.stringify(flagged.slice(0, 3))}`);
  console.log('\n| attack | served | refused |');
  console.log('| --- | --- | --- |');
  for (const [name, c] of Object.entries(attackCounts)) console.log(`| ${name} | ${c.ok} | ${c.refused} |`);
  console.log('\n| detector | alerts (subjects) |');
  console.log('| --- | --- |');
  for (const [d, subjects] of byDetector)
    console.log(`| ${d} | ${subjects.length} (${subjects.join(', ')}) |`);
  const refusedLine = metrics
    .split('\n')
    .filter((l) => l.startsWith('conclave_rate_limit_refusals_total{'))
    .join('; ');
  console.log(`\nrate-limit refusals (GET /metrics): ${refusedLine || 'none'}`);
} finally {
  await servers.stop();
  hook.close();
  for (const a of agents.values()) a.destroy();
}
