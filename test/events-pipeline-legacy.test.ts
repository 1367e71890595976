import t from 'tap';
import { legacyReferenceHashes } from '../src/events/build.ts';
import { EventPipeline, type IngestOutcome } from '../src/events/pipeline.ts';
import { type RoomEvent, stateTuple } from '../src/protocol/event.ts';
import { hashAndSignEvent } from '../src/protocol/event-signing.ts';
import type { JsonObject } from '../src/protocol/json.ts';
import { getRoomVersion } from '../src/protocol/room-versions.ts';
import { generateSigningKey } from '../src/protocol/signing.ts';
import { resolveState } from '../src/protocol/state-res/index.ts';
import * as store from '../src/storage/events.repository.ts';
import { databaseBackends } from './helpers/backends.ts';
import { startTestServer } from './helpers/server.ts';
import { StaticVerifier } from './helpers/static-verifier.ts';

/**
 * The event pipeline in a room of version 1, fed events of a made-up server ("remote.test"):
 * the event IDs are the senders' to choose, so the pipeline must tie each to the server it names
 * (that server's signature), refuse an ID of no server, and not let a second event under an ID
 * already held as an outlier take its place.
 */
const V3 = '/_matrix/client/v3';
const REMOTE = 'remote.test';
const enc = encodeURIComponent;

for (const backend of databaseBackends()) {
  t.test(`the pipeline in a v1 room on ${backend.name}`, async (t) => {
    const s = await startTestServer(t, backend);
    const services = s.runtime.services;
    const local = services.serverKeys.key;
    const remoteKey = generateSigningKey('ed25519:r1');
    const pipeline = new EventPipeline({
      serverName: s.config.serverName,
      reader: services.reader,
      resolver: resolveState,
      verifier: new StaticVerifier(
        new Map([
          [s.config.serverName, { keyId: local.keyId, publicKey: local.publicKey }],
          [REMOTE, { keyId: remoteKey.keyId, publicKey: remoteKey.publicKey }],
        ]),
      ),
      now: Date.now,
    });
    const rv = getRoomVersion('1')!;
    const alice = await s.register('alice');
    const created = await s.request('POST', `${V3}/createRoom`, {
      token: alice.access_token,
      body: { room_version: '1', preset: 'public_chat' },
    });
    t.equal(created.statusCode, 200, created.body);
    const roomId: string = created.json().room_id;

    const ingest = (event: RoomEvent, kind: 'new' | 'outlier' = 'new') =>
      services.events.locks.withRoomLock(roomId, (lock) =>
        pipeline.ingest(lock, rv, { kind, origin: REMOTE, event }),
      );
    const status = (o: IngestOutcome) => `${o.status}${'reason' in o ? ` (${o.reason})` : ''}`;
    const rob = `@rob:${REMOTE}`;
    /** An event of rob's under `eventId` on the room's head, signed by remote.test only. */
    const robEvent = async (
      eventId: string,
      fields: { type: string; content: JsonObject; state_key?: string },
    ) => {
      const group = await services.rooms.currentGroup(roomId);
      const st = await services.reader.stateIdsAt(services.db, group);
      const auth = [
        st.get(stateTuple('m.room.create', '')),
        st.get(stateTuple('m.room.power_levels', '')),
        st.get(stateTuple('m.room.member', rob)),
        ...(fields.type === 'm.room.member' ? [st.get(stateTuple('m.room.join_rules', ''))] : []),
      ].filter((id): id is string => id !== undefined);
      const prev = await store.forwardExtremityIds(services.db, roomId);
      const depth = Math.max(...(await store.getPdus(services.db, prev)).map((r) => r.depth)) + 1;
      const unsigned = {
        ...fields,
        event_id: eventId,
        room_id: roomId,
        sender: rob,
        origin_server_ts: Date.now(),
        depth,
        prev_events: prev,
        auth_events: auth,
        reference_hashes: await legacyReferenceHashes(services.db, services.reader, rv, [...prev, ...auth]),
      };
      return hashAndSignEvent(unsigned, rv, REMOTE, remoteKey.keyId, remoteKey.seed) as unknown as RoomEvent;
    };

    const join = await robEvent(`$join:${REMOTE}`, {
      type: 'm.room.member',
      state_key: rob,
      content: { membership: 'join' },
    });
    t.equal(status(await ingest(join)), 'persisted', 'rob joins under an ID of his server');

    t.test('an ID of another server, which did not sign, or of no server, is dropped', async (t) => {
      const asLocal = await robEvent(`$x:${s.config.serverName}`, {
        type: 'm.room.message',
        content: { body: 'under our name' },
      });
      t.match(status(await ingest(asLocal)), /^dropped \(signature check failed: .*conclave\.test/);
      const nameless = await robEvent('$nameless', {
        type: 'm.room.message',
        content: { body: 'no server' },
      });
      t.match(status(await ingest(nameless)), /^dropped \(event_id is not of the form/);
      t.equal(
        (await store.getPdus(services.db, [asLocal.event_id, nameless.event_id])).length,
        0,
        'none stored',
      );
    });

    t.test('an outlier is upgraded by the same event only, not by another under its ID', async (t) => {
      const first = await robEvent(`$twice:${REMOTE}`, {
        type: 'm.room.message',
        content: { body: 'first' },
      });
      t.equal(status(await ingest(first, 'outlier')), 'outlier', 'held as an outlier');
      const second = await robEvent(`$twice:${REMOTE}`, {
        type: 'm.room.message',
        content: { body: 'second' },
      });
      t.equal(
        status(await ingest(second)),
        'dropped (another event is held under this event ID)',
        'another event under the ID is dropped',
      );
      const [row] = await store.getPdus(services.db, [first.event_id]);
      t.equal(row?.outlier, true, 'the outlier stays one');
      t.equal(status(await ingest(first)), 'persisted', 'the same event upgrades it');
      const shown = await s.request('GET', `${V3}/rooms/${enc(roomId)}/event/${enc(first.event_id)}`, {
        token: alice.access_token,
      });
      t.equal(shown.json().content?.body, 'first', 'with its own content');
    });
  });
}
