import t from 'tap';
import { MemoryBus } from '../src/bus/memory-bus.ts';
import { NamespacedBus } from '../src/bus/namespaced-bus.ts';
import { ChangeCache } from '../src/streams/change-cache.ts';
import type { StreamChange } from '../src/streams/notifier.ts';
import { databaseBackends, testRedisUrl } from './helpers/backends.ts';
import { startTestServer } from './helpers/server.ts';

const msg = (position: number, roomId: string, userIds: string[] = []): StreamChange => ({
  kind: 'event',
  position,
  roomId,
  userIds,
});

t.test('positions heard in order are known; a range outside them is not', async (t) => {
  const cache = new ChangeCache(10);
  cache.record(msg(11, '!a'));
  cache.record(msg(12, '!b', ['@u:x']));
  cache.record({ kind: 'receipt', position: 13, roomId: '!a', userIds: ['@v:x'] });
  t.equal(cache.position, 13);
  const w = cache.window(10, 13)!;
  t.same([...w.rooms(['event'])].sort(), ['!a', '!b']);
  t.ok(w.roomHas('!a', 'receipt'));
  t.notOk(w.roomHas('!b', 'receipt'));
  t.ok(w.concernsUser('@u:x', 'event'));
  t.notOk(w.concernsUser('@u:x', 'receipt'));
  t.same([...cache.window(12, 13)!.rooms(['event'])], [], 'only the range asked for');
  t.equal(cache.window(9, 13), undefined, 'below what the cache started from');
  t.equal(cache.window(10, 14), undefined, 'above what it heard');
  cache.record(msg(12, '!z'));
  t.same([...cache.window(10, 13)!.rooms(['event'])].sort(), ['!a', '!b'], 'a repeated position is ignored');
});

t.test('positions heard out of order wait for the gap to fill', async (t) => {
  const cache = new ChangeCache(0);
  cache.record(msg(2, '!b'));
  cache.record(msg(3, '!c'));
  t.equal(cache.position, 0, 'nothing known past the gap');
  t.ok(cache.hasGap);
  t.equal(cache.window(0, 2), undefined);
  cache.record(msg(1, '!a'));
  t.notOk(cache.hasGap);
  t.equal(cache.position, 3);
  t.same([...cache.window(0, 3)!.rooms(['event'])], ['!a', '!b', '!c']);
});

t.test('a hole is given up only when the database says it is behind, after the grace period', async (t) => {
  let now = 1000;
  const givenUp: number[] = [];
  const cache = new ChangeCache(0, 1000, 2000, () => now);
  cache.onGapGivenUp = (p) => givenUp.push(p);
  cache.record(msg(1, '!a'));
  cache.record(msg(3, '!c'));
  cache.record(msg(4, '!d'));
  now += 1999;
  cache.settle(4);
  t.equal(cache.position, 1, 'within the grace period the hole may still be an announcement on its way');
  now += 60_000;
  t.equal(cache.position, 1, 'time alone fills nothing: position 2 may still be in flight');
  t.ok(cache.hasGap);
  cache.settle(1);
  t.equal(cache.position, 1, 'the database is not past the hole yet');
  cache.settle(3);
  t.same(givenUp, [2]);
  t.equal(cache.position, 4, 'continues from what the database says, then drains what it heard above');
  t.notOk(cache.hasGap);
  t.equal(cache.window(0, 4), undefined, 'ranges reaching below the hole are not answered');
  t.equal(cache.window(2, 4), undefined);
  t.same([...cache.window(3, 4)!.rooms(['event'])], ['!d']);
});

t.test('the grace period runs from when the hole now open was first waited on', async (t) => {
  let now = 0;
  const cache = new ChangeCache(0, 1000, 2000, () => now);
  cache.record(msg(2, '!b'));
  cache.record(msg(4, '!d'));
  now = 1500;
  cache.record(msg(1, '!a'));
  t.equal(cache.position, 2, 'the first hole filled');
  now = 2500;
  cache.settle(4);
  t.equal(cache.position, 2, 'the hole at 3 has waited 1 s only');
  now = 3600;
  cache.settle(4);
  t.equal(cache.position, 4);
});

t.test('past its capacity the cache forgets the oldest half', async (t) => {
  const cache = new ChangeCache(0, 100);
  for (let p = 1; p <= 101; p++) cache.record(msg(p, `!r${p}`));
  t.equal(cache.position, 101);
  t.equal(cache.window(0, 101), undefined);
  t.ok(cache.window(51, 101));
  t.equal(cache.window(51, 101)!.rooms(['event']).size, 50);
});

t.test('buses in different namespaces do not hear each other', async (t) => {
  const inner = new MemoryBus();
  const a = new NamespacedBus(inner, 'one');
  const b = new NamespacedBus(inner, 'two');
  const heard: string[] = [];
  await a.subscribe('c', (m) => heard.push(`a:${m}`));
  await b.subscribe('c', (m) => heard.push(`b:${m}`));
  await a.publish('c', 'x');
  await new Promise((r) => setImmediate(r));
  t.same(heard, ['a:x']);
});

// Two homeservers on one Redis: positions announced by one must never reach the other's change
// cache, or its sync tokens would run ahead of its own database and skip its events.
const redisUrl = testRedisUrl();
const backend = databaseBackends()[0]!;
t.test(
  'two homeservers sharing one Redis keep their streams apart',
  { skip: !redisUrl && 'needs TEST_REDIS_URL' },
  async (t) => {
    const V3 = '/_matrix/client/v3';
    const one = await startTestServer(t, backend, { redisUrl: redisUrl! });
    const two = await startTestServer(t, backend, { redisUrl: redisUrl! });
    const alice = await one.register('alice');
    const bob = await two.register('bob');
    const roomOne = (
      await one.request('POST', `${V3}/createRoom`, { token: alice.access_token, body: {} })
    ).json().room_id;
    for (let i = 0; i < 20; i++) {
      await one.request('PUT', `${V3}/rooms/${encodeURIComponent(roomOne)}/send/m.room.message/t${i}`, {
        token: alice.access_token,
        body: { msgtype: 'm.text', body: `on one ${i}` },
      });
    }
    const roomTwo = (
      await two.request('POST', `${V3}/createRoom`, { token: bob.access_token, body: {} })
    ).json().room_id;
    const first = (await two.request('GET', `${V3}/sync`, { token: bob.access_token })).json();
    await two.request('PUT', `${V3}/rooms/${encodeURIComponent(roomTwo)}/send/m.room.message/b1`, {
      token: bob.access_token,
      body: { msgtype: 'm.text', body: 'on two' },
    });
    const next = (
      await two.request('GET', `${V3}/sync?since=${first.next_batch}&timeout=2000`, {
        token: bob.access_token,
      })
    ).json();
    const bodies = (next.rooms?.join?.[roomTwo]?.timeline?.events ?? []).map(
      (e: { content: { body?: string } }) => e.content.body,
    );
    t.same(bodies, ['on two'], "bob's own server delivers his message");
  },
);
