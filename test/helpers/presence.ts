import { type Login, syncOnce, type TestServer } from './server.ts';

// biome-ignore lint/suspicious/noExplicitAny: sync bodies are read loosely in tests
type Json = Record<string, any>;

export const statusUrl = (userId: string) =>
  `/_matrix/client/v3/presence/${encodeURIComponent(userId)}/status`;

/** Long-polls `who`'s sync from `since` until a presence event of `of` satisfies `ok`. */
export async function syncUntilPresence(
  s: Pick<TestServer, 'request'>,
  who: Login,
  since: string,
  of: string,
  ok: (content: Json) => boolean,
  deadlineMs = 20_000,
): Promise<Json> {
  const end = Date.now() + deadlineMs;
  let token = since;
  while (Date.now() < end) {
    const body = await syncOnce(s, who, { since: token, timeout: 2000, set_presence: 'offline' });
    const hit = (body.presence.events as Json[]).find(
      (e) => e.type === 'm.presence' && e.sender === of && ok(e.content),
    );
    if (hit) return hit;
    token = body.next_batch;
  }
  throw new Error(`no matching presence of ${of} within ${deadlineMs} ms`);
}
