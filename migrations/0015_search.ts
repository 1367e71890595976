import { type Kysely, sql } from 'kysely';

// Frozen in time: this migration must never import application code.

/**
 * Server-side search (spec/search.md). One row per searchable timeline event of an unencrypted
 * room: `key` is the field it was found in (`content.body`, `content.name` or `content.topic`)
 * and `vector` that field's words as the `english` text search configuration reads them, under a
 * GIN index. The text itself is not kept (the event holds it); the vector is removed when the
 * event is redacted or purged.
 *
 * Also an index of events by room and time, for GET /rooms/{roomId}/timestamp_to_event
 * (spec/search.md).
 *
 * The timeline events held before this migration are indexed here: the message bodies, room
 * names and topics (`content.topic`) of unredacted events in rooms whose current state has no
 * `m.room.encryption` (a room cannot stop being encrypted, so these never were).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('event_search')
    .addColumn('event_id', 'text', (c) => c.primaryKey())
    .addColumn('room_id', 'text', (c) => c.notNull())
    .addColumn('sender', 'text', (c) => c.notNull())
    .addColumn('key', 'text', (c) => c.notNull())
    .addColumn('vector', sql`tsvector`, (c) => c.notNull())
    .addColumn('stream_ordering', 'bigint', (c) => c.notNull())
    .execute();
  await sql`create index event_search_vector_idx on event_search using gin (vector)`.execute(db);
  await db.schema
    .createIndex('event_search_room_idx')
    .on('event_search')
    .columns(['room_id', 'stream_ordering'])
    .execute();
  await db.schema
    .createIndex('pdus_room_ts_idx')
    .on('pdus')
    .columns(['room_id', 'origin_server_ts', 'stream_ordering'])
    .where(sql.ref('stream_ordering'), 'is not', null)
    .execute();
  await indexHeldEvents(db);
}

/** Indexes the held timeline events that the index lacks (see above). */
export async function indexHeldEvents(db: Kysely<unknown>): Promise<void> {
  await sql`
    insert into event_search (event_id, room_id, sender, key, vector, stream_ordering)
    select e.event_id, e.room_id, e.sender, k.key, to_tsvector('english'::regconfig, k.text), e.stream_ordering
    from events e
    cross join lateral (
      select case e.type when 'm.room.message' then 'content.body'
                         when 'm.room.name' then 'content.name'
                         when 'm.room.topic' then 'content.topic' end as key,
             case e.type when 'm.room.message' then e.json->'content'->>'body'
                         when 'm.room.name' then e.json->'content'->>'name'
                         when 'm.room.topic' then e.json->'content'->>'topic' end as text
    ) k
    where e.redacted_by is null
      and (e.type = 'm.room.message' or (e.type in ('m.room.name', 'm.room.topic') and e.state_key = ''))
      and jsonb_typeof(e.json->'content'->(substr(k.key, 9))) = 'string'
      and btrim(k.text) <> ''
      and not exists (select 1 from current_state c where c.room_id = e.room_id
                        and c.type = 'm.room.encryption' and c.state_key = '')
    on conflict (event_id) do nothing`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropIndex('pdus_room_ts_idx').execute();
  await db.schema.dropTable('event_search').execute();
}
