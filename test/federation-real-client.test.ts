/**
 * Unmodified matrix-js-sdk clients on two different homeservers chat through federation: alice on
 * hs1.test and bob on hs2.test, each client over HTTP on loopback to its own server, the servers
 * federating through the in-process network.
 */

import './helpers/sdk-node.ts';
import type { AddressInfo } from 'node:net';
import { ClientEvent, createClient, EventType, type MatrixClient, type Room, SyncState } from 'matrix-js-sdk';
import { logger as sdkGlobalLogger } from 'matrix-js-sdk/lib/logger.js';
import t from 'tap';
import { databaseBackends } from './helpers/backends.ts';
import { startHomeservers } from './helpers/federation.ts';
import { recordingLogger } from './helpers/sdk-node.ts';
import { PASSWORD, type TestServer } from './helpers/server.ts';

(sdkGlobalLogger as unknown as { setLevel(level: string): void }).setLevel('warn');
t.setTimeout(600_000);

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function until(what: string, check: () => boolean, ms = 120_000): Promise<void> {
  const started = Date.now();
  while (!check()) {
    if (Date.now() - started > ms) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

async function clientOf(s: TestServer, localpart: string): Promise<MatrixClient> {
  const address = s.app.server.address() as AddressInfo;
  const baseUrl = `http://127.0.0.1:${address.port}`;
  await s.register(localpart);
  const client = createClient({ baseUrl, logger: recordingLogger(localpart, [], false) });
  await client.loginRequest({
    type: 'm.login.password',
    identifier: { type: 'm.id.user', user: localpart },
    password: PASSWORD,
  });
  return client;
}

const bodies = (room: Room | null) =>
  (room?.getLiveTimeline().getEvents() ?? [])
    .filter((e) => e.getType() === EventType.RoomMessage)
    .map((e) => e.getContent().body as string);

const backend = databaseBackends()[0]!;
t.test(`matrix-js-sdk clients on two federating servers (${backend.name})`, async (t) => {
  const { servers } = await startHomeservers(t, backend, ['hs1.test', 'hs2.test']);
  const [hs1, hs2] = servers as [TestServer, TestServer];
  for (const s of servers) {
    await s.app.listen({ host: '127.0.0.1', port: 0 });
  }
  const alice = await clientOf(hs1, 'alice');
  const bob = await clientOf(hs2, 'bob');
  t.teardown(() => {
    alice.stopClient();
    bob.stopClient();
  });
  for (const c of [alice, bob]) {
    const ready = new Promise<void>((resolve) => {
      c.on(ClientEvent.Sync, (state: SyncState) => {
        if (state === SyncState.Prepared) resolve();
      });
    });
    await c.startClient({ initialSyncLimit: 20, pollTimeout: 10_000 } as never);
    await ready;
  }
  const { room_id: roomId } = await alice.createRoom({
    name: 'Across institutions',
    preset: 'public_chat' as never,
    room_alias_name: 'across',
  });
  await bob.joinRoom('#across:hs1.test');
  await until(
    'bob to be joined on hs1',
    () => alice.getRoom(roomId)?.getMember(bob.getUserId()!)?.membership === 'join',
  );
  t.pass('bob (hs2) joined alice room (hs1) by its alias');

  const expected: string[] = [];
  for (let i = 0; i < 10; i++) {
    const [from, body] = i % 2 === 0 ? [alice, `from hs1 #${i}`] : [bob, `from hs2 #${i}`];
    expected.push(body);
    await from.sendTextMessage(roomId, body);
    await until(`both to see "${body}"`, () =>
      [alice, bob].every((c) => bodies(c.getRoom(roomId)).includes(body)),
    );
  }
  t.same(bodies(alice.getRoom(roomId)), expected, 'alice sees every message once, in order');
  t.same(bodies(bob.getRoom(roomId)), expected, 'bob sees every message once, in order');
  t.equal(bob.getRoom(roomId)?.name, 'Across institutions', 'bob sees the room name');
});
