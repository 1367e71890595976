/**
 * Synapse as a real federation peer: a Synapse from PyPI (test/helpers/synapse.ts) and a Conclave
 * process, each named by a loopback IP literal with a port, federating over TLS with certificates
 * from a CA the test makes, which both trust (and nothing else).
 *
 * The users: on Conclave alice (who makes rooms), bob (banned from Synapse's room) and carol
 * (joins late, and reads history Conclave never had); on Synapse sam (who makes rooms) and sid
 * (banned from Conclave's room).
 *
 * Outside CI the file skips when Python with venv is missing or Synapse cannot be installed; under
 * CI=true either fails it (.ci/run installs Python with venv). Typing, receipts and presence
 * across the two are not tested here (they come with the EDUs).
 *
 * Nothing is logged of a message body or a token.
 */
import t, { type Test } from 'tap';
import { databaseBackends } from './helpers/backends.ts';
import { type HomeserverProcess, makeTestCa, startHomeserverProcesses } from './helpers/federation.ts';
import { pythonUnavailable, type SynapseServer, startSynapse, synapsePython } from './helpers/synapse.ts';

const CI = process.env.CI === 'true';
// Synapse takes 30 s or more to start on a loaded machine, and is started three times.
t.setTimeout(25 * 60_000);

const V3 = '/_matrix/client/v3';
const enc = encodeURIComponent;

interface User {
  /** Where the user's server is now (a restarted Conclave listens on another client port). */
  base: () => string;
  userId: string;
  token: string;
  name: string;
}

interface MatrixEvent {
  event_id: string;
  type: string;
  sender: string;
  state_key?: string;
  content: Record<string, unknown>;
}

/** A client request; answers the status and the JSON body. */
async function call(
  user: User,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${user.base()}${path}`, {
    method,
    headers: { authorization: `Bearer ${user.token}`, 'content-type': 'application/json' },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    json = { unparsed: text.slice(0, 200) };
  }
  return { status: res.status, json };
}

async function ok(user: User, method: string, path: string, body?: unknown) {
  const res = await call(user, method, path, body);
  if (res.status !== 200)
    throw new Error(`${user.name}: ${method} ${path} -> ${res.status} ${JSON.stringify(res.json)}`);
  return res.json;
}

/** Polls `check` every 250 ms until it gives a value; throws with `what` after `ms`. */
async function waitFor<T>(what: string, check: () => Promise<T | undefined>, ms = 60_000): Promise<T> {
  const deadline = Date.now() + ms;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out after ${ms} ms waiting for ${what}${lastError ? ` (${lastError})` : ''}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

let txn = 0;
async function send(user: User, roomId: string, body: string): Promise<string> {
  const res = await ok(
    user,
    'PUT',
    `${V3}/rooms/${enc(roomId)}/send/m.room.message/t${Date.now()}-${txn++}`,
    { msgtype: 'm.text', body },
  );
  return res.event_id as string;
}

/**
 * A user's /sync, run for as long as the test: every timeline event of every joined room in the
 * order it came, with how often each came (a federated event must arrive once). It keeps trying
 * while the user's server is down.
 */
class Syncer {
  readonly timeline = new Map<string, MatrixEvent[]>();
  readonly seen = new Map<string, number>();
  readonly joined = new Set<string>();
  private since: string | undefined;
  private stopped = false;
  private readonly loop: Promise<void>;

  constructor(readonly user: User) {
    this.loop = this.run();
  }

  private async run(): Promise<void> {
    const filter = enc(JSON.stringify({ room: { timeline: { limit: 100 } } }));
    while (!this.stopped) {
      try {
        const q = this.since ? `&since=${enc(this.since)}&timeout=1000` : '&timeout=0';
        const res = await call(this.user, 'GET', `${V3}/sync?filter=${filter}${q}`);
        if (res.status !== 200) throw new Error(`sync ${res.status}`);
        const join = ((res.json.rooms as Record<string, unknown> | undefined)?.join ?? {}) as Record<
          string,
          { timeline?: { events?: MatrixEvent[] } }
        >;
        for (const [roomId, room] of Object.entries(join)) {
          this.joined.add(roomId);
          const list = this.timeline.get(roomId) ?? [];
          for (const e of room.timeline?.events ?? []) {
            list.push(e);
            this.seen.set(e.event_id, (this.seen.get(e.event_id) ?? 0) + 1);
          }
          this.timeline.set(roomId, list);
        }
        this.since = res.json.next_batch as string;
      } catch {
        if (!this.stopped) await new Promise((r) => setTimeout(r, 500));
      }
    }
  }

  /** The bodies of the room's messages in the order /sync gave them. */
  bodies(roomId: string, prefix: string): string[] {
    return (this.timeline.get(roomId) ?? [])
      .filter((e) => e.type === 'm.room.message' && String(e.content.body).startsWith(prefix))
      .map((e) => String(e.content.body));
  }

  /** Event IDs /sync gave more than once. */
  duplicates(): string[] {
    return [...this.seen].filter(([, n]) => n > 1).map(([id]) => id);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
  }
}

/** The room's messages whose body starts with `prefix`, oldest first, paginating /messages back to the start. */
async function messageBodies(user: User, roomId: string, prefix: string): Promise<string[]> {
  const bodies: string[] = [];
  let from: string | undefined;
  for (let page = 0; page < 20; page++) {
    const q = `dir=b&limit=50${from ? `&from=${enc(from)}` : ''}`;
    const res = await ok(user, 'GET', `${V3}/rooms/${enc(roomId)}/messages?${q}`);
    const chunk = (res.chunk ?? []) as MatrixEvent[];
    for (const e of chunk)
      if (e.type === 'm.room.message' && String(e.content.body).startsWith(prefix))
        bodies.push(String(e.content.body));
    if (chunk.length === 0 || typeof res.end !== 'string') break;
    from = res.end;
  }
  return bodies.reverse();
}

async function membershipOf(viewer: User, roomId: string, userId: string): Promise<string | undefined> {
  const res = await call(viewer, 'GET', `${V3}/rooms/${enc(roomId)}/state/m.room.member/${enc(userId)}`);
  return res.status === 200 ? (res.json.membership as string) : undefined;
}

/** Waits until `viewer`'s server shows `userId` with `membership` in the room. */
function waitForMembership(viewer: User, roomId: string, userId: string, membership: string, ms = 60_000) {
  return waitFor(
    `${viewer.name}'s server to show ${userId} as ${membership}`,
    async () => ((await membershipOf(viewer, roomId, userId)) === membership ? true : undefined),
    ms,
  );
}

