/**
 * Server-side search through the services (no HTTP): sends `count` messages drawn from a small
 * vocabulary into one room, then times searches for a rare and a common word, ranked and
 * recent, first and fifth page, with and without context:
 *   npx tsx bench/search.ts [count] [--postgres <url>]
 */
import { percentile, startBenchRuntime } from './common.ts';

const count = Number(process.argv[2] ?? 2000);
const pgIndex = process.argv.indexOf('--postgres');
const databaseUrl = pgIndex > 0 ? (process.argv[pgIndex + 1] ?? '') : '';

const runtime = await startBenchRuntime(databaseUrl || undefined);
const { accounts, rooms, search } = runtime.services;
const login = await accounts.createAccount({
  localpart: `alice${Date.now()}`,
  password: 'bench password long',
  login: true,
});
if (!('access_token' in login)) throw new Error('no login');
const session = await accounts.authenticateToken(login.access_token as string);
const { room_id } = await rooms.createRoom(session, { preset: 'public_chat' });

const words = [
  'assay',
  'protein',
  'sample',
  'buffer',
  'column',
  'spectrum',
  'gel',
  'plate',
  'cell',
  'culture',
];
const sendStart = performance.now();
for (let i = 0; i < count; i++) {
  const body = `${words[i % 10]} ${words[(i * 7) % 10]} run ${i}${i % 500 === 0 ? ' zeolite' : ''}`;
  await rooms.sendMessage(session, room_id, 'm.room.message', `t${i}`, { msgtype: 'm.text', body });
}
const sendMs = performance.now() - sendStart;
console.log(
  `${count} messages sent and indexed in ${(sendMs / 1000).toFixed(1)} s (${((count / sendMs) * 1000).toFixed(0)} msg/s)`,
);

async function time(label: string, criteria: Record<string, unknown>, pages = 1) {
  const times: number[] = [];
  let results = 0;
  let total = 0;
  for (let run = 0; run < 20; run++) {
    const t0 = performance.now();
    let next: string | undefined;
    for (let p = 0; p < pages; p++) {
      const r = (await search.search(
        session,
        { search_categories: { room_events: criteria as never } },
        next,
      )) as unknown as {
        search_categories: { room_events: { results: unknown[]; count: number; next_batch?: string } };
      };
      results = r.search_categories.room_events.results.length;
      total = r.search_categories.room_events.count;
      next = r.search_categories.room_events.next_batch;
      if (!next) break;
    }
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  console.log(
    `${label}: p50 ${percentile(times, 50).toFixed(1)} ms, p99 ${percentile(times, 99).toFixed(1)} ms (${results} results on the last page, count ${total})`,
  );
}

await time('rare word, ranked', { search_term: 'zeolite' });
await time('common word, ranked, first page', { search_term: 'assay' });
await time('common word, recent, first page', { search_term: 'assay', order_by: 'recent' });
await time('common word, recent, five pages', { search_term: 'assay', order_by: 'recent' }, 5);
await time('common word, ranked, context 5+5 and profiles', {
  search_term: 'assay',
  event_context: { before_limit: 5, after_limit: 5, include_profile: true },
});
await time('two words, ranked, grouped', {
  search_term: 'protein buffer',
  groupings: { group_by: [{ key: 'room_id' }, { key: 'sender' }] },
});
await runtime.close();
