import './helpers/sdk-node.ts';
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { ClientEvent, createClient, Direction, type MatrixClient, SyncState } from 'matrix-js-sdk';
import { logger as sdkGlobalLogger } from 'matrix-js-sdk/lib/logger.js';
import t from 'tap';
import { databaseBackends } from './helpers/backends.ts';
import { pastTs, retentionRoom, sendText } from './helpers/retention.ts';
import { recordingLogger } from './helpers/sdk-node.ts';
import { startTestServer } from './helpers/server.ts';

/**
 * matrix-js-sdk clients keep working across a retention purge (spec/retention.md): a client
 * syncing through it, and a new client paginating the room's history back to its start.
 */
(sdkGlobalLogger as unknown as { setLevel(level: string): void }).setLevel('warn');
t.setTimeout(600_000);

async function until(what: string, check: () => boolean, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

for (const backend of databaseBackends()) {
  t.test(`matrix-js-sdk across a purge on ${backend.name}`, async (t) => {
    const s = await startTestServer(t, backend, { retentionAllowedMin: 1000, retentionPurgeIntervalMs: 0 });
    await s.app.listen({ host: '127.0.0.1', port: 0 });
    const baseUrl = `http://127.0.0.1:${(s.app.server.address() as AddressInfo).port}`;
    const alice = await s.register('alice');
    const bob = await s.register('bob');
    const tag = randomBytes(6).toString('hex');
    const roomId = await retentionRoom(s, alice, bob, 1000);

    const sdkLog: { level: string; line: string }[] = [];
    const failures: string[] = [];
    const clients: MatrixClient[] = [];
    t.teardown(() => {
      for (const c of clients) {
        c.stopClient();
        c.removeAllListeners();
      }
    });
    const newClient = async (who: typeof bob, name: string) => {
      const client = createClient({
        baseUrl,
        userId: who.user_id,
        accessToken: who.access_token,
        deviceId: who.device_id,
        timelineSupport: true,
        logger: recordingLogger(name, sdkLog, false),
        fetchFn: async (input, init) => {
          const res = await fetch(input, init);
          // The SDK asks for MatrixRTC transports, which Conclave does not serve (404 is the answer).
          if (!res.ok && !String(input).includes('/rtc/transports'))
            failures.push(`${name} ${init?.method ?? 'GET'} ${String(input)} ${res.status}`);
          return res;
        },
      });
      clients.push(client);
      const prepared = new Promise<void>((resolve, reject) => {
        client.on(ClientEvent.Sync, (state: SyncState) => {
          if (state === SyncState.Prepared) resolve();
          if (state === SyncState.Error) reject(new Error(`${name}: sync failed`));
        });
      });
      await client.startClient({ initialSyncLimit: 10, pollTimeout: 5000 });
      await prepared;
      return client;
    };
    const bodies = (c: MatrixClient) =>
      (c.getRoom(roomId)?.getLiveTimeline().getEvents() ?? [])
        .map((e) => e.getContent().body)
        .filter((b): b is string => typeof b === 'string');

    const bobClient = await newClient(bob, 'bob');
    for (let i = 0; i < 15; i++) await sendText(s, alice, roomId, `old-${tag}-${i}`);
    await until('bob sees the old messages', () => bodies(bobClient).includes(`old-${tag}-14`));
    const [last] = await s.runtime.database.db
      .selectFrom('pdus')
      .select('origin_server_ts')
      .where('room_id', '=', roomId)
      .orderBy('origin_server_ts', 'desc')
      .limit(1)
      .execute();
    await pastTs(last!.origin_server_ts + 1);
    const split = Date.now();
    await pastTs(split);
    for (let i = 0; i < 4; i++) await sendText(s, alice, roomId, `young-${tag}-${i}`);
    await until('bob sees the young messages', () => bodies(bobClient).includes(`young-${tag}-3`));

    const job = await s.runtime.services.retention.runJob({ now: split + 1000 });
    t.equal(job.purges[0]?.eventsDeleted, 15, '15 old messages purged');

    // The syncing client goes on: new messages arrive, nothing errors.
    await sendText(s, alice, roomId, `after-${tag}`);
    await until('bob sees the message after the purge', () => bodies(bobClient).includes(`after-${tag}`));

    // A new client (bob's second device) paginates to the start of what remains.
    const second = await s.login('bob');
    const fresh = await newClient({ ...bob, ...second }, 'bob-2');
    const room = fresh.getRoom(roomId)!;
    for (let i = 0; i < 20; i++) {
      const timeline = room.getLiveTimeline();
      if (timeline.getPaginationToken(Direction.Backward) === null) break;
      await fresh.scrollback(room, 10);
    }
    t.equal(
      room.getLiveTimeline().getPaginationToken(Direction.Backward),
      null,
      'pagination reached the start',
    );
    const seen = bodies(fresh);
    t.same(
      seen.filter((b) => b.startsWith(`old-${tag}`)),
      [],
      'no purged message in the new client',
    );
    t.same(
      seen.filter((b) => b.startsWith('young-') || b.startsWith('after-')),
      [0, 1, 2, 3].map((i) => `young-${tag}-${i}`).concat(`after-${tag}`),
      'the remaining messages, in order',
    );
    t.same(failures, [], 'no request of either client failed');
    t.same(
      sdkLog.filter((l) => l.level === 'error').map((l) => l.line),
      [],
      'the SDK logged no error',
    );
  });
}
