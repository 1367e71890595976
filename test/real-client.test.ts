/**
 * A real client: an unmodified matrix-js-sdk (no crypto) chats through Conclave over HTTP on
 * 127.0.0.1. alice and bob register, meet in a private room that bob joins by alias, exchange 100
 * messages, page back through the history, see each other typing and reading, and bob leaves.
 * On the embedded default, on PostgreSQL, and on one homeserver run as two processes on PostgreSQL
 * and Redis with alice and bob on different processes.
 */

import './helpers/sdk-node.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import {
  ClientEvent,
  createClient,
  Direction,
  EventType,
  Filter,
  type MatrixClient,
  type MatrixEvent,
  Preset,
  type Room,
  RoomEvent,
  type RoomMember,
  RoomMemberEvent,
  SyncState,
} from 'matrix-js-sdk';
import { logger as sdkGlobalLogger } from 'matrix-js-sdk/lib/logger.js';
import t, { type Test } from 'tap';
import { databaseBackends, testRedisUrl } from './helpers/backends.ts';
import { startServerProcess } from './helpers/process.ts';
import { recordingLogger } from './helpers/sdk-node.ts';
import { PASSWORD, SERVER_NAME, startTestServer } from './helpers/server.ts';

// Two clients, two backends and 100 messages: minutes, not seconds, on a loaded 2-core machine.
t.setTimeout(600_000);

const MESSAGES = 100;
/** The clients' long-poll timeout: short enough that a missed wake-up costs seconds, not 30. */
const POLL_TIMEOUT_MS = 10_000;
/** REAL_CLIENT_VERBOSE=1 prints every request and the SDK's own log. */
const VERBOSE = process.env.REAL_CLIENT_VERBOSE === '1';

// The SDK's global logger prints every sync at debug level; keep only warnings and errors.
(sdkGlobalLogger as unknown as { setLevel(level: string): void }).setLevel(VERBOSE ? 'debug' : 'warn');

/** A request of the SDK that got an error answer, kept to name it in a failure. */
interface Failure {
  who: string;
  method: string;
  path: string;
  status: number;
  body: string;
}

/** The SDK's only request that may fail: an unstable MatrixRTC endpoint Conclave does not serve. */
const tolerated = (f: Failure) =>
  f.method === 'GET' &&
  f.path === '/_matrix/client/unstable/org.matrix.msc4143/rtc/transports' &&
  f.status === 404 &&
  f.body.includes('M_UNRECOGNIZED');

/**
 * How long a client may take to see what the server already answered for. Conditions are polled,
 * so this only bounds a failure; it is generous because the suite runs on busy 2-core machines.
 */
const SETTLE_MS = 20_000;
/** How long a typing notice may take to reach the other client (a wake-up, not a poll round). */
const TYPING_MS = 5000;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `check` every 10 ms; resolves with the ms it took, or undefined after `ms`. */
async function within(ms: number, check: () => boolean): Promise<number | undefined> {
  const started = performance.now();
  while (!check()) {
    if (performance.now() - started > ms) return undefined;
    await sleep(10);
  }
  return performance.now() - started;
}

const messageBodies = (room: Room) =>
  room
    .getLiveTimeline()
    .getEvents()
    .filter((e) => e.getType() === EventType.RoomMessage)
    .map((e) => e.getContent().body as string);

/** Where the clients connect: alice (and the anonymous client) to one address, bob to another. */
interface Setup {
  name: string;
  skip?: string | false;
  start(t: Test): Promise<{ alice: string; bob: string }>;
}

