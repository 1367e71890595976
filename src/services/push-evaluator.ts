/**
 * Evaluating push rules against an event (client-server API, Push Rules). Pure: the caller hands
 * in the event, the rule set and what the conditions need to know about the room.
 */
import {
  PUSH_RULE_KINDS,
  type PushAction,
  type PushCondition,
  type PushRule,
  type PushRuleKind,
  type PushRuleset,
  type PushTweak,
} from './push-rules.ts';

/** What the conditions need to know about the event's room and the user. */
export interface PushContext {
  /** Joined members of the room. */
  memberCount: number;
  /** The sender's power level and the level each notification kind needs (`room` for @room). */
  senderPowerLevel: number;
  notificationLevel: (key: string) => number;
  /** The user's display name in the room, for the legacy contains_display_name condition. */
  displayName?: string | undefined;
}

/** What the rules decided for one event and user. */
export interface PushDecision {
  ruleId: string;
  kind: PushRuleKind;
  actions: PushAction[];
  notify: boolean;
  highlight: boolean;
  /** The tweaks to pass on to a push gateway (`sound`, `highlight`, ...). */
  tweaks: Record<string, unknown>;
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** Splits a condition key (`content.m\.relates_to.rel_type`) into its path; `\.` and `\\` escape. */
export function splitKey(key: string): string[] {
  const parts: string[] = [];
  let current = '';
  for (let i = 0; i < key.length; i++) {
    const c = key[i]!;
    if (c === '\\' && (key[i + 1] === '.' || key[i + 1] === '\\')) {
      current += key[i + 1];
      i++;
    } else if (c === '.') {
      parts.push(current);
      current = '';
    } else current += c;
  }
  parts.push(current);
  return parts;
}

function valueAt(event: Record<string, unknown>, key: string): unknown {
  let v: unknown = event;
  for (const part of splitKey(key)) {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
    if (!Object.hasOwn(v, part)) return undefined;
    v = (v as Record<string, unknown>)[part];
  }
  return v;
}

const globCache = new Map<string, RegExp>();

/**
 * `text` as a literal in a regular expression with the `u` flag. Only the syntax characters are
 * escaped: in unicode mode escaping anything else (`\-`, as in `@jean-luc:x`) is a syntax error.
 */
function literalSource(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}

/** A glob (`*` any run, `?` one character) as a case-insensitive regular expression source. */
function globSource(pattern: string): string {
  let out = '';
  for (const c of pattern) {
    if (c === '*') out += '.*';
    else if (c === '?') out += '.';
    else out += literalSource(c);
  }
  return out;
}

function globRegExp(pattern: string, wordBoundaries: boolean): RegExp {
  const cacheKey = `${wordBoundaries ? 'w' : 'x'}${pattern}`;
  let re = globCache.get(cacheKey);
  if (!re) {
    const src = globSource(pattern);
    // Word boundaries: the match starts and ends where a word does (letters, digits, `_`).
    re = wordBoundaries
      ? new RegExp(`(?:^|[^\\p{L}\\p{N}_])${src}(?:[^\\p{L}\\p{N}_]|$)`, 'isu')
      : new RegExp(`^${src}$`, 'isu');
    if (globCache.size > 1000) globCache.clear();
    globCache.set(cacheKey, re);
  }
  return re;
}

export function globMatches(pattern: string, value: string, wordBoundaries = false): boolean {
  return globRegExp(pattern, wordBoundaries).test(value);
}

function isScalar(v: unknown): v is string | number | boolean | null {
  return v === null || typeof v === 'string' || typeof v === 'boolean' || Number.isInteger(v);
}

function memberCountMatches(is: string, count: number): boolean {
  const m = /^(==|<=|>=|<|>)?([0-9]+)$/.exec(is);
  if (!m) return false;
  const n = Number(m[2]);
  switch (m[1]) {
    case '<':
      return count < n;
    case '>':
      return count > n;
    case '<=':
      return count <= n;
    case '>=':
      return count >= n;
    default:
      return count === n;
  }
}

/** Whether one condition holds; unknown kinds never do (so a rule with one never matches). */
export function conditionHolds(
  condition: PushCondition,
  event: Record<string, unknown>,
  ctx: PushContext,
): boolean {
  switch (condition.kind) {
    case 'event_match': {
      if (typeof condition.key !== 'string' || typeof condition.pattern !== 'string') return false;
      const v = valueAt(event, condition.key);
      return typeof v === 'string' && globMatches(condition.pattern, v);
    }
    case 'event_property_is': {
      if (typeof condition.key !== 'string' || !isScalar(condition.value)) return false;
      const v = valueAt(event, condition.key);
      return isScalar(v) && v === condition.value;
    }
    case 'event_property_contains': {
      if (typeof condition.key !== 'string' || !isScalar(condition.value)) return false;
      const v = valueAt(event, condition.key);
      return Array.isArray(v) && v.some((x) => isScalar(x) && x === condition.value);
    }
    case 'contains_display_name': {
      const body = valueAt(event, 'content.body');
      const name = ctx.displayName;
      if (typeof body !== 'string' || !name) return false;
      return new RegExp(`(?:^|[^\\p{L}\\p{N}_])${literalSource(name)}(?:[^\\p{L}\\p{N}_]|$)`, 'iu').test(
        body,
      );
    }
    case 'room_member_count':
      return typeof condition.is === 'string' && memberCountMatches(condition.is, ctx.memberCount);
    case 'sender_notification_permission':
      return (
        typeof condition.key === 'string' && ctx.senderPowerLevel >= ctx.notificationLevel(condition.key)
      );
    default:
      return false;
  }
}

function ruleMatches(
  kind: PushRuleKind,
  rule: PushRule,
  event: Record<string, unknown>,
  ctx: PushContext,
): boolean {
  switch (kind) {
    case 'override':
    case 'postcontent':
    case 'underride':
      return (rule.conditions ?? []).every((c) => conditionHolds(c, event, ctx));
    case 'content': {
      const body = valueAt(event, 'content.body');
      return (
        typeof rule.pattern === 'string' && typeof body === 'string' && globMatches(rule.pattern, body, true)
      );
    }
    case 'room':
      return event.room_id === rule.rule_id;
    case 'sender':
      return event.sender === rule.rule_id;
  }
}

/** The first enabled rule that matches, in the spec's order of kinds; undefined if none does. */
export function evaluatePushRules(
  ruleset: PushRuleset,
  event: Record<string, unknown>,
  ctx: PushContext,
): PushDecision | undefined {
  for (const kind of PUSH_RULE_KINDS) {
    for (const rule of ruleset[kind]) {
      if (!rule.enabled || !ruleMatches(kind, rule, event, ctx)) continue;
      return decide(kind, rule);
    }
  }
  return undefined;
}

function decide(kind: PushRuleKind, rule: PushRule): PushDecision {
  const tweaks: Record<string, unknown> = {};
  let notify = false;
  for (const action of rule.actions) {
    if (action === 'notify') notify = true;
    else if (typeof action === 'object' && action !== null && typeof action.set_tweak === 'string') {
      const tweak = action as PushTweak;
      tweaks[tweak.set_tweak] = 'value' in tweak ? (tweak.value as Json) : tweak.set_tweak === 'highlight';
    }
  }
  return {
    ruleId: rule.rule_id,
    kind,
    actions: rule.actions,
    notify,
    highlight: notify && tweaks.highlight === true,
    tweaks,
  };
}
