import t from 'tap';
import { databaseBackends } from './helpers/backends.ts';
import { startHomeservers } from './helpers/federation.ts';
import { type Login, syncOnce, type TestServer } from './helpers/server.ts';

/**
 * Federation when the network fails: a server that cannot be reached while the others go on, and
 * two servers partitioned from each other while both change the room's state.
 */
const V3 = '/_matrix/client/v3';
// Several homeservers in one process, on a loaded 2-core machine: more than tap's default 120 s.
t.setTimeout(600_000);
const enc = encodeURIComponent;

type Ev = { type: string; sender: string; event_id: string; content: Record<string, unknown> };

async function until<T>(
  what: string,
  read: () => Promise<T>,
  done: (v: T) => boolean,
  timeoutMs = 300_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await read();
    if (done(v)) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

async function timeline(s: TestServer, who: Login, roomId: string): Promise<Ev[]> {
  const r = await s.request('GET', `${V3}/rooms/${enc(roomId)}/messages?dir=b&limit=500`, {
    token: who.access_token,
  });
  return (r.json().chunk as Ev[]).slice().reverse();
}

async function stateOf(s: TestServer, who: Login, roomId: string, type: string) {
  const r = await s.request('GET', `${V3}/rooms/${enc(roomId)}/state/${type}`, { token: who.access_token });
  return r.json();
}

for (const backend of databaseBackends()) {
  t.test(`federation faults on ${backend.name}`, async (t) => {
    const { servers, network } = await startHomeservers(t, backend, ['hs1.test', 'hs2.test', 'hs3.test']);
    const [hs1, hs2, hs3] = servers as [TestServer, TestServer, TestServer];
    const alice = await hs1.register('alice');
    const bob = await hs2.register('bob');
    const carol = await hs3.register('carol');
    const created = await hs1.request('POST', `${V3}/createRoom`, {
      token: alice.access_token,
      body: { preset: 'public_chat', power_level_content_override: { users: { [bob.user_id]: 100 } } },
    });
    const roomId: string = created.json().room_id;
    for (const [s, who] of [
      [hs2, bob],
      [hs3, carol],
    ] as const) {
      const j = await s.request('POST', `${V3}/join/${enc(roomId)}?via=hs1.test`, {
        token: who.access_token,
        body: {},
      });
      t.equal(j.statusCode, 200, j.body);
    }
    // Everyone knows everyone before the network fails.
    for (const [s, who] of [
      [hs1, alice],
      [hs2, bob],
      [hs3, carol],
    ] as const) {
      await until(
        `${s.config.serverName} to see all three members`,
        async () =>
          (
            await s.request('GET', `${V3}/rooms/${enc(roomId)}/joined_members`, { token: who.access_token })
          ).json(),
        (m) => [alice, bob, carol].every((u) => m.joined?.[u.user_id]),
      );
    }
    const send = async (s: TestServer, who: Login, body: string) => {
      const r = await s.request('PUT', `${V3}/rooms/${enc(roomId)}/send/m.room.message/${body}`, {
        token: who.access_token,
        body: { msgtype: 'm.text', body },
      });
      t.equal(r.statusCode, 200);
    };

    t.test('a server that was unreachable catches up, with each event once', async (t) => {
      network.cut('hs3.test', 'hs1.test');
      network.cut('hs3.test', 'hs2.test');
      const sinceCut = (await syncOnce(hs3, carol)).next_batch as string;
      const expected: string[] = [];
      for (let i = 0; i < 50; i++) {
        const [s, who] = i % 2 === 0 ? [hs1, alice] : [hs2, bob];
        expected.push(`m${i}`);
        await send(s, who, `m${i}`);
      }
      const topic = await hs1.request('PUT', `${V3}/rooms/${enc(roomId)}/state/m.room.topic`, {
        token: alice.access_token,
        body: { topic: 'while hs3 was away' },
      });
      t.equal(topic.statusCode, 200);
      network.heal('hs3.test', 'hs1.test');
      network.heal('hs3.test', 'hs2.test');
      // Carol speaks: hs1 and hs2 hear from hs3 again and send what they owe it.
      await send(hs3, carol, 'back');
      const seen = await until(
        'hs3 to catch up',
        () => timeline(hs3, carol, roomId),
        (ev) => expected.every((b) => ev.some((e) => e.content.body === b)),
      );
      const bodies = seen.filter((e) => e.type === 'm.room.message').map((e) => String(e.content.body));
      // A server catching up stores events in the order they reach it (a gap filled later comes
      // later), so only the set is compared here; federation-rooms.test.ts checks the order.
      t.same(bodies.filter((b) => expected.includes(b)).sort(), [...expected].sort(), 'every message, once');
      const topicNow = await until(
        'the topic on hs3',
        () => stateOf(hs3, carol, roomId, 'm.room.topic'),
        (c) => c.topic === 'while hs3 was away',
      );
      t.equal(topicNow.topic, 'while hs3 was away', 'hs3 has the same state');
      // Carol's client gets each event once over incremental syncs.
      const ids: string[] = [];
      let since = sinceCut;
      for (let i = 0; i < 30; i++) {
        const r = await syncOnce(hs3, carol, { since, timeout: 0 });
        since = r.next_batch;
        const room = r.rooms.join[roomId];
        if (room) ids.push(...(room.timeline.events as Ev[]).map((e) => e.event_id));
        if (!room) break;
      }
      t.equal(new Set(ids).size, ids.length, 'no event delivered twice to the client');
      await until(
        'hs1 to have carol message',
        () => timeline(hs1, alice, roomId),
        (ev) => ev.some((e) => e.content.body === 'back'),
      );
    });

    t.test(
      'a partition: both sides change the state; after it every server resolves to the same',
      async (t) => {
        network.cut('hs1.test', 'hs2.test');
        const a = await hs1.request('PUT', `${V3}/rooms/${enc(roomId)}/state/m.room.topic`, {
          token: alice.access_token,
          body: { topic: 'topic from hs1' },
        });
        const b = await hs2.request('PUT', `${V3}/rooms/${enc(roomId)}/state/m.room.topic`, {
          token: bob.access_token,
          body: { topic: 'topic from hs2' },
        });
        t.equal(a.statusCode, 200);
        t.equal(b.statusCode, 200);
        const plNow = await stateOf(hs2, bob, roomId, 'm.room.power_levels');
        const pl = await hs2.request('PUT', `${V3}/rooms/${enc(roomId)}/state/m.room.power_levels`, {
          token: bob.access_token,
          body: { ...plNow, users: { ...plNow.users, [carol.user_id]: 50 } },
        });
        t.equal(pl.statusCode, 200, pl.body);
        network.heal('hs1.test', 'hs2.test');
        // New messages on both sides carry each side's events across, and merge the branches.
        await send(hs1, alice, 'after-partition-1');
        await send(hs2, bob, 'after-partition-2');
        const all = [
          [hs1, alice],
          [hs2, bob],
          [hs3, carol],
        ] as const;
        for (const [s, who] of all) {
          await until(
            `${s.config.serverName} to hear both sides`,
            () => timeline(s, who, roomId),
            (ev) =>
              ['after-partition-1', 'after-partition-2'].every((body) =>
                ev.some((e) => e.content.body === body),
              ) &&
              ev.some((e) => e.content.topic === 'topic from hs1') &&
              ev.some((e) => e.content.topic === 'topic from hs2'),
          );
        }
        const topics = await Promise.all(all.map(([s, who]) => stateOf(s, who, roomId, 'm.room.topic')));
        t.equal(
          new Set(topics.map((x) => x.topic)).size,
          1,
          `one topic everywhere: ${topics.map((x) => x.topic)}`,
        );
        const levels = await Promise.all(
          all.map(([s, who]) => stateOf(s, who, roomId, 'm.room.power_levels')),
        );
        for (const l of levels)
          t.equal(l.users[carol.user_id], 50, 'the power level change holds everywhere');
        for (const [s, who] of all) {
          const r = await syncOnce(s, who, { use_state_after: 'true' });
          const after = r.rooms.join[roomId].state_after.events as Ev[];
          t.equal(
            after.find((e) => e.type === 'm.room.topic')?.content.topic,
            topics[0]!.topic,
            'sync shows that state',
          );
        }
      },
    );
  });
}
