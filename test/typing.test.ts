import t from 'tap';
import { MemoryBus } from '../src/bus/memory-bus.ts';
import { TypingService } from '../src/services/typing.service.ts';
import { Notifier } from '../src/streams/notifier.ts';

/** Two processes' typing services on one bus; `laterStart` joins after many changes. */
t.test('a typing serial from one process compares right on a process started later', async (t) => {
  const bus = new MemoryBus();
  const settle = () => new Promise((r) => setImmediate(r));
  const start = async () => {
    const notifier = new Notifier(bus);
    await notifier.start();
    const typing = new TypingService(bus, notifier);
    await typing.start();
    t.teardown(async () => {
      await typing.stop();
      await notifier.stop();
    });
    return typing;
  };
  const first = await start();
  for (let i = 0; i < 20; i++) {
    await first.setTyping('!room:x', '@a:x', i % 2 === 0, 10_000);
    await settle();
  }
  const token = first.serial; // what a sync token from the first process carries
  const later = await start();
  await new Promise((r) => setTimeout(r, 5));
  await later.setTyping('!room:x', '@b:x', true, 10_000);
  await settle();
  t.ok(
    later.roomSerial('!room:x') > token,
    'a change seen after the token was issued has a higher serial on the new process',
  );
  t.same(later.typingUsers('!room:x'), ['@b:x']);
});
