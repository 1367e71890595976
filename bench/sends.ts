/**
 * Sends through the services (no HTTP), to profile the local event path:
 *   node --import tsx bench/sends.ts [count] [--postgres <url>] [--rooms N]
 * With `--rooms N`, N users send at once, each into a room of their own (`count` messages each):
 * writers of different rooms then share nothing but the stream position, which shows whether
 * taking one serialises them. Prints sends per second and the median and p99 time per send.
 * Run with --cpu-prof to profile.
 */
import { startBenchRuntime } from './common.ts';

const count = Number(process.argv[2] ?? 500);
const pgIndex = process.argv.indexOf('--postgres');
const databaseUrl = pgIndex > 0 ? process.argv[pgIndex + 1] : undefined;
const roomsIndex = process.argv.indexOf('--rooms');
const parallel = roomsIndex > 0 ? Number(process.argv[roomsIndex + 1]) : 1;

const runtime = await startBenchRuntime(databaseUrl);
const { accounts, rooms } = runtime.services;

async function sender(n: number) {
  const login = await accounts.createAccount({
    localpart: `alice${Date.now()}_${n}`,
    password: 'bench password long',
    login: true,
  });
  if (!('access_token' in login)) throw new Error('no login');
  const session = await accounts.authenticateToken(login.access_token as string);
  const { room_id } = await rooms.createRoom(session, { preset: 'public_chat' });
  // Warm up.
  for (let i = 0; i < 20; i++)
    await rooms.sendMessage(session, room_id, 'm.room.message', `w${i}`, { msgtype: 'm.text', body: 'warm' });
  return { session, room_id };
}

const senders = await Promise.all(Array.from({ length: parallel }, (_, n) => sender(n)));
const times: number[] = [];
const start = performance.now();
await Promise.all(
  senders.map(async ({ session, room_id }) => {
    for (let i = 0; i < count; i++) {
      const t0 = performance.now();
      await rooms.sendMessage(session, room_id, 'm.room.message', `t${i}`, {
        msgtype: 'm.text',
        body: `message ${i}`,
      });
      times.push(performance.now() - t0);
    }
  }),
);
const total = performance.now() - start;
times.sort((a, b) => a - b);
const at = (q: number) => times[Math.min(times.length - 1, Math.floor(q * times.length))]!.toFixed(2);
console.log(
  `${count * parallel} sends by ${parallel} sender(s) in ${parallel} room(s) (${databaseUrl ? 'PostgreSQL' : 'PGlite'}): ${((times.length / total) * 1000).toFixed(0)} msg/s, p50 ${at(0.5)} ms, p99 ${at(0.99)} ms`,
);
await runtime.close();