const setups: Setup[] = databaseBackends().map((backend) => ({
  name: backend.name,
  async start(t) {
    const s = await startTestServer(t, backend);
    await s.app.listen({ host: '127.0.0.1', port: 0 });
    const { port } = s.app.server.address() as AddressInfo;
    const url = `http://127.0.0.1:${port}`;
    return { alice: url, bob: url };
  },
}));
// One homeserver as two real processes on one PostgreSQL and one Redis: alice talks to one, bob
// (and bob's second device, to the other one) to the other.
const postgres = databaseBackends().find((b) => b.name === 'postgres');
const redisUrl = testRedisUrl();
setups.push({
  name: 'two processes on PostgreSQL and Redis',
  skip: !postgres || !redisUrl ? 'needs TEST_DATABASE_URL and TEST_REDIS_URL' : false,
  async start(t) {
    const db = await postgres!.create();
    t.teardown(() => db.drop());
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'conclave-rc-'));
    t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
    const env = {
      CONCLAVE_BIND_ADDRESS: '127.0.0.1',
      CONCLAVE_PORT: '0',
      CONCLAVE_SERVER_NAME: SERVER_NAME,
      CONCLAVE_DATABASE_URL: db.url,
      CONCLAVE_REDIS_URL: redisUrl!,
      CONCLAVE_REGISTRATION: 'open',
      CONCLAVE_PASSWORD_HASH_COST: '10',
      CONCLAVE_DATA_DIR: dataDir,
    };
    // One first, so the migrations run once.
    const one = await startServerProcess(env);
    t.teardown(() => one.proc.stop());
    const two = await startServerProcess(env);
    t.teardown(() => two.proc.stop());
    return { alice: one.base, bob: two.base };
  },
});