/** Waits until /messages for `viewer` holds exactly `expected` (prefix-matched), in that order. */
async function waitForHistory(
  t: Test,
  viewer: User,
  roomId: string,
  prefix: string,
  expected: string[],
  what: string,
  ms = 60_000,
) {
  let last: string[] = [];
  try {
    await waitFor(
      what,
      async () => {
        last = await messageBodies(viewer, roomId, prefix);
        return last.length >= expected.length ? true : undefined;
      },
      ms,
    );
  } catch {
    // The comparison below says what was there.
  }
  t.same(last, expected, `${what}: /messages on ${viewer.name}'s server, once each and in order`);
}

/** Waits until `syncer`'s /sync gave `expected` (prefix-matched), then checks order and uniqueness. */
async function waitForSync(
  t: Test,
  syncer: Syncer,
  roomId: string,
  prefix: string,
  expected: string[],
  what: string,
  ms = 60_000,
) {
  try {
    await waitFor(
      what,
      async () => (syncer.bodies(roomId, prefix).length >= expected.length ? true : undefined),
      ms,
    );
  } catch {
    // The comparison below says what was there.
  }
  t.same(
    syncer.bodies(roomId, prefix),
    expected,
    `${what}: /sync of ${syncer.user.name}, once each and in order`,
  );
}

/**
 * A conversation across the two servers: `a` sends three, `b` answers with three once it has
 * them, `a` sends one more once it has those. Both servers must then show the seven in order,
 * once each, in /messages and in each side's /sync.
 */
