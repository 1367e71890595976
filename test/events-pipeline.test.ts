import t, { type Test as Tap } from 'tap';
import { EventPipeline, type IngestOutcome } from '../src/events/pipeline.ts';
import { type Pdu, type RoomEvent, stateTuple } from '../src/protocol/event.ts';
import { hashAndSignEvent } from '../src/protocol/event-signing.ts';
import { computeEventId } from '../src/protocol/hashes.ts';
import type { JsonObject } from '../src/protocol/json.ts';
import { getRoomVersion } from '../src/protocol/room-versions.ts';
import { generateSigningKey, type SigningKey } from '../src/protocol/signing.ts';
import { resolveState } from '../src/protocol/state-res/index.ts';
import * as store from '../src/storage/events.repository.ts';
import { databaseBackends } from './helpers/backends.ts';
import { startTestServer, syncOnce } from './helpers/server.ts';
import { StaticVerifier } from './helpers/static-verifier.ts';

/**
 * The event pipeline on its own, fed events of a second server ("remote.test") signed with a key
 * the test makes, as federation will feed it: forks, rejection, soft failure, outliers, and
 * redactions applied by the same rule on every path.
 */
const V3 = '/_matrix/client/v3';
const REMOTE = 'remote.test';
const enc = encodeURIComponent;

