import t from 'tap';
import type { Bus } from '../src/bus/bus.ts';
import { MemoryBus } from '../src/bus/memory-bus.ts';
import { RedisBus } from '../src/bus/redis-bus.ts';
import { testRedisUrl } from './helpers/backends.ts';

/** One suite for every bus: in-process, and Redis with two connections standing in for two processes. */
interface BusPair {
  name: string;
  /** Two buses that share a broker (for memory, the same instance). */
  open(): Promise<[Bus, Bus]>;
}

const pairs: BusPair[] = [
  {
    name: 'memory',
    async open() {
      const bus = new MemoryBus();
      return [bus, bus];
    },
  },
];
const redisUrl = testRedisUrl();
if (redisUrl) {
  pairs.push({
    name: 'redis',
    async open() {
      return [await RedisBus.connect(redisUrl), await RedisBus.connect(redisUrl)];
    },
  });
}

function nextMessage(bus: Bus, channel: string, timeoutMs = 2000): Promise<string> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no message on ${channel}`)), timeoutMs);
    void bus.subscribe(channel, (m) => {
      clearTimeout(timer);
      resolve(m);
    });
  });
}

for (const pair of pairs) {
  t.test(`${pair.name} bus`, async (t) => {
    const [a, b] = await pair.open();
    t.teardown(async () => {
      await a.close();
      if (b !== a) await b.close();
    });
    const channel = `test.${process.pid}.${Math.random()}`;

    t.test('a message published on one reaches a subscriber on the other', async (t) => {
      const got: string[] = [];
      const unsubscribe = await b.subscribe(channel, (m) => got.push(m));
      await a.publish(channel, 'hello');
      await a.publish(channel, 'world');
      for (let i = 0; i < 100 && got.length < 2; i++) await new Promise((r) => setTimeout(r, 10));
      t.same(got, ['hello', 'world'], 'in order, once each');
      await unsubscribe();
      await a.publish(channel, 'after');
      await new Promise((r) => setTimeout(r, 100));
      t.same(got, ['hello', 'world'], 'nothing after unsubscribing');
    });

    t.test('channels are separate, and a throwing listener does not stop others', async (t) => {
      const other = `${channel}.other`;
      const wrong: string[] = [];
      await b.subscribe(`${channel}.unrelated`, (m) => wrong.push(m));
      await b.subscribe(other, () => {
        throw new Error('listener bug');
      });
      const received = nextMessage(b, other);
      await a.publish(other, 'x');
      t.equal(await received, 'x');
      t.same(wrong, []);
    });

    t.test('measured delivery latency', async (t) => {
      const ch = `${channel}.latency`;
      const times: number[] = [];
      await b.subscribe(ch, (m) => times.push(performance.now() - Number(m)));
      for (let i = 0; i < 50; i++) await a.publish(ch, String(performance.now()));
      for (let i = 0; i < 100 && times.length < 50; i++) await new Promise((r) => setTimeout(r, 10));
      t.equal(times.length, 50, 'all 50 delivered');
      t.ok(
        Math.max(...times) < 1000,
        `every message within a second (max ${Math.max(...times).toFixed(2)} ms)`,
      );
    });
  });
}

t.test('Redis that cannot be reached fails clearly', async (t) => {
  await t.rejects(RedisBus.connect('redis://127.0.0.1:1'), /cannot reach Redis at redis:\/\/127\.0\.0\.1:1/);
});
