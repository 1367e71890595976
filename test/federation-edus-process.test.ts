// EDUs between real server processes over TLS on loopback (server names 127.0.0.N:<port>, a test
// CA): alice's typing on hs1 reaches bob's WebSocket sync on hs2, and bob's read receipt on hs2
// reaches alice's /sync on hs1.
import t from 'tap';
import WebSocket from 'ws';
import { WS_SYNC_PATH } from '../src/routes/client/sync-ws.routes.ts';
import { type HomeserverProcess, makeTestCa, startHomeserverProcesses } from './helpers/federation.ts';
import { until } from './helpers/wait.ts';

// Real processes start slowly on a busy machine (tsx compiles the server at each start).
t.setTimeout(400_000);
const V3 = '/_matrix/client/v3';
const enc = encodeURIComponent;
// biome-ignore lint/suspicious/noExplicitAny: sync bodies are read loosely in tests
type Json = Record<string, any>;

async function call(hs: HomeserverProcess, method: string, path: string, token?: string, body?: object) {
  const res = await fetch(`${hs.base}${path}`, {
    method,
    headers: token ? { authorization: `Bearer ${token}` } : {},
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  return { status: res.status, json: (await res.json()) as Json };
}

async function register(hs: HomeserverProcess, localpart: string) {
  const res = await call(hs, 'POST', `${V3}/register`, undefined, {
    username: localpart,
    password: 'a long password',
    auth: { type: 'm.login.dummy' },
  });
  if (res.status !== 200) throw new Error(`register: ${res.status}`);
  return res.json as { user_id: string; access_token: string };
}

t.test('typing and receipts cross between two server processes over TLS', async (t) => {
  const ca = makeTestCa(t);
  const [hs1, hs2] = (await startHomeserverProcesses(t, ca, 2)) as [HomeserverProcess, HomeserverProcess];
  const alice = await register(hs1, 'alice');
  const bob = await register(hs2, 'bob');
  const created = await call(hs1, 'POST', `${V3}/createRoom`, alice.access_token, { preset: 'public_chat' });
  t.equal(created.status, 200);
  const roomId = created.json.room_id as string;
  const join = await call(
    hs2,
    'POST',
    `${V3}/join/${enc(roomId)}?via=${enc(hs1.serverName)}`,
    bob.access_token,
    {},
  );
  t.equal(join.status, 200, JSON.stringify(join.json));

  t.test("alice's typing reaches bob's WebSocket sync", async (t) => {
    const ws = new WebSocket(`${hs2.base.replace('http', 'ws')}${WS_SYNC_PATH}`, {
      headers: { authorization: `Bearer ${bob.access_token}` },
    });
    t.teardown(() => ws.close());
    const frames: Json[] = [];
    ws.on('message', (d) => frames.push(JSON.parse(String(d))));
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    await until('the initial frame', async () => frames.length > 0);
    const typing = await call(
      hs1,
      'PUT',
      `${V3}/rooms/${enc(roomId)}/typing/${enc(alice.user_id)}`,
      alice.access_token,
      { typing: true, timeout: 20_000 },
    );
    t.equal(typing.status, 200);
    const frame = await until(
      'a frame with alice typing',
      async () =>
        frames.find((f) =>
          (f.rooms?.join?.[roomId]?.ephemeral?.events ?? []).some(
            (e: Json) => e.type === 'm.typing' && e.content.user_ids.includes(alice.user_id),
          ),
        ),
      60_000,
    );
    t.ok(frame.next_batch, 'the frame carries next_batch');
  });

  t.test("bob's read receipt reaches alice's /sync", async (t) => {
    const sent = await call(
      hs1,
      'PUT',
      `${V3}/rooms/${enc(roomId)}/send/m.room.message/m1`,
      alice.access_token,
      { msgtype: 'm.text', body: 'read me' },
    );
    t.equal(sent.status, 200);
    const eventId = sent.json.event_id as string;
    await until(
      'the message on hs2',
      async () =>
        (await call(hs2, 'GET', `${V3}/rooms/${enc(roomId)}/event/${enc(eventId)}`, bob.access_token))
          .status === 200,
      60_000,
    );
    const receipt = await call(
      hs2,
      'POST',
      `${V3}/rooms/${enc(roomId)}/receipt/m.read/${enc(eventId)}`,
      bob.access_token,
      {},
    );
    t.equal(receipt.status, 200);
    const seen = await until(
      "bob's receipt in alice's sync",
      async () => {
        const sync = await call(hs1, 'GET', `${V3}/sync`, alice.access_token);
        const events: Json[] = sync.json.rooms?.join?.[roomId]?.ephemeral?.events ?? [];
        return events.find((e) => e.type === 'm.receipt' && e.content[eventId]?.['m.read']?.[bob.user_id]);
      },
      60_000,
    );
    t.type(seen.content[eventId]['m.read'][bob.user_id].ts, 'number');
  });
});
