import { errors, MatrixError } from '../errors.ts';
import type { JsonObject } from '../protocol/json.ts';
import { type Executor, putAccountData } from '../storage/accounts.repository.ts';
import type { Db } from '../storage/connect.ts';
import * as repo from '../storage/push.repository.ts';
import type { Notifier } from '../streams/notifier.ts';
import { nextPosition } from '../streams/positions.ts';
import type { Session } from './accounts.service.ts';
import {
  defaultPushRules,
  PUSH_RULE_KINDS,
  type PushAction,
  type PushCondition,
  type PushRule,
  type PushRuleKind,
  type PushRuleset,
} from './push-rules.ts';

/** What a user changed: their own rules per kind (priority order) and their changes to defaults. */
export interface RuleChanges {
  user: Partial<Record<PushRuleKind, PushRule[]>>;
  defaults: Record<string, { enabled?: boolean; actions?: PushAction[] }>;
}

const MAX_USER_RULES = 500;
const MAX_CONDITIONS = 32;
const MAX_ACTIONS = 16;
const CONDITION_KINDS = new Set([
  'event_match',
  'event_property_is',
  'event_property_contains',
  'contains_display_name',
  'room_member_count',
  'sender_notification_permission',
]);

function parseChanges(stored: JsonObject | undefined): RuleChanges {
  const s = (stored ?? {}) as Partial<RuleChanges>;
  return { user: s.user ?? {}, defaults: s.defaults ?? {} };
}

/**
 * The effective rule set: `.m.rule.master` first, then the user's rules, then the other
 * server-default rules of each kind, with the user's changes to those applied.
 */
export function mergeRules(userId: string, stored: JsonObject | undefined): PushRuleset {
  const changes = parseChanges(stored);
  const defaults = defaultPushRules(userId);
  const out = {} as PushRuleset;
  for (const kind of PUSH_RULE_KINDS) {
    const own = (changes.user[kind] ?? []).map((r) => ({ ...r }));
    const base = defaults[kind].map((r) => {
      const c = changes.defaults[r.rule_id];
      return {
        ...r,
        ...(c?.enabled !== undefined ? { enabled: c.enabled } : {}),
        ...(c?.actions !== undefined ? { actions: c.actions } : {}),
      };
    });
    const master = base.filter((r) => r.rule_id === '.m.rule.master');
    out[kind] = [...master, ...own, ...base.filter((r) => r.rule_id !== '.m.rule.master')];
  }
  return out;
}

export function parseKind(scope: string, kind: string): PushRuleKind {
  if (scope !== 'global') throw errors.invalidParam('Only the global push rule scope exists');
  if (!(PUSH_RULE_KINDS as readonly string[]).includes(kind)) {
    throw errors.invalidParam(`Unknown push rule kind: ${kind}`);
  }
  return kind as PushRuleKind;
}

function checkActions(actions: unknown): PushAction[] {
  if (!Array.isArray(actions)) throw errors.badJson('actions must be an array');
  if (actions.length > MAX_ACTIONS) throw errors.badJson(`At most ${MAX_ACTIONS} actions`);
  for (const a of actions) {
    if (a === 'notify' || a === 'dont_notify' || a === 'coalesce') continue;
    if (typeof a === 'object' && a !== null && !Array.isArray(a) && typeof a.set_tweak === 'string') {
      const v = (a as { value?: unknown }).value;
      if (v === undefined || v === null || ['string', 'number', 'boolean'].includes(typeof v)) continue;
    }
    throw errors.invalidParam('Unrecognised push rule action');
  }
  return actions as PushAction[];
}

function checkConditions(conditions: unknown): PushCondition[] {
  if (conditions === undefined) return [];
  if (!Array.isArray(conditions)) throw errors.badJson('conditions must be an array');
  if (conditions.length > MAX_CONDITIONS) throw errors.badJson(`At most ${MAX_CONDITIONS} conditions`);
  return conditions.map((c) => {
    if (typeof c !== 'object' || c === null || Array.isArray(c) || typeof c.kind !== 'string') {
      throw errors.badJson('Each condition is an object with a kind');
    }
    const out: PushCondition = { kind: c.kind };
    for (const field of ['key', 'pattern', 'is'] as const) {
      if (c[field] === undefined) continue;
      if (typeof c[field] !== 'string') throw errors.badJson(`condition ${field} must be a string`);
      out[field] = c[field];
    }
    if (c.value !== undefined) {
      const v = c.value;
      if (!(v === null || typeof v === 'string' || typeof v === 'boolean' || Number.isInteger(v))) {
        throw errors.badJson('condition value must be a string, an integer, a boolean or null');
      }
      out.value = v;
    }
    if (CONDITION_KINDS.has(c.kind)) {
      const needs: Record<string, ReadonlyArray<'key' | 'pattern' | 'is' | 'value'>> = {
        event_match: ['key', 'pattern'],
        event_property_is: ['key', 'value'],
        event_property_contains: ['key', 'value'],
        room_member_count: ['is'],
        sender_notification_permission: ['key'],
      };
      for (const field of needs[c.kind] ?? []) {
        if (!(field in out)) throw errors.badJson(`A ${c.kind} condition needs ${field}`);
      }
    }
    // Unknown kinds are kept: the spec says a rule holding one never matches.
    return out;
  });
}

