import './helpers/sdk-node.ts';
import type { AddressInfo } from 'node:net';
import {
  ClientEvent,
  createClient,
  Direction,
  type MatrixClient,
  Preset,
  SetPresence,
  SyncState,
  ThreadFilterType,
} from 'matrix-js-sdk';
import { logger as sdkGlobalLogger } from 'matrix-js-sdk/lib/logger.js';
import t from 'tap';
import { databaseBackends } from './helpers/backends.ts';
import { recordingLogger } from './helpers/sdk-node.ts';
import { startTestServer } from './helpers/server.ts';

// Both backends on a loaded machine: minutes, not seconds.
t.setTimeout(600_000);

(sdkGlobalLogger as unknown as { setLevel(level: string): void }).setLevel('warn');

/** Polls `check` until it holds or `ms` pass (a condition, not a fixed sleep). */
async function waitFor(what: string, check: () => boolean | Promise<boolean>, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Unmodified matrix-js-sdk with thread support: bob replies in a thread alice started, and
 * alice's client lists it through /v1/rooms/{roomId}/threads; bob's syncing shows him online to
 * alice, through her /sync and through GET /presence.
 */
for (const backend of databaseBackends()) {
  t.test(`matrix-js-sdk sees threads and presence on ${backend.name}`, async (t) => {
    t.setTimeout(180_000);
    const s = await startTestServer(t, backend);
    await s.app.listen({ host: '127.0.0.1', port: 0 });
    const { port } = s.app.server.address() as AddressInfo;
    const baseUrl = `http://127.0.0.1:${port}`;
    const sdkLog: { level: string; line: string }[] = [];
    const clients: MatrixClient[] = [];
    t.teardown(() => {
      for (const c of clients) {
        c.stopClient();
        c.removeAllListeners();
      }
    });
    const client = async (name: string) => {
      const login = await s.register(name);
      const c = createClient({
        baseUrl,
        userId: login.user_id,
        accessToken: login.access_token,
        deviceId: login.device_id,
        logger: recordingLogger(name, sdkLog, false),
        timelineSupport: true,
      });
      clients.push(c);
      const prepared = new Promise<void>((resolve, reject) => {
        const onSync = (state: SyncState) => {
          if (state === SyncState.Prepared) resolve();
          else if (state === SyncState.Error) reject(new Error(`${name}: the first sync failed`));
        };
        c.on(ClientEvent.Sync, onSync);
      });
      await c.startClient({ initialSyncLimit: 20, pollTimeout: 5000, threadSupport: true });
      await prepared;
      return c;
    };
    const alice = await client('alice');
    const bob = await client('bob');
    const bobId = bob.getUserId()!;

    const { room_id: roomId } = await alice.createRoom({ preset: Preset.PublicChat, name: 'Assays' });
    await bob.joinRoom(roomId);
    const { event_id: rootId } = await alice.sendMessage(roomId, {
      msgtype: 'm.text',
      body: 'Replicated?',
    } as never);
    await waitFor('bob to see the root', () => bob.getRoom(roomId)?.findEventById(rootId) !== undefined);
    await bob.sendMessage(roomId, rootId, { msgtype: 'm.text', body: 'Yes, twice' } as never);

    // The thread list, as the SDK asks for it.
    await waitFor('the thread list to hold the root', async () => {
      const res = await alice.createThreadListMessagesRequest(
        roomId,
        null,
        10,
        Direction.Backward,
        ThreadFilterType.All,
      );
      return res.chunk.some((e) => e.event_id === rootId);
    });
    const list = await alice.createThreadListMessagesRequest(
      roomId,
      null,
      10,
      Direction.Backward,
      ThreadFilterType.All,
    );
    const root = list.chunk.find((e) => e.event_id === rootId)!;
    const relations = (root.unsigned as Record<string, unknown>)['m.relations'] as Record<
      string,
      { count: number; latest_event: { sender: string } }
    >;
    const bundled = relations['m.thread']!;
    t.equal(bundled.count, 1, 'one reply bundled');
    t.equal(bundled.latest_event.sender, bobId, "bob's reply is the latest");
    // alice's room model knows the thread, with bob's reply in it.
    await waitFor('alice to have the thread', () => {
      const thread = alice.getRoom(roomId)?.getThread(rootId);
      return thread !== null && thread !== undefined && thread.length >= 1;
    });
    t.pass("alice's client shows the thread with its reply");

    // Presence: bob syncs, so he is online to alice.
    await waitFor('bob online in alice’s client', () => alice.getUser(bobId)?.presence === 'online');
    t.equal(alice.getUser(bobId)?.presence, 'online', "alice's /sync shows bob online");
    const status = await alice.getPresence(bobId);
    t.equal(status.presence, 'online', 'GET /presence too');
    // A client going away: its syncs stop marking it online (set_presence=offline: no change),
    // then it says unavailable.
    await bob.setSyncPresence(SetPresence.Offline);
    await bob.setPresence({ presence: 'unavailable', status_msg: 'In the lab' });
    await waitFor(
      'bob unavailable in alice’s client',
      () => alice.getUser(bobId)?.presence === 'unavailable',
    );
    t.equal(alice.getUser(bobId)?.presenceStatusMsg, 'In the lab');
    t.same(
      sdkLog.filter((l) => l.level === 'error'),
      [],
      'the SDK logged no errors',
    );
  });
}
