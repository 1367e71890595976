import { sql } from 'kysely';
import type { Db } from '../storage/connect.ts';

/** Most results one search returns, whatever the client asks. */
export const MAX_DIRECTORY_RESULTS = 50;
/** Words of a search term that are matched (the rest are ignored). */
const MAX_TERMS = 8;

export interface DirectoryResult {
  user_id: string;
  display_name?: string;
  avatar_url?: string;
}

/**
 * The user directory (client-server API: User directory): the users who share a room with the
 * searcher, and those joined to a public room (join rule `public`), found by user ID or display
 * name. Sharing a room does not make the searchers find themselves (being in a public room does,
 * as in Synapse). Users of this server are shown with their profile (never a room-specific name); users
 * of other servers with the name of one of their member events. Deactivated users are left out.
 */
export class UserDirectoryService {
  constructor(private readonly db: Db) {}

  /** POST /user_directory/search */
  async search(
    searcher: string,
    term: string,
    limit: number,
  ): Promise<{ results: DirectoryResult[]; limited: boolean }> {
    const words = term
      .toLowerCase()
      .split(/\s+/)
      .filter((w) => w !== '')
      .slice(0, MAX_TERMS);
    const take = Math.min(Math.max(limit, 0), MAX_DIRECTORY_RESULTS);
    if (words.length === 0 || take === 0) return { results: [], limited: false };
    const escapeLike = (w: string) => w.replace(/[\\%_]/g, (c) => `\\${c}`);
    const like = (w: string) => `%${escapeLike(w)}%`;
    const matches = sql.join(
      words.map(
        (w) =>
          sql`(lower(p.user_id) like ${like(w)} escape '\\' or lower(coalesce(p.display_name, '')) like ${like(w)} escape '\\')`,
      ),
      sql` and `,
    );
    const exact = words.join(' ');
    const rows = await sql<{ user_id: string; display_name: string | null; avatar_url: string | null }>`
      with public_rooms as (
        select cs.room_id from current_state cs join events e on e.event_id = cs.event_id
          where cs.type = 'm.room.join_rules' and cs.state_key = ''
            and e.json->'content'->>'join_rule' = 'public'
      ),
      shared_rooms as (
        select room_id from memberships where user_id = ${searcher} and membership = 'join'
      ),
      candidates as (
        select m.user_id from memberships m join public_rooms v on v.room_id = m.room_id
          where m.membership = 'join'
        union
        select m.user_id from memberships m join shared_rooms v on v.room_id = m.room_id
          where m.membership = 'join' and m.user_id <> ${searcher}
      ),
      profiles as (
        select c.user_id,
          case when u.user_id is not null then u.display_name else (
            select e.json->'content'->>'displayname' from memberships m2 join events e on e.event_id = m2.event_id
              where m2.user_id = c.user_id and m2.membership = 'join' order by m2.stream_ordering desc limit 1
          ) end as display_name,
          case when u.user_id is not null then u.avatar_url else (
            select e.json->'content'->>'avatar_url' from memberships m2 join events e on e.event_id = m2.event_id
              where m2.user_id = c.user_id and m2.membership = 'join' order by m2.stream_ordering desc limit 1
          ) end as avatar_url
        from candidates c left join users u on u.user_id = c.user_id
        where u.user_id is null or not u.deactivated
      )
      select p.user_id, p.display_name, p.avatar_url from profiles p
        where ${matches}
        order by (lower(coalesce(p.display_name, '')) = ${exact}) desc,
                 (lower(coalesce(p.display_name, '')) like ${`${escape(exact)}%`} escape '\\') desc,
                 p.user_id
        limit ${take + 1}
    `.execute(this.db);
    const results = rows.rows.slice(0, take).map((r) => ({
      user_id: r.user_id,
      ...(r.display_name ? { display_name: r.display_name } : {}),
      ...(r.avatar_url ? { avatar_url: r.avatar_url } : {}),
    }));
    return { results, limited: rows.rows.length > take };
  }
}