for (const backend of databaseBackends()) {
  t.test(`event pipeline on ${backend.name}`, async (t) => {
    const s = await startTestServer(t, backend);
    const services = s.runtime.services;
    const local = services.serverKeys.key;
    const remoteKey: SigningKey = generateSigningKey('ed25519:r1');
    const verifier = new StaticVerifier(
      new Map([
        [s.config.serverName, { keyId: local.keyId, publicKey: local.publicKey }],
        [REMOTE, { keyId: remoteKey.keyId, publicKey: remoteKey.publicKey }],
      ]),
    );
    const pipeline = new EventPipeline({
      serverName: s.config.serverName,
      reader: services.reader,
      resolver: resolveState,
      verifier,
      now: Date.now,
    });
    const rv = getRoomVersion('12')!;
    const alice = await s.register('alice');
    const bob = await s.register('bob');
    const created = await s.request('POST', `${V3}/createRoom`, {
      token: alice.access_token,
      body: { preset: 'public_chat' },
    });
    const roomId: string = created.json().room_id;
    await s.request('POST', `${V3}/join/${enc(roomId)}`, { token: bob.access_token, body: {} });

    const ingest = (event: RoomEvent, kind: 'new' | 'outlier' | 'backfill' = 'new') =>
      services.events.locks.withRoomLock(roomId, (lock) =>
        pipeline.ingest(lock, rv, { kind, origin: REMOTE, event }),
      );
    const state = async () => {
      const group = await services.rooms.currentGroup(roomId);
      return services.reader.stateIdsAt(services.db, group);
    };
    const extremities = () => store.forwardExtremityIds(services.db, roomId);
    /** A remote event on top of `prev`, with auth events taken from the current state. */
    const remoteEvent = async (
      fields: { type: string; sender: string; content: JsonObject; state_key?: string },
      opts: { prev?: string[]; auth?: string[]; key?: SigningKey; server?: string; ts?: number } = {},
    ): Promise<RoomEvent> => {
      const st = await state();
      const auth =
        opts.auth ??
        [
          st.get(stateTuple('m.room.power_levels', '')),
          st.get(stateTuple('m.room.member', fields.sender)),
          ...(fields.type === 'm.room.member'
            ? [
                st.get(stateTuple('m.room.join_rules', '')),
                st.get(stateTuple('m.room.member', fields.state_key!)),
              ]
            : []),
        ].filter((id, i, all): id is string => id !== undefined && all.indexOf(id) === i);
      const prev = opts.prev ?? (await extremities());
      const prevRows = await store.getPdus(services.db, prev);
      const unsigned: Omit<Pdu, 'hashes' | 'signatures'> = {
        ...fields,
        room_id: roomId,
        origin_server_ts: opts.ts ?? Date.now(),
        depth: Math.max(1, ...prevRows.map((r) => r.depth)) + 1,
        prev_events: prev,
        auth_events: auth,
      };
      const key = opts.key ?? remoteKey;
      const pdu = hashAndSignEvent(unsigned, rv, opts.server ?? REMOTE, key.keyId, key.seed) as Pdu;
      return { ...pdu, event_id: computeEventId(pdu, rv) };
    };
    const timelineIds = async (who = alice) => {
      const r = await s.request('GET', `${V3}/rooms/${enc(roomId)}/messages?dir=b&limit=100`, {
        token: who.access_token,
      });
      return (r.json().chunk as Array<{ event_id: string }>).map((e) => e.event_id);
    };
    const expectStatus = (t: Tap, o: IngestOutcome, status: IngestOutcome['status'], msg: string) =>
      t.equal(o.status, status, `${msg}${'reason' in o ? ` (${o.reason})` : ''}`);

    const rob = `@rob:${REMOTE}`;
    const join = await remoteEvent({
      type: 'm.room.member',
      sender: rob,
      state_key: rob,
      content: { membership: 'join' },
    });
    expectStatus(t, await ingest(join), 'persisted', 'a remote user joins the public room');
    t.equal(
      (await state()).get(stateTuple('m.room.member', rob)),
      join.event_id,
      'current state has the join',
    );

    t.test(
      'a fork: two events on the same prev are both extremities; the next local event merges them',
      async (t) => {
        const [base] = await extremities();
        const a = await remoteEvent(
          { type: 'm.room.message', sender: rob, content: { body: 'a' } },
          { prev: [base!] },
        );
        const b = await remoteEvent(
          { type: 'm.room.message', sender: rob, content: { body: 'b' } },
          { prev: [base!] },
        );
        expectStatus(t, await ingest(a), 'persisted', 'first branch');
        expectStatus(t, await ingest(b), 'persisted', 'second branch');
        t.same(
          new Set(await extremities()),
          new Set([a.event_id, b.event_id]),
          'both branches are extremities',
        );
        const sent = await s.request('PUT', `${V3}/rooms/${enc(roomId)}/send/m.room.message/t1`, {
          token: alice.access_token,
          body: { body: 'merge' },
        });
        t.equal(sent.statusCode, 200);
        const merged = (await store.getPdus(services.db, [sent.json().event_id]))[0]!;
        t.same(
          new Set((merged.json as unknown as Pdu).prev_events),
          new Set([a.event_id, b.event_id]),
          'points at both',
        );
        t.same(await extremities(), [merged.event_id], 'one extremity again');
        const ids = await timelineIds();
        t.ok(ids.includes(a.event_id) && ids.includes(b.event_id), 'both branches are in the history');
        expectStatus(t, await ingest(a), 'duplicate', 'a retried event is a duplicate');
      },
    );

    t.test(
      'conflicting state on two branches: the current state is resolved, whatever arrives last',
      async (t) => {
        const [base] = await extremities();
        const asAlice = { key: local, server: s.config.serverName, prev: [base!] };
        const now = Date.now();
        const topic = (text: string, ts: number) =>
          remoteEvent(
            { type: 'm.room.topic', sender: alice.user_id, state_key: '', content: { topic: text } },
            { ...asAlice, ts },
          );
        const early = await topic('early branch', now);
        const late = await topic('late branch', now + 1000);
        // The later one (by origin_server_ts, both senders equal in power) wins state resolution v2.1
        // even though it arrives first and the other branch arrives last.
        expectStatus(t, await ingest(late), 'persisted', 'the later topic arrives first');
        expectStatus(t, await ingest(early), 'persisted', 'the earlier topic arrives last');
        t.same(new Set(await extremities()), new Set([early.event_id, late.event_id]), 'two extremities');
        t.equal(
          (await state()).get(stateTuple('m.room.topic', '')),
          late.event_id,
          'resolved, not the newest',
        );
        const r = await s.request('GET', `${V3}/rooms/${enc(roomId)}/state/m.room.topic`, {
          token: bob.access_token,
        });
        t.equal(r.json().topic, 'late branch', 'clients read the resolved state');
        // The timeline ends on the branch that arrived last; state_after (use_state_after, spec
        // v1.16) says what the room's state is there.
        const first = await syncOnce(s, bob, { use_state_after: 'true' });
        const after = first.rooms.join[roomId].state_after.events as Array<{
          type: string;
          content: JsonObject;
        }>;
        t.equal(
          after.find((e) => e.type === 'm.room.topic')?.content.topic,
          'late branch',
          'initial state_after',
        );
        t.notOk(first.rooms.join[roomId].state, 'state is left out');
        const again = await syncOnce(s, bob, {
          use_state_after: 'true',
          since: first.next_batch,
          timeout: 0,
        });
        t.notOk(again.rooms.join[roomId], 'nothing new since');
        const next = await s.request('PUT', `${V3}/rooms/${enc(roomId)}/send/m.room.message/t0`, {
          token: alice.access_token,
          body: { body: 'after the merge' },
        });
        t.equal(next.statusCode, 200, 'a new event merges the branches');
        t.same(await extremities(), [next.json().event_id]);
        t.equal(
          (await state()).get(stateTuple('m.room.topic', '')),
          late.event_id,
          'the merge keeps the resolution',
        );
      },
    );

    t.test('a bad signature, a forged sender server and a wrong event ID are dropped', async (t) => {
      const forged = await remoteEvent(
        { type: 'm.room.message', sender: rob, content: { body: 'forged' } },
        { key: generateSigningKey('ed25519:r1') },
      );
      expectStatus(t, await ingest(forged), 'dropped', 'signed with another key');
      const other = await remoteEvent(
        { type: 'm.room.message', sender: `@alice:${s.config.serverName}`, content: { body: 'as alice' } },
        { server: REMOTE },
      );
      expectStatus(t, await ingest(other), 'dropped', 'remote.test signs for a user of this server');
      const good = await remoteEvent({ type: 'm.room.message', sender: rob, content: { body: 'x' } });
      expectStatus(
        t,
        await ingest({ ...good, event_id: '$wrong' }),
        'dropped',
        'claimed event ID is not the hash',
      );
      t.equal((await store.getPdus(services.db, [forged.event_id, other.event_id])).length, 0, 'none stored');
    });

    t.test('an event that fails auth is rejected: stored with its reason, never served', async (t) => {
      const mallory = `@mallory:${REMOTE}`;
      const ev = await remoteEvent({
        type: 'm.room.message',
        sender: mallory,
        content: { body: 'not a member' },
      });
      expectStatus(t, await ingest(ev), 'rejected', 'a message from a non-member');
      const [row] = await store.getPdus(services.db, [ev.event_id]);
      t.ok(row?.rejected_reason, 'kept with the reason');
      t.equal(row?.stream_ordering, null, 'no stream position');
      t.notOk((await timelineIds()).includes(ev.event_id), 'not in the history');
      const ban = await remoteEvent({
        type: 'm.room.member',
        sender: rob,
        state_key: `@bob:${s.config.serverName}`,
        content: { membership: 'ban' },
      });
      expectStatus(t, await ingest(ban), 'rejected', 'a ban by a user without the power');
      const r = await s.request('GET', `${V3}/rooms/${enc(roomId)}/joined_members`, {
        token: alice.access_token,
      });
      t.ok(r.json().joined[`@bob:${s.config.serverName}`], 'bob is still joined');
    });

    t.test('an event allowed before a ban but not after it is soft-failed', async (t) => {
      const beforeBan = await extremities();
      const banned = await s.request('POST', `${V3}/rooms/${enc(roomId)}/ban`, {
        token: alice.access_token,
        body: { user_id: rob },
      });
      t.equal(banned.statusCode, 200);
      const st = await services.reader.stateIdsAt(
        services.db,
        (await store.getPdus(services.db, beforeBan))[0]!.state_group_after!,
      );
      const late = await remoteEvent(
        { type: 'm.room.message', sender: rob, content: { body: 'sent before I saw the ban' } },
        {
          prev: beforeBan,
          auth: [st.get(stateTuple('m.room.power_levels', ''))!, st.get(stateTuple('m.room.member', rob))!],
        },
      );
      expectStatus(t, await ingest(late), 'soft_failed', 'passes against its state, not the current one');
      const [row] = await store.getPdus(services.db, [late.event_id]);
      t.equal(row?.soft_failed, true);
      t.notOk((await timelineIds()).includes(late.event_id), 'never served');
      t.notOk((await extremities()).includes(late.event_id), 'not an extremity');
    });

    t.test(
      'an outlier is held without a position and upgraded when it arrives in the timeline',
      async (t) => {
        const dave = `@dave:${REMOTE}`;
        const ev = await remoteEvent({
          type: 'm.room.member',
          sender: dave,
          state_key: dave,
          content: { membership: 'join' },
        });
        expectStatus(t, await ingest(ev, 'outlier'), 'outlier', 'held as an outlier');
        let [row] = await store.getPdus(services.db, [ev.event_id]);
        t.equal(row?.stream_ordering, null, 'no position');
        t.equal(row?.state_group_before, null, 'no state');
        t.notOk((await state()).has(stateTuple('m.room.member', dave)), 'not in the current state');
        expectStatus(t, await ingest(ev), 'persisted', 'the same event, now in the timeline');
        [row] = await store.getPdus(services.db, [ev.event_id]);
        t.type(row?.stream_ordering, 'number', 'it has a position now');
        t.equal((await state()).get(stateTuple('m.room.member', dave)), ev.event_id, 'and is current state');
      },
    );

    t.test('a remote redaction of another server user event does not apply without the power', async (t) => {
      const target = await s.request('PUT', `${V3}/rooms/${enc(roomId)}/send/m.room.message/t2`, {
        token: bob.access_token,
        body: { body: 'keep me' },
      });
      const targetId: string = target.json().event_id;
      const carol = `@carol:${REMOTE}`;
      const carolJoin = await remoteEvent({
        type: 'm.room.member',
        sender: carol,
        state_key: carol,
        content: { membership: 'join' },
      });
      expectStatus(t, await ingest(carolJoin), 'persisted', 'carol joins');
      const redaction = await remoteEvent({
        type: 'm.room.redaction',
        sender: carol,
        content: { redacts: targetId },
      });
      expectStatus(t, await ingest(redaction), 'persisted', 'the redaction event itself is allowed');
      const after = await s.request('GET', `${V3}/rooms/${enc(roomId)}/event/${enc(targetId)}`, {
        token: alice.access_token,
      });
      t.equal(after.json().content.body, 'keep me', 'the target keeps its content');
      // A redaction that names an event before it arrives applies once the event comes, if allowed.
      const own = await remoteEvent({ type: 'm.room.message', sender: carol, content: { body: 'oops' } });
      const early = await remoteEvent(
        { type: 'm.room.redaction', sender: carol, content: { redacts: own.event_id } },
        { prev: [redaction.event_id] },
      );
      expectStatus(t, await ingest(early), 'persisted', 'a redaction of an event not held yet');
      expectStatus(t, await ingest(own), 'persisted', 'the target arrives late');
      const [row] = await store.getPdus(services.db, [own.event_id]);
      t.equal(row?.redacted_by, early.event_id, 'the earlier redaction applies');
    });
  });
}