for (const setup of setups) {
  t.test(
    `matrix-js-sdk chats through Conclave on ${setup.name}`,
    { skip: setup.skip ?? false },
    async (t) => {
      const urls = await setup.start(t);
      /** bob's first device talks to bob's address; everything else (bob's second device too) to alice's. */
      const baseUrlOf = (who: string) => (who === 'bob' ? urls.bob : urls.alice);

      const failures: Failure[] = [];
      const sdkLog: { level: string; line: string }[] = [];
      const clients: MatrixClient[] = [];

      /** fetch that records every answer that was not a success (and, verbose, every request). */
      const recordingFetch =
        (who: string): typeof fetch =>
        async (input, init) => {
          const url = new URL(
            typeof input === 'string' ? input : input instanceof URL ? input.href : input.url,
          );
          const method = init?.method ?? 'GET';
          const started = performance.now();
          if (VERBOSE) console.error(`${who} --> ${method} ${url.pathname}${url.search}`);
          const res = await fetch(input, init);
          const ms = Math.round(performance.now() - started);
          if (VERBOSE) console.error(`${who} <-- ${res.status} ${method} ${url.pathname} ${ms} ms`);
          if (!res.ok) {
            const body = await res.clone().text();
            failures.push({ who, method, path: url.pathname, status: res.status, body });
            if (VERBOSE) console.error(`${who}     ${body}`);
          }
          return res;
        };

      const newClient = (
        who: string,
        session?: { user_id: string; access_token: string; device_id: string },
      ) => {
        const client = createClient({
          baseUrl: baseUrlOf(who),
          fetchFn: recordingFetch(who),
          logger: recordingLogger(who, sdkLog, VERBOSE),
          timelineSupport: true,
          ...(session
            ? { userId: session.user_id, accessToken: session.access_token, deviceId: session.device_id }
            : {}),
        });
        clients.push(client);
        return client;
      };

      // The clients stop before the server closes: tap runs teardowns last-registered first.
      t.teardown(() => {
        for (const c of clients) {
          c.stopClient();
          c.removeAllListeners();
        }
      });

      /** Starts syncing, with a timeline limit large enough that no incremental sync is gappy. */
      const start = async (client: MatrixClient, initialSyncLimit: number) => {
        const filter = new Filter(client.getUserId());
        filter.setDefinition({ room: { timeline: { limit: 100 } } });
        const prepared = new Promise<void>((resolve, reject) => {
          const onSync = (state: SyncState) => {
            if (state === SyncState.Prepared || state === SyncState.Error) {
              client.off(ClientEvent.Sync, onSync);
              if (state === SyncState.Prepared) resolve();
              else reject(new Error(`${client.getUserId()}: the first sync failed`));
            }
          };
          client.on(ClientEvent.Sync, onSync);
        });
        await client.startClient({ initialSyncLimit, filter, pollTimeout: POLL_TIMEOUT_MS });
        await prepared;
      };

      // Registration and login, through the SDK.
      const anonymous = newClient('anonymous');
      const aliceReg = await anonymous.registerRequest({
        username: 'alice',
        password: PASSWORD,
        auth: { type: 'm.login.dummy' },
      });
      t.equal(aliceReg.user_id, `@alice:${SERVER_NAME}`, 'alice registers with m.login.dummy');
      if (!aliceReg.access_token || !aliceReg.device_id)
        throw new Error('registration gave alice no session');
      const bobReg = await anonymous.registerRequest({
        username: 'bob',
        password: PASSWORD,
        auth: { type: 'm.login.dummy' },
        inhibit_login: true,
      });
      t.equal(bobReg.user_id, `@bob:${SERVER_NAME}`, 'bob registers');
      t.notOk(bobReg.access_token, 'with inhibit_login, without a session');
      const bobLogin = await anonymous.loginWithPassword(bobReg.user_id, PASSWORD);
      t.equal(bobLogin.user_id, bobReg.user_id, 'bob logs in with his password');

      const aliceId = aliceReg.user_id;
      const bobId = bobLogin.user_id;
      const alice = newClient('alice', {
        user_id: aliceId,
        access_token: aliceReg.access_token,
        device_id: aliceReg.device_id,
      });
      const bob = newClient('bob', bobLogin);
      await Promise.all([start(alice, 20), start(bob, 20)]);
      t.pass('both clients finish their first sync');

      // alice creates a private room with an alias and invites bob, who joins by the alias.
      const alias = `#lab:${SERVER_NAME}`;
      const bobMemberships: string[] = [];
      bob.on(RoomMemberEvent.Membership, (_event: MatrixEvent, member: RoomMember) => {
        if (member.userId === bobId) bobMemberships.push(`${member.roomId} ${member.membership}`);
      });
      const bobNewRooms: string[] = [];
      bob.on(ClientEvent.Room, (room: Room) => bobNewRooms.push(room.roomId));
      const created = await alice.createRoom({
        preset: Preset.PrivateChat,
        room_alias_name: 'lab',
        name: 'Lab notes',
      });
      const roomId = created.room_id;
      t.match(roomId, /^!/, 'alice creates the room');

      const aliceSeesRoom = await within(
        SETTLE_MS,
        () => alice.getRoom(roomId)?.getMyMembership() === 'join',
      );
      t.ok(
        aliceSeesRoom !== undefined,
        `alice's client receives the room she created within ${SETTLE_MS / 1000} s`,
      );
      if (aliceSeesRoom === undefined) {
        // A missed wake-up: the next long-poll brings it. Go on, to test the rest.
        await within(POLL_TIMEOUT_MS + SETTLE_MS, () => alice.getRoom(roomId)?.getMyMembership() === 'join');
      }
      const aliceRoom = alice.getRoom(roomId);
      if (!aliceRoom) throw new Error("the room never reached alice's client");

      await alice.invite(roomId, bobId);
      t.ok(
        (await within(SETTLE_MS, () => bobMemberships.includes(`${roomId} invite`))) !== undefined,
        "bob's client sees the invite through sync (RoomMemberEvent.Membership)",
      );
      t.ok(bobNewRooms.includes(roomId), 'as a new room (ClientEvent.Room)');
      t.equal(bob.getRoom(roomId)?.getMyMembership(), 'invite', 'bob is invited');
      t.equal(bob.getRoom(roomId)?.name, 'Lab notes', 'the invite carries the room name (stripped state)');

      const joined = await bob.joinRoom(alias);
      t.equal(joined.roomId, roomId, 'bob joins by alias');
      t.ok(
        (await within(SETTLE_MS, () => bobMemberships.includes(`${roomId} join`))) !== undefined,
        "bob's sync shows him joined",
      );
      t.ok(
        (await within(SETTLE_MS, () => aliceRoom.getMember(bobId)?.membership === 'join')) !== undefined,
        "alice's client sees bob join",
      );
      const bobRoom = bob.getRoom(roomId);
      if (!bobRoom) throw new Error("the room is not in bob's client");
      t.equal(bobRoom.getJoinedMemberCount(), 2, "bob's room has two joined members");
      t.equal(bobRoom.name, 'Lab notes', 'its name');
      t.equal(bobRoom.getCanonicalAlias(), alias, 'and its canonical alias');

      t.test(`alice and bob exchange ${MESSAGES} messages`, async (t) => {
        // Each client's live messages, in the order the SDK announced them. The sender's own message
        // is announced as a local echo, which later takes the server's event ID.
        const seen = new Map<MatrixClient, MatrixEvent[]>([
          [alice, []],
          [bob, []],
        ]);
        for (const [client, list] of seen) {
          client.on(RoomEvent.Timeline, (event, room, toStartOfTimeline) => {
            if (
              room?.roomId === roomId &&
              toStartOfTimeline === false &&
              event.getType() === EventType.RoomMessage
            ) {
              list.push(event);
            }
          });
        }
        // A conversation: each one answers once the other's message has arrived, so the order in
        // which the server received them is the order in which they were written.
        const sent: { body: string; eventId: string; sender: string }[] = [];
        const started = performance.now();
        for (let i = 0; i < MESSAGES; i++) {
          const [from, name] = i % 2 === 0 ? [alice, 'alice'] : [bob, 'bob'];
          const previous = sent[i - 1];
          if (previous) {
            const list = seen.get(from) ?? [];
            const arrived = await within(SETTLE_MS, () => list.some((e) => e.getId() === previous.eventId));
            if (arrived === undefined) {
              t.fail(`${name} did not receive message ${i - 1} within ${SETTLE_MS / 1000} s`);
              break;
            }
          }
          const body = `message ${i} from ${name}`;
          const { event_id } = await from.sendTextMessage(roomId, body);
          sent.push({ body, eventId: event_id, sender: from.getUserId() ?? '' });
        }
        t.equal(
          sent.length,
          MESSAGES,
          `${MESSAGES} messages sent in ${Math.round(performance.now() - started)} ms`,
        );
        const settled = () =>
          [...seen.values()].every((l) => l.filter((e) => !e.isSending()).length >= sent.length);
        t.ok((await within(SETTLE_MS, settled)) !== undefined, 'both clients have every message');
        await sleep(500); // time for a duplicate to arrive, if one were coming

        for (const [client, list] of seen) {
          const who = client === alice ? 'alice' : 'bob';
          const ids = list.map((e) => e.getId());
          t.equal(new Set(ids).size, ids.length, `${who} is told of no event twice`);
          t.same(
            list.map((e) => e.getContent().body),
            sent.map((m) => m.body),
            `${who} sees every message once, in the order sent`,
          );
          t.same(
            ids,
            sent.map((m) => m.eventId),
            `${who}'s events carry the IDs the server gave`,
          );
          t.same(
            list.map((e) => e.getSender()),
            sent.map((m) => m.sender),
            `${who} sees the right senders`,
          );
          t.same(
            messageBodies(client.getRoom(roomId) as Room),
            sent.map((m) => m.body),
            `${who}'s live timeline holds them all, in order`,
          );
        }

        t.test('bob, on a new device, pages back through the whole history', async (t) => {
          const login = await anonymous.loginWithPassword(bobId, PASSWORD);
          t.not(login.device_id, bobLogin.device_id, 'a second device');
          const bob2 = newClient('bob2', login);
          await start(bob2, 5);
          const room = bob2.getRoom(roomId);
          if (!room) throw new Error("the room is not in the new device's first sync");
          const initial = messageBodies(room);
          t.same(
            initial,
            sent.slice(-initial.length).map((m) => m.body),
            `the first sync holds the latest messages (${initial.length})`,
          );
          t.ok(initial.length <= 5, 'no more than the initial sync limit');
          let requests = 0;
          while (await bob2.paginateEventTimeline(room.getLiveTimeline(), { backwards: true, limit: 10 })) {
            if (++requests > 50) break;
          }
          t.ok(
            requests >= 10 && requests <= 50,
            `paginateEventTimeline reaches the start in ${requests} requests`,
          );
          const events = room.getLiveTimeline().getEvents();
          const ids = events.map((e) => e.getId());
          t.equal(new Set(ids).size, ids.length, 'no event twice in the paginated timeline');
          t.same(
            messageBodies(room),
            sent.map((m) => m.body),
            `all ${MESSAGES} messages, in order`,
          );
          t.equal(events[0]?.getType(), EventType.RoomCreate, 'back to the m.room.create event');

          // The same with the raw /messages request, from the live end of the room.
          const bodies: string[] = [];
          const seenIds = new Set<string>();
          let duplicates = 0;
          let from: string | null = null;
          for (let i = 0; i < 50; i++) {
            const res = await bob2.createMessagesRequest(roomId, from, 15, Direction.Backward);
            for (const e of res.chunk) {
              if (seenIds.has(e.event_id)) duplicates++;
              seenIds.add(e.event_id);
              if (e.type === EventType.RoomMessage) bodies.push(e.content.body as string);
            }
            if (!res.end) break;
            from = res.end;
          }
          t.equal(duplicates, 0, 'createMessagesRequest returns no event twice');
          t.same(
            bodies.reverse(),
            sent.map((m) => m.body),
            `and the same ${MESSAGES} messages`,
          );
          bob2.stopClient();
          bob2.removeAllListeners();
        });
      });

      t.test('typing reaches the other side within a second', async (t) => {
        const pairs = [
          [alice, bob, aliceId, 'bob'],
          [bob, alice, bobId, 'alice'],
        ] as const;
        for (const [from, to, fromId, toName] of pairs) {
          for (const typing of [true, false]) {
            const member = () => to.getRoom(roomId)?.getMember(fromId);
            let announced = false;
            const onTyping = (_e: MatrixEvent, m: RoomMember) => {
              if (m.roomId === roomId && m.userId === fromId && m.typing === typing) announced = true;
            };
            to.on(RoomMemberEvent.Typing, onTyping);
            await from.sendTyping(roomId, typing, 10_000);
            const ms = await within(TYPING_MS, () => announced);
            to.off(RoomMemberEvent.Typing, onTyping);
            const what = `${toName} sees ${fromId} ${typing ? 'start' : 'stop'} typing`;
            t.ok(ms !== undefined, `${what} (RoomMemberEvent.Typing, ${Math.round(ms ?? Number.NaN)} ms)`);
            t.equal(member()?.typing, typing, `${toName}'s room member says so`);
          }
        }
      });

      t.test('read receipts reach the other side within a second', async (t) => {
        const pairs = [
          [bob, alice, bobId, 'alice'],
          [alice, bob, aliceId, 'bob'],
        ] as const;
        for (const [from, to, fromId, toName] of pairs) {
          const last = (from.getRoom(roomId) as Room)
            .getLiveTimeline()
            .getEvents()
            .filter((e) => e.getType() === EventType.RoomMessage && e.getSender() !== fromId)
            .at(-1);
          if (!last) throw new Error('no message to acknowledge');
          const eventId = last.getId() as string;
          let announced = false;
          const onReceipt = (event: MatrixEvent, room: Room) => {
            if (room.roomId === roomId && event.getContent()[eventId]?.['m.read']?.[fromId]) announced = true;
          };
          to.on(RoomEvent.Receipt, onReceipt);
          await from.sendReadReceipt(last);
          const ms = await within(TYPING_MS, () => announced);
          to.off(RoomEvent.Receipt, onReceipt);
          t.ok(
            ms !== undefined,
            `${toName} sees ${fromId}'s read receipt (${Math.round(ms ?? Number.NaN)} ms)`,
          );
          t.equal(
            to.getRoom(roomId)?.getReadReceiptForUserId(fromId, true)?.eventId,
            eventId,
            `${toName}'s client holds ${fromId}'s receipt on that event`,
          );
        }
      });

      t.test('after bob leaves, his client receives nothing more from the room', async (t) => {
        await bob.leave(roomId);
        t.ok(
          (await within(SETTLE_MS, () => bobMemberships.includes(`${roomId} leave`))) !== undefined,
          "bob's client sees his leave",
        );
        t.equal(bob.getRoom(roomId)?.getMyMembership(), 'leave', "bob's room says he left");
        t.ok(
          (await within(SETTLE_MS, () => aliceRoom.getMember(bobId)?.membership === 'leave')) !== undefined,
          "alice's client sees bob leave",
        );

        const afterLeave: string[] = [];
        bob.on(RoomEvent.Timeline, (event, room) => {
          if (room?.roomId === roomId) afterLeave.push(`timeline ${event.getType()} ${event.getId()}`);
        });
        bob.on(RoomMemberEvent.Typing, (_e, member) => {
          if (member.roomId === roomId) afterLeave.push(`typing ${member.userId}`);
        });
        bob.on(RoomEvent.Receipt, (_e, room) => {
          if (room.roomId === roomId) afterLeave.push('receipt');
        });

        const later: string[] = [];
        for (let i = 0; i < 5; i++) {
          const { event_id } = await alice.sendTextMessage(roomId, `after bob left ${i}`);
          later.push(event_id);
        }
        await alice.sendTyping(roomId, true, 10_000);
        t.ok(
          (await within(SETTLE_MS, () => later.every((id) => aliceRoom.findEventById(id)))) !== undefined,
          'alice receives her messages',
        );
        const lastLater = aliceRoom.findEventById(later.at(-1) ?? '');
        if (lastLater) await alice.sendReadReceipt(lastLater);

        // Proof that bob's client kept syncing all along: an invite to another room reaches it.
        const other = await alice.createRoom({
          preset: Preset.PrivateChat,
          name: 'Control',
          invite: [bobId],
        });
        t.ok(
          (await within(SETTLE_MS, () => bob.getRoom(other.room_id)?.getMyMembership() === 'invite')) !==
            undefined,
          "bob's client, still syncing, sees an invite to another room",
        );
        await sleep(2000);
        t.same(afterLeave, [], "bob's client got nothing from the room it left");
        t.same(
          later.filter((id) => bob.getRoom(roomId)?.findEventById(id)),
          [],
          "none of alice's later messages is in bob's client",
        );
        await alice.sendTyping(roomId, false, 0);
      });

      t.test('the server answered every request of the SDK', async (t) => {
        const unexpected = failures.filter((f) => !tolerated(f));
        for (const f of failures) {
          t.comment(
            `${f.who} ${f.method} ${f.path} -> ${f.status} ${f.body}${tolerated(f) ? ' (tolerated)' : ''}`,
          );
        }
        // Warnings are expected: the SDK still looks for two default push rules spec v1.17 removed.
        for (const { line } of sdkLog) t.comment(line);
        t.same(unexpected, [], 'no request failed, but for the unstable MatrixRTC probe');
        t.same(
          sdkLog.filter((l) => l.level === 'error').map((l) => l.line),
          [],
          'the SDK logged no error',
        );
      });
    },
  );
}