/** The push rules of users: the server defaults with each user's changes (spec/push.md). */
export class PushRulesService {
  constructor(
    private readonly db: Db,
    private readonly notifier: Notifier,
    private readonly now: () => number = Date.now,
  ) {}

  /** GET /pushrules/global/: the user's global rule set. */
  async globalRuleset(session: Session): Promise<PushRuleset> {
    return this.rulesetOf(session.userId);
  }

  /** GET /pushrules/: every rule set of the user (only `global` exists). */
  async allRulesets(session: Session): Promise<{ global: PushRuleset }> {
    return { global: await this.rulesetOf(session.userId) };
  }

  async rulesetOf(userId: string): Promise<PushRuleset> {
    return mergeRules(userId, (await repo.ruleChangesOf(this.db, [userId])).get(userId));
  }

  /** The effective rule sets of many users at once (one query). */
  async rulesetsOf(db: Executor, userIds: string[]): Promise<Map<string, PushRuleset>> {
    const stored = await repo.ruleChangesOf(db, userIds);
    return new Map(userIds.map((u) => [u, mergeRules(u, stored.get(u))]));
  }

  /** GET /pushrules/global/{kind}/{ruleId} */
  async getRule(session: Session, kind: PushRuleKind, ruleId: string): Promise<PushRule> {
    const rule = (await this.rulesetOf(session.userId))[kind].find((r) => r.rule_id === ruleId);
    if (!rule) throw errors.notFound('The push rule was not found');
    return rule;
  }

  /** PUT /pushrules/global/{kind}/{ruleId}: adds or replaces a rule of the user's own. */
  async putRule(
    session: Session,
    kind: PushRuleKind,
    ruleId: string,
    body: JsonObject,
    place: { before?: string | undefined; after?: string | undefined },
  ): Promise<void> {
    if (ruleId.startsWith('.')) {
      throw errors.invalidParam('Rule IDs starting with a dot are reserved for server-default rules');
    }
    if (ruleId === '' || /[/\\]/.test(ruleId)) throw errors.invalidParam('Rule IDs may not hold / or \\');
    if (ruleId.length > 255) throw errors.invalidParam('The rule ID is too long');
    const actions = checkActions(body.actions);
    const rule: PushRule = { rule_id: ruleId, default: false, enabled: true, actions };
    if (kind === 'override' || kind === 'postcontent' || kind === 'underride')
      rule.conditions = checkConditions(body.conditions);
    if (kind === 'content') {
      if (typeof body.pattern !== 'string') throw errors.missingParam('A content rule needs a pattern');
      if (body.pattern.length > 1024) throw errors.badJson('The pattern is too long');
      rule.pattern = body.pattern;
    }
    await this.change(session.userId, (changes) => {
      const list = [...(changes.user[kind] ?? [])];
      const existing = list.findIndex((r) => r.rule_id === ruleId);
      if (existing >= 0) {
        rule.enabled = list[existing]!.enabled;
        list.splice(existing, 1);
      }
      const anchorId = place.before ?? place.after;
      let at = existing >= 0 && anchorId === undefined ? existing : 0;
      if (anchorId !== undefined) {
        const anchor = list.findIndex((r) => r.rule_id === anchorId);
        if (anchor < 0) throw new MatrixError(400, 'M_UNKNOWN', `before/after rule not found: ${anchorId}`);
        at = place.before !== undefined ? anchor : anchor + 1;
      }
      list.splice(at, 0, rule);
      const total = PUSH_RULE_KINDS.reduce(
        (n, k) => n + (k === kind ? list : (changes.user[k] ?? [])).length,
        0,
      );
      if (total > MAX_USER_RULES) throw errors.badJson(`At most ${MAX_USER_RULES} push rules per user`);
      changes.user[kind] = list;
    });
  }

