import { errors } from '../../errors.ts';
import type { Db } from '../../storage/connect.ts';

/** The three kinds of policy rule (spec: Moderation policy lists). */
export const POLICY_TYPES = {
  user: 'm.policy.rule.user',
  room: 'm.policy.rule.room',
  server: 'm.policy.rule.server',
};
type Kind = keyof typeof POLICY_TYPES;
const KIND_OF = new Map(Object.entries(POLICY_TYPES).map(([k, t]) => [t, k as Kind]));
/** Recommendations that mean a ban: the spec's and the older unstable form. */
const BAN = new Set(['m.ban', 'org.matrix.mjolnir.ban']);

export interface PolicyRule {
  kind: Kind;
  entity: string;
  reason: string;
  /** The policy room the rule is in. */
  roomId: string;
  pattern: RegExp;
}

/** A glob of the policy rules: `*` any run of characters, `?` any one; the rest literal. */
export function globPattern(glob: string): RegExp {
  const body = [...glob]
    .map((c) => (c === '*' ? '.*' : c === '?' ? '.' : c.replace(/[\\^$.|+()[\]{}]/g, '\\$&')))
    .join('');
  return new RegExp(`^${body}$`, 's');
}

/** The server part of a user ID (`@local:server`). */
function serverOf(userId: string): string {
  return userId.slice(userId.indexOf(':') + 1);
}

/**
 * Shared ban lists: the server follows the policy rooms of `policy_rooms` and enforces the
 * m.ban rules in their current state. A rule is in force while it is in the room's current
 * state with an entity and a ban recommendation; redacting it, or replacing it with empty
 * content, lifts it. Rooms on this server are read from its database; rooms on other servers
 * would be read the same way once this server is in them (federation does not join them yet on
 * its own: see spec/detection.md).
 *
 * Joins and invites read the rules afresh; federation requests (one per inbound request) use a
 * copy at most `cacheMs` old.
 */
export class PolicyLists {
  private cached: { at: number; rules: PolicyRule[] } | undefined;

  constructor(
    private readonly db: Db,
    private readonly policyRooms: readonly string[],
    private readonly cacheMs = 1000,
    private readonly now: () => number = Date.now,
  ) {}

  get enabled(): boolean {
    return this.policyRooms.length > 0;
  }

  /** The rules in force now. */
  async rules(): Promise<PolicyRule[]> {
    if (!this.enabled) return [];
    const aliases = this.policyRooms.filter((r) => r.startsWith('#'));
    const roomIds = this.policyRooms.filter((r) => r.startsWith('!'));
    if (aliases.length > 0) {
      const rows = await this.db
        .selectFrom('room_aliases')
        .select('room_id')
        .where('alias', 'in', aliases)
        .execute();
      roomIds.push(...rows.map((r) => r.room_id));
    }
    if (roomIds.length === 0) return [];
    const rows = await this.db
      .selectFrom('current_state as cs')
      .innerJoin('pdus as e', 'e.event_id', 'cs.event_id')
      .select(['cs.room_id', 'cs.type', 'e.json', 'e.redacted_by'])
      .where('cs.room_id', 'in', roomIds)
      .where('cs.type', 'in', Object.values(POLICY_TYPES))
      .execute();
    const rules: PolicyRule[] = [];
    for (const row of rows) {
      if (row.redacted_by !== null) continue;
      const content = (row.json as { content?: Record<string, unknown> }).content ?? {};
      const { entity, recommendation, reason } = content;
      if (typeof entity !== 'string' || entity === '' || typeof recommendation !== 'string') continue;
      if (!BAN.has(recommendation)) continue;
      rules.push({
        kind: KIND_OF.get(row.type)!,
        entity,
        reason: typeof reason === 'string' ? reason : '',
        roomId: row.room_id,
        pattern: globPattern(entity),
      });
    }
    this.cached = { at: this.now(), rules };
    return rules;
  }

  private async recentRules(): Promise<PolicyRule[]> {
    if (this.cached && this.now() - this.cached.at < this.cacheMs) return this.cached.rules;
    return this.rules();
  }

  /** The rule banning a user: a user rule matching it, or a server rule matching its server. */
  static userRule(rules: PolicyRule[], userId: string): PolicyRule | undefined {
    return (
      rules.find((r) => r.kind === 'user' && r.pattern.test(userId)) ??
      rules.find((r) => r.kind === 'server' && r.pattern.test(serverOf(userId)))
    );
  }

  /** Refuses (403 M_FORBIDDEN) a join of `userId` to `roomId` that a rule bans. */
  async checkJoin(userId: string, roomId: string): Promise<void> {
    if (!this.enabled) return;
    const rules = await this.rules();
    if (PolicyLists.userRule(rules, userId)) throw errors.forbidden('You are banned by this server’s policy');
    if (rules.some((r) => r.kind === 'room' && r.pattern.test(roomId))) {
      throw errors.forbidden('This room is banned by this server’s policy');
    }
  }

  /** Refuses an invite by or of a banned user, or into a banned room (when the room is known). */
  async checkInvite(sender: string, target: string, roomId?: string): Promise<void> {
    if (!this.enabled) return;
    const rules = await this.rules();
    if (PolicyLists.userRule(rules, sender)) throw errors.forbidden('You are banned by this server’s policy');
    if (PolicyLists.userRule(rules, target)) {
      throw errors.forbidden('The invited user is banned by this server’s policy');
    }
    if (roomId !== undefined && rules.some((r) => r.kind === 'room' && r.pattern.test(roomId))) {
      throw errors.forbidden('This room is banned by this server’s policy');
    }
  }

  /** Whether a server is banned (for inbound federation requests). */
  async serverBanned(serverName: string): Promise<boolean> {
    if (!this.enabled) return false;
    return (await this.recentRules()).some((r) => r.kind === 'server' && r.pattern.test(serverName));
  }
}