async function converse(t: Test, roomId: string, a: Syncer, b: Syncer, prefix: string) {
  const expected: string[] = [];
  const say = async (s: Syncer, n: number) => {
    for (let i = 0; i < n; i++) {
      const body = `${prefix} ${s.user.name} ${expected.length + 1}`;
      await send(s.user, roomId, body);
      expected.push(body);
    }
  };
  await say(a, 3);
  await waitForSync(
    t,
    b,
    roomId,
    prefix,
    [...expected],
    `${b.user.name} receives ${a.user.name}'s first three`,
  );
  await say(b, 3);
  await waitForSync(t, a, roomId, prefix, [...expected], `${a.user.name} receives ${b.user.name}'s three`);
  await say(a, 1);
  await waitForSync(t, b, roomId, prefix, [...expected], `${b.user.name} receives the last`);
  await waitForSync(t, a, roomId, prefix, [...expected], `${a.user.name}'s own sync`);
  for (const s of [a, b]) await waitForHistory(t, s.user, roomId, prefix, expected, 'the conversation');
  t.same([...a.duplicates(), ...b.duplicates()], [], 'no event came twice through /sync');
}

async function registerOnConclave(hs: HomeserverProcess, name: string): Promise<User> {
  const res = await fetch(`${hs.base}${V3}/register`, {
    method: 'POST',
    body: JSON.stringify({ username: name, password: 'a long password', auth: { type: 'm.login.dummy' } }),
  });
  if (res.status !== 200) throw new Error(`register ${name}: ${res.status} ${await res.text()}`);
  const json = (await res.json()) as { user_id: string; access_token: string };
  return { base: () => hs.base, userId: json.user_id, token: json.access_token, name };
}

async function registerOnSynapse(syn: SynapseServer, name: string): Promise<User> {
  const json = await syn.register(name);
  return { base: () => syn.base, userId: json.user_id, token: json.access_token, name };
}

// Python and Synapse, made once for every backend; a failure here skips outside CI, fails under it.
let python: string | undefined;
let unavailable = await pythonUnavailable();
if (!unavailable) {
  try {
    const made = await synapsePython();
    python = made.python;
    if (made.installMs > 0)
      t.comment(`made Synapse's virtual environment in ${Math.round(made.installMs / 1000)} s`);
  } catch (err) {
    unavailable = `Synapse could not be installed from PyPI: ${(err as Error).message.slice(0, 500)}`;
  }
}