  /** DELETE /pushrules/global/{kind}/{ruleId}: only the user's own rules. */
  async deleteRule(session: Session, kind: PushRuleKind, ruleId: string): Promise<void> {
    if (ruleId.startsWith('.')) {
      await this.getRule(session, kind, ruleId);
      throw errors.invalidParam('Server-default push rules cannot be deleted');
    }
    await this.change(session.userId, (changes) => {
      const list = changes.user[kind] ?? [];
      if (!list.some((r) => r.rule_id === ruleId)) throw errors.notFound('The push rule was not found');
      changes.user[kind] = list.filter((r) => r.rule_id !== ruleId);
    });
  }

  /** PUT .../enabled and PUT .../actions, for the user's own rules and the server defaults alike. */
  async setAttribute(
    session: Session,
    kind: PushRuleKind,
    ruleId: string,
    attribute: 'enabled' | 'actions',
    value: unknown,
  ): Promise<void> {
    if (attribute === 'enabled' && typeof value !== 'boolean')
      throw errors.badJson('enabled must be a boolean');
    const actions = attribute === 'actions' ? checkActions(value) : undefined;
    await this.change(session.userId, (changes) => {
      if (ruleId.startsWith('.')) {
        if (!defaultPushRules(session.userId)[kind].some((r) => r.rule_id === ruleId)) {
          throw errors.notFound('The push rule was not found');
        }
        const c = { ...changes.defaults[ruleId] };
        if (actions) c.actions = actions;
        else c.enabled = value as boolean;
        changes.defaults[ruleId] = c;
        return;
      }
      const rule = (changes.user[kind] ?? []).find((r) => r.rule_id === ruleId);
      if (!rule) throw errors.notFound('The push rule was not found');
      if (actions) rule.actions = actions;
      else rule.enabled = value as boolean;
    });
  }

  /** Reads, changes and stores the user's rule changes in one transaction; clients hear of it. */
  /**
   * When a user joins a room that replaces another (its create event's `predecessor`), their own
   * rules for the old room are copied to the new one, as Synapse does on joins of an upgraded
   * room: the `room` rule named by the old room ID, and `override`, `postcontent` and
   * `underride` rules whose ID names it and that match its `room_id`, with the ID replaced.
   * Rules the user already has for the new room are kept as they are.
   */
  async copyRoomRules(userId: string, oldRoomId: string, newRoomId: string): Promise<void> {
    const current = parseChanges((await repo.ruleChangesOf(this.db, [userId])).get(userId));
    const copyOf = (kind: PushRuleKind, r: PushRule): PushRule | undefined => {
      if (kind === 'room') return r.rule_id === oldRoomId ? { ...r, rule_id: newRoomId } : undefined;
      if (kind !== 'override' && kind !== 'postcontent' && kind !== 'underride') return undefined;
      const names = (c: PushCondition) =>
        c.kind === 'event_match' && c.key === 'room_id' && c.pattern === oldRoomId;
      if (!r.rule_id.includes(oldRoomId) || !(r.conditions ?? []).some(names)) return undefined;
      return {
        ...r,
        rule_id: r.rule_id.split(oldRoomId).join(newRoomId),
        conditions: (r.conditions ?? []).map((c) => (names(c) ? { ...c, pattern: newRoomId } : c)),
      };
    };
    const wanted = PUSH_RULE_KINDS.some((kind) => (current.user[kind] ?? []).some((r) => copyOf(kind, r)));
    if (!wanted) return;
    await this.change(userId, (changes) => {
      for (const kind of PUSH_RULE_KINDS) {
        const list = [...(changes.user[kind] ?? [])];
        const copies = list
          .map((r) => copyOf(kind, r))
          .filter((r): r is PushRule => r !== undefined && !list.some((o) => o.rule_id === r.rule_id));
        if (copies.length > 0) changes.user[kind] = [...copies, ...list];
      }
    });
  }

  private async change(userId: string, fn: (changes: RuleChanges) => void): Promise<void> {
    const position = await this.db.transaction().execute(async (trx) => {
      const changes = parseChanges(await repo.lockRuleChanges(trx, userId, this.now()));
      fn(changes);
      const stored = changes as unknown as JsonObject;
      await repo.saveRuleChanges(trx, userId, stored, this.now());
      // Clients learn of the change through /sync, as m.push_rules account data.
      const p = await nextPosition(trx);
      const global = mergeRules(userId, stored) as unknown as JsonObject;
      await putAccountData(trx, userId, '', 'm.push_rules', { global }, p);
      return p;
    });
    await this.notifier.notify({ kind: 'account_data', position, userIds: [userId] });
  }
}
