import './helpers/sdk-node.ts';
import type { AddressInfo } from 'node:net';
import { ClientEvent, createClient, type MatrixClient, Preset, SyncState } from 'matrix-js-sdk';
import { logger as sdkGlobalLogger } from 'matrix-js-sdk/lib/logger.js';
import t from 'tap';
import { databaseBackends } from './helpers/backends.ts';
import { recordingLogger } from './helpers/sdk-node.ts';
import { startTestServer } from './helpers/server.ts';

// Both backends on a loaded machine: minutes, not seconds.
t.setTimeout(600_000);

(sdkGlobalLogger as unknown as { setLevel(level: string): void }).setLevel('warn');

/**
 * Unmodified matrix-js-sdk searches: alice and bob chat in a room, bob's client finds alice's
 * message with searchRoomEvents (order recent, one event of context each side, profiles) and
 * pages back with backPaginateRoomEventsSearch; mallory's client, in no room, finds nothing.
 */
for (const backend of databaseBackends()) {
  t.test(`matrix-js-sdk searches messages on ${backend.name}`, async (t) => {
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
      });
      clients.push(c);
      const prepared = new Promise<void>((resolve, reject) => {
        c.on(ClientEvent.Sync, (state: SyncState) => {
          if (state === SyncState.Prepared) resolve();
          else if (state === SyncState.Error) reject(new Error(`${name}: the first sync failed`));
        });
      });
      await c.startClient({ initialSyncLimit: 10, pollTimeout: 5000 });
      await prepared;
      return c;
    };
    const alice = await client('alice');
    const bob = await client('bob');
    const mallory = await client('mallory');

    const { room_id: roomId } = await alice.createRoom({ preset: Preset.PublicChat, name: 'Spectra' });
    await bob.joinRoom(roomId);
    await alice.sendTextMessage(roomId, 'Calibration first');
    const { event_id: target } = await alice.sendTextMessage(roomId, 'The chromatography column is ready');
    await bob.sendTextMessage(roomId, 'Thanks, running the samples now');
    const older: string[] = [];
    for (let i = 0; i < 12; i++)
      older.push((await alice.sendTextMessage(roomId, `chromatography run ${i}`)).event_id);

    const results = await bob.searchRoomEvents({ term: 'chromatography' });
    t.equal(results.count, 13, 'thirteen matches counted');
    t.equal(results.results.length, 10, 'one page of ten');
    t.same(
      results.results.map((r) => r.context.getEvent().getId()),
      older.slice(2).reverse(),
      'newest first, as the SDK asks (order_by recent)',
    );
    t.ok(results.highlights.includes('chromatography'), 'the word is highlighted');
    t.type(results.next_batch, 'string', 'more to come');

    const more = await bob.backPaginateRoomEventsSearch(results);
    t.equal(more.results.length, 13, 'the second page added');
    const hit = more.results.find((r) => r.context.getEvent().getId() === target);
    t.ok(hit, "alice's message is found");
    const ctx = hit!.context;
    t.equal(ctx.getEvent().getContent().body, 'The chromatography column is ready');
    t.same(
      ctx.getTimeline().map((e) => e.getContent().body),
      ['Calibration first', 'The chromatography column is ready', 'Thanks, running the samples now'],
      'with one event of context each side',
    );
    t.equal(ctx.getEvent().getSender(), alice.getUserId(), 'sent by alice');
    t.equal(more.next_batch, undefined, 'nothing further');

    const outsider = await mallory.searchRoomEvents({ term: 'chromatography' });
    t.same(outsider.results, [], 'mallory, in no room, finds nothing');
    t.same(
      sdkLog.filter((l) => l.level === 'error'),
      [],
      'the SDK logged no errors',
    );
  });
}