if (unavailable && CI) {
  t.fail(unavailable);
} else {
  for (const backend of databaseBackends()) {
    t.test(
      `Synapse and Conclave (${backend.name}) federate`,
      { skip: unavailable ? `${unavailable} (required under CI=true)` : false },
      async (t) => {
        const started = performance.now();
        const ca = makeTestCa(t);
        const database = await backend.create();
        t.teardown(() => database.drop());
        const [syn, [hs]] = await Promise.all([
          startSynapse(t, { python: python!, ca }),
          startHomeserverProcesses(t, ca, 1, () =>
            database.url ? { CONCLAVE_DATABASE_URL: database.url } : ({} as Record<string, string>),
          ),
        ]);
        t.comment(
          `Synapse ${syn.serverName} and Conclave ${hs!.serverName} up in ${Math.round((performance.now() - started) / 1000)} s`,
        );
        const conclave = hs!;
        const [alice, bob, carol, sam, sid] = await Promise.all([
          registerOnConclave(conclave, 'alice'),
          registerOnConclave(conclave, 'bob'),
          registerOnConclave(conclave, 'carol'),
          registerOnSynapse(syn, 'sam'),
          registerOnSynapse(syn, 'sid'),
        ]);
        const syncers = new Map<User, Syncer>();
        const syncer = (u: User) => {
          let s = syncers.get(u);
          if (!s) {
            s = new Syncer(u);
            syncers.set(u, s);
          }
          return s;
        };
        t.teardown(() => Promise.all([...syncers.values()].map((s) => s.stop())));
        t.teardown(() => {
          if (t.passing()) return;
          t.comment(`Synapse log tail:\n${syn.logTail(8000)}`);
          t.comment(`Conclave stderr tail:\n${conclave.proc.stderr().slice(-4000)}`);
        });

        let synRoom = '';
        let conRoom = '';

        await t.test('a room made on Synapse is joined by a Conclave user; messages both ways', async (t) => {
          synRoom = (
            await ok(sam, 'POST', `${V3}/createRoom`, { preset: 'public_chat', name: 'Synapse lab' })
          ).room_id as string;
          const joined = await call(
            alice,
            'POST',
            `${V3}/join/${enc(synRoom)}?server_name=${enc(syn.serverName)}`,
            {},
          );
          t.equal(
            joined.status,
            200,
            `alice joins through Synapse (${JSON.stringify(joined.json).slice(0, 300)})`,
          );
          await waitForMembership(sam, synRoom, alice.userId, 'join');
          t.pass("Synapse shows alice's join");
          await converse(t, synRoom, syncer(sam), syncer(alice), 'syn-room');
        });

        await t.test('a room made on Conclave is joined by a Synapse user; messages both ways', async (t) => {
          conRoom = (
            await ok(alice, 'POST', `${V3}/createRoom`, { preset: 'public_chat', name: 'Conclave lab' })
          ).room_id as string;
          const joined = await call(
            sam,
            'POST',
            `${V3}/join/${enc(conRoom)}?server_name=${enc(conclave.serverName)}`,
            {},
          );
          t.equal(
            joined.status,
            200,
            `sam joins through Conclave (${JSON.stringify(joined.json).slice(0, 300)})`,
          );
          await waitForMembership(alice, conRoom, sam.userId, 'join');
          t.pass("Conclave shows sam's join");
          await converse(t, conRoom, syncer(alice), syncer(sam), 'con-room');
        });

        // Room versions 1 and 2: event IDs chosen by each server, references with hashes; each
        // side must read the other's events and accept its signatures over them.
        for (const version of ['1', '2']) {
          await t.test(
            `version ${version} rooms made on either side, joined and invited from the other`,
            async (t) => {
              const onSynapse = (
                await ok(sam, 'POST', `${V3}/createRoom`, { preset: 'public_chat', room_version: version })
              ).room_id as string;
              const joined = await call(
                alice,
                'POST',
                `${V3}/join/${enc(onSynapse)}?server_name=${enc(syn.serverName)}`,
                {},
              );
              t.equal(
                joined.status,
                200,
                `alice joins Synapse's v${version} room (${JSON.stringify(joined.json).slice(0, 300)})`,
              );
              await waitForMembership(sam, onSynapse, alice.userId, 'join');
              await converse(t, onSynapse, syncer(sam), syncer(alice), `syn-v${version}`);

              const onConclave = (
                await ok(alice, 'POST', `${V3}/createRoom`, {
                  preset: 'private_chat',
                  room_version: version,
                  invite: [sam.userId],
                })
              ).room_id as string;
              await waitFor(
                `sam's invite to the v${version} room`,
                async () =>
                  (await membershipOf(alice, onConclave, sam.userId)) === 'invite' ? true : undefined,
                60_000,
              );
              const accepted = await call(sam, 'POST', `${V3}/join/${enc(onConclave)}`, {});
              t.equal(
                accepted.status,
                200,
                `sam accepts the invite (${JSON.stringify(accepted.json).slice(0, 300)})`,
              );
              await waitForMembership(alice, onConclave, sam.userId, 'join');
              await converse(t, onConclave, syncer(alice), syncer(sam), `con-v${version}`);
            },
          );
        }

        await t.test("a ban on Synapse's room takes effect on Conclave", async (t) => {
          const joined = await call(
            bob,
            'POST',
            `${V3}/join/${enc(synRoom)}?server_name=${enc(syn.serverName)}`,
            {},
          );
          t.equal(joined.status, 200, 'bob joins the Synapse room');
          await waitForMembership(sam, synRoom, bob.userId, 'join');
          await ok(sam, 'POST', `${V3}/rooms/${enc(synRoom)}/ban`, { user_id: bob.userId, reason: 'spam' });
          await waitForMembership(alice, synRoom, bob.userId, 'ban');
          t.pass("Conclave shows bob banned (alice's view)");
          const sent = await call(bob, 'PUT', `${V3}/rooms/${enc(synRoom)}/send/m.room.message/banned1`, {
            msgtype: 'm.text',
            body: 'after the ban',
          });
          t.equal(sent.status, 403, 'bob may no longer send to the room');
          const again = await call(
            bob,
            'POST',
            `${V3}/join/${enc(synRoom)}?server_name=${enc(syn.serverName)}`,
            {},
          );
          t.equal(again.status, 403, 'nor join it again');
          t.equal(await membershipOf(sam, synRoom, bob.userId), 'ban', 'and Synapse still has him banned');
        });

        await t.test("a ban on Conclave's room takes effect on Synapse", async (t) => {
          const joined = await call(
            sid,
            'POST',
            `${V3}/join/${enc(conRoom)}?server_name=${enc(conclave.serverName)}`,
            {},
          );
          t.equal(joined.status, 200, 'sid joins the Conclave room');
          await waitForMembership(alice, conRoom, sid.userId, 'join');
          await ok(alice, 'POST', `${V3}/rooms/${enc(conRoom)}/ban`, { user_id: sid.userId, reason: 'spam' });
          await waitForMembership(sam, conRoom, sid.userId, 'ban');
          t.pass("Synapse shows sid banned (sam's view)");
          const sent = await call(sid, 'PUT', `${V3}/rooms/${enc(conRoom)}/send/m.room.message/banned1`, {
            msgtype: 'm.text',
            body: 'after the ban',
          });
          t.equal(sent.status, 403, 'sid may no longer send to the room');
          const again = await call(
            sid,
            'POST',
            `${V3}/join/${enc(conRoom)}?server_name=${enc(conclave.serverName)}`,
            {},
          );
          t.equal(again.status, 403, 'nor join it again');
          t.equal(await membershipOf(alice, conRoom, sid.userId), 'ban', 'and Conclave still has him banned');
        });

        await t.test('/messages on Conclave backfills history only Synapse has', async (t) => {
          const room = (await ok(sam, 'POST', `${V3}/createRoom`, { preset: 'public_chat', name: 'Archive' }))
            .room_id as string;
          const history: string[] = [];
          for (let i = 1; i <= 25; i++) {
            const body = `archive ${i}`;
            await send(sam, room, body);
            history.push(body);
          }
          const joined = await call(
            carol,
            'POST',
            `${V3}/join/${enc(room)}?server_name=${enc(syn.serverName)}`,
            {},
          );
          t.equal(joined.status, 200, 'carol joins after 25 messages');
          await waitForHistory(t, carol, room, 'archive', history, 'the history before carol joined', 90_000);
        });

        await t.test(
          'Synapse stopped while Conclave users send, then started: it gets everything',
          async (t) => {
            await syn.stop();
            const expected: string[] = [];
            for (let i = 1; i <= 5; i++) {
              const body = `outage-a ${i}`;
              await send(alice, conRoom, body);
              expected.push(body);
            }
            const restarted = performance.now();
            await syn.start();
            t.comment(`Synapse restarted in ${Math.round((performance.now() - restarted) / 1000)} s`);
            // Conclave's queue backs off while Synapse is down (doubling from 1 s), so this may take a while.
            await waitForHistory(
              t,
              sam,
              conRoom,
              'outage-a',
              expected,
              "Conclave's messages sent while Synapse was down",
              180_000,
            );
            await waitForSync(t, syncer(sam), conRoom, 'outage-a', expected, 'the same', 60_000);
          },
        );

        await t.test(
          'Conclave stopped while Synapse users send, then started: it gets everything',
          async (t) => {
            await conclave.stop();
            const expected: string[] = [];
            for (let i = 1; i <= 5; i++) {
              const body = `outage-s ${i}`;
              await send(sam, synRoom, body);
              expected.push(body);
            }
            const restarted = performance.now();
            await conclave.start();
            t.comment(`Conclave restarted in ${Math.round((performance.now() - restarted) / 1000)} s`);
            await waitForHistory(
              t,
              alice,
              synRoom,
              'outage-s',
              expected,
              "Synapse's messages sent while Conclave was down",
              180_000,
            );
            await waitForSync(t, syncer(alice), synRoom, 'outage-s', expected, 'the same', 60_000);
            t.same(
              [...syncers.values()].flatMap((s) => s.duplicates()),
              [],
              'no event came twice through any /sync',
            );
          },
        );

        t.comment(`the whole run on ${backend.name}: ${Math.round((performance.now() - started) / 1000)} s`);
      },
    );
  }
}
