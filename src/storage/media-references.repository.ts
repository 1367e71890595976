import { sql } from 'kysely';
import type { Executor } from './accounts.repository.ts';

/**
 * Which stored events name which media of this server (migration 0014, spec/media.md): written
 * by the event pipeline in the event's transaction, removed by retention's purges and room
 * deletions, read by the media repository to find media no remaining event names.
 */

const MEDIA_ID_RE = /^[A-Za-z0-9_-]{1,255}$/;
/** More than this many media in one event are not followed (no client sends that many). */
const MAX_PER_EVENT = 16;

function field(obj: unknown, key: string): unknown {
  return typeof obj === 'object' && obj !== null && !Array.isArray(obj)
    ? (obj as Record<string, unknown>)[key]
    : undefined;
}

/**
 * The IDs of this server's media that an event's content names where clients put them: `url`
 * (files, images, stickers, room avatars), `file.url` (encrypted files), `info.thumbnail_url`,
 * `info.thumbnail_file.url`, and a member event's `avatar_url`. Other servers' media and
 * malformed URIs are left out.
 */
export function mediaIdsOf(type: string, content: unknown, serverName: string): string[] {
  const info = field(content, 'info');
  const candidates = [
    field(content, 'url'),
    field(field(content, 'file'), 'url'),
    field(info, 'thumbnail_url'),
    field(field(info, 'thumbnail_file'), 'url'),
    type === 'm.room.member' ? field(content, 'avatar_url') : undefined,
  ];
  const prefix = `mxc://${serverName}/`;
  const out = new Set<string>();
  for (const c of candidates) {
    if (typeof c !== 'string' || !c.startsWith(prefix)) continue;
    const id = c.slice(prefix.length);
    if (MEDIA_ID_RE.test(id)) out.add(id);
    if (out.size >= MAX_PER_EVENT) break;
  }
  return [...out];
}

/**
 * Records that `eventId` names these media (those that exist), and that they are referenced
 * again if their last reference had gone. In the event's transaction.
 */
export async function recordMediaReferences(
  trx: Executor,
  roomId: string,
  eventId: string,
  mediaIds: readonly string[],
): Promise<void> {
  if (mediaIds.length === 0) return;
  // First the media's row lock (when its last reference had gone): a deletion of it under way
  // finishes before, or sees the media referenced again.
  await trx
    .updateTable('media')
    .set({ unreferenced_ts: null })
    .where('media_id', 'in', mediaIds)
    .where('unreferenced_ts', 'is not', null)
    .execute();
  await sql`
    insert into media_references (event_id, media_id, room_id)
    select ${eventId}, m.media_id, ${roomId} from media m where m.media_id in (${sql.join(mediaIds)})
    on conflict do nothing`.execute(trx);
}

/** Removes the references of these events; returns the media they named. */
export async function deleteEventReferences(trx: Executor, eventIds: readonly string[]): Promise<string[]> {
  if (eventIds.length === 0) return [];
  const rows = await trx
    .deleteFrom('media_references')
    .where('event_id', 'in', eventIds)
    .returning('media_id')
    .execute();
  return [...new Set(rows.map((r) => r.media_id))];
}

/** Removes every reference of a room's events; returns the media they named. */
export async function deleteRoomReferences(trx: Executor, roomId: string): Promise<string[]> {
  const rows = await trx
    .deleteFrom('media_references')
    .where('room_id', '=', roomId)
    .returning('media_id')
    .execute();
  return [...new Set(rows.map((r) => r.media_id))];
}

/**
 * Of the media whose references were just removed, marks those no event names any more as
 * unreferenced since `now`; returns how many.
 */
export async function markUnreferenced(
  trx: Executor,
  mediaIds: readonly string[],
  now: number,
): Promise<number> {
  if (mediaIds.length === 0) return 0;
  const r = await sql`
    update media m set unreferenced_ts = ${now}
    where m.media_id in (${sql.join(mediaIds)}) and m.unreferenced_ts is null
      and not exists (select 1 from media_references r where r.media_id = m.media_id)`.execute(trx);
  return Number(r.numAffectedRows ?? 0);
}

/**
 * Media whose last reference went and that may be deleted: uploaded before `uploadedBeforeTs`,
 * not quarantined (kept for the admin), and not a local user's profile avatar.
 */
export async function unreferencedMedia(
  db: Executor,
  opts: { uploadedBeforeTs: number; serverName: string; limit: number },
): Promise<string[]> {
  const r = await sql<{ media_id: string }>`
    select m.media_id from media m
    where m.unreferenced_ts is not null and m.uploaded_ts is not null
      and m.uploaded_ts <= ${opts.uploadedBeforeTs} and m.quarantined_ts is null
      and not exists (select 1 from media_references r where r.media_id = m.media_id)
      and not exists (select 1 from users u
                      where u.avatar_url = 'mxc://' || ${opts.serverName} || '/' || m.media_id)
    order by m.unreferenced_ts, m.media_id
    limit ${opts.limit}`.execute(db);
  return r.rows.map((x) => x.media_id);
}

/**
 * Whether the media is still unreferenced (locks its row until the transaction ends, so a new
 * reference waits for the deletion or the deletion sees it).
 */
export async function stillUnreferenced(trx: Executor, mediaId: string): Promise<boolean> {
  const r = await sql<{ ok: boolean }>`
    select (m.unreferenced_ts is not null
            and not exists (select 1 from media_references r where r.media_id = m.media_id)) as ok
    from media m where m.media_id = ${mediaId} for update`.execute(trx);
  return r.rows[0]?.ok === true;
}
