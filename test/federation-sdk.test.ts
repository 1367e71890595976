/**
 * Unmodified matrix-js-sdk clients on two homeservers chat through federation: alice on hs1
 * creates a room and invites bob of hs2 through the SDK; bob's client sees the invite, joins, and
 * each sees the other's messages in order. The servers federate through the in-process network;
 * the clients talk HTTP to each server on loopback.
 */
import './helpers/sdk-node.ts';
import type { AddressInfo } from 'node:net';
import {
  ClientEvent,
  createClient,
  type MatrixClient,
  type MatrixEvent,
  Preset,
  RoomEvent,
  RoomMemberEvent,
  SyncState,
} from 'matrix-js-sdk';
import { logger as sdkGlobalLogger } from 'matrix-js-sdk/lib/logger.js';
import t from 'tap';
import { databaseBackends } from './helpers/backends.ts';
import { startHomeservers } from './helpers/federation.ts';
import { recordingLogger } from './helpers/sdk-node.ts';
import type { TestServer } from './helpers/server.ts';

t.setTimeout(600_000);
(sdkGlobalLogger as unknown as { setLevel(level: string): void }).setLevel('warn');

function waitFor<T>(what: string, register: (done: (value: T) => void) => () => void, timeoutMs = 90_000) {
  return new Promise<T>((resolve, reject) => {
    let unregister: () => void = () => {};
    const timer = setTimeout(() => {
      unregister();
      reject(new Error(`${what}: not within ${timeoutMs} ms`));
    }, timeoutMs);
    unregister = register((value) => {
      clearTimeout(timer);
      unregister();
      resolve(value);
    });
  });
}

for (const backend of databaseBackends()) {
  t.test(`matrix-js-sdk clients on two servers on ${backend.name}`, async (t) => {
    const { servers } = await startHomeservers(t, backend, ['hs1.test', 'hs2.test']);
    const [hs1, hs2] = servers as [TestServer, TestServer];
    const urlOf = async (s: TestServer) => {
      await s.app.listen({ host: '127.0.0.1', port: 0 });
      return `http://127.0.0.1:${(s.app.server.address() as AddressInfo).port}`;
    };
    const [url1, url2] = [await urlOf(hs1), await urlOf(hs2)];
    const aliceLogin = await hs1.register('alice');
    const bobLogin = await hs2.register('bob');
    const sdkLog: { level: string; line: string }[] = [];
    const clients: MatrixClient[] = [];
    const client = (
      baseUrl: string,
      who: string,
      login: { user_id: string; access_token: string; device_id: string },
    ) => {
      const c = createClient({
        baseUrl,
        userId: login.user_id,
        accessToken: login.access_token,
        deviceId: login.device_id,
        logger: recordingLogger(who, sdkLog, false),
        timelineSupport: true,
      });
      clients.push(c);
      return c;
    };
    t.teardown(() => {
      for (const c of clients) {
        c.stopClient();
        c.removeAllListeners();
      }
    });
    const alice = client(url1, 'alice', aliceLogin);
    const bob = client(url2, 'bob', bobLogin);
    const start = async (c: MatrixClient) => {
      const prepared = waitFor<void>(`${c.getUserId()} first sync`, (done) => {
        const onSync = (state: SyncState) => {
          if (state === SyncState.Prepared) done();
        };
        c.on(ClientEvent.Sync, onSync);
        return () => c.off(ClientEvent.Sync, onSync);
      });
      await c.startClient({ initialSyncLimit: 20, pollTimeout: 5_000 });
      await prepared;
    };
    await start(alice);
    await start(bob);

    const { room_id: roomId } = await alice.createRoom({
      preset: Preset.PrivateChat,
      name: 'Across institutions',
    });
    const invited = waitFor<void>('bob sees the invite', (done) => {
      const onMember = (_e: MatrixEvent, member: { userId: string; membership?: string; roomId: string }) => {
        if (member.userId === bob.getUserId() && member.membership === 'invite' && member.roomId === roomId)
          done();
      };
      bob.on(RoomMemberEvent.Membership, onMember);
      return () => bob.off(RoomMemberEvent.Membership, onMember);
    });
    await alice.invite(roomId, bob.getUserId()!);
    await invited;
    t.pass("bob's client shows alice's invite from hs1");
    const joinedOnHs1 = waitFor<void>('alice sees bob join', (done) => {
      const onMember = (_e: MatrixEvent, member: { userId: string; membership?: string; roomId: string }) => {
        if (member.userId === bob.getUserId() && member.membership === 'join' && member.roomId === roomId)
          done();
      };
      alice.on(RoomMemberEvent.Membership, onMember);
      return () => alice.off(RoomMemberEvent.Membership, onMember);
    });
    await bob.joinRoom(roomId);
    await joinedOnHs1;
    t.pass("bob joins through hs1 and alice's client sees it");

    const received = (c: MatrixClient, body: string) =>
      waitFor<MatrixEvent>(`${c.getUserId()} receives ${body}`, (done) => {
        const onTimeline = (e: MatrixEvent) => {
          if (e.getRoomId() === roomId && e.getType() === 'm.room.message' && e.getContent().body === body)
            done(e);
        };
        c.on(RoomEvent.Timeline, onTimeline);
        return () => c.off(RoomEvent.Timeline, onTimeline);
      });
    for (let i = 0; i < 3; i++) {
      const toBob = received(bob, `hello ${i} from hs1`);
      await alice.sendTextMessage(roomId, `hello ${i} from hs1`);
      const event = await toBob;
      t.equal(event.getSender(), alice.getUserId(), `bob gets message ${i} from alice`);
      const toAlice = received(alice, `reply ${i} from hs2`);
      await bob.sendTextMessage(roomId, `reply ${i} from hs2`);
      t.equal((await toAlice).getSender(), bob.getUserId(), `alice gets reply ${i} from bob`);
    }
    const order = (c: MatrixClient) =>
      c
        .getRoom(roomId)!
        .getLiveTimeline()
        .getEvents()
        .filter((e) => e.getType() === 'm.room.message')
        .map((e) => e.getContent().body as string);
    t.same(order(alice), order(bob), 'both clients show the same messages in the same order');
    t.equal(order(bob).length, 6, 'six messages, none twice');
    t.same(
      sdkLog.filter((l) => l.level === 'error').map((l) => l.line),
      [],
      'the SDK logged no errors',
    );
  });
}
