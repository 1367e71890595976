import type { Config } from '../../config.ts';
import { isJsonObject, type JsonObject } from '../../protocol/json.ts';

/**
 * Retention policies (MSC1763): a room's `m.room.retention` state event names `max_lifetime`
 * (how long events are kept, in ms) and `min_lifetime` (how long they must at least be kept).
 * The server's configuration gives a default for rooms without one and the range a room may
 * choose from; the effective policy is the room's, clamped into that range (spec/retention.md).
 */
export const RETENTION_EVENT_TYPE = 'm.room.retention';

/** The largest lifetime a room may name: 100 years in ms. */
export const MAX_LIFETIME_BOUND = 100 * 365 * 86_400_000;

export interface RoomRetention {
  maxLifetime?: number;
  minLifetime?: number;
}

export interface EffectivePolicy {
  /** Events older than this many ms are purged; null: kept for ever. */
  maxLifetime: number | null;
  /** Events younger than this are never purged by the policy job. */
  minLifetime: number | null;
  /** Where maxLifetime comes from. */
  source: 'room' | 'server_default' | 'none';
  /** True when the room's own value was moved into the server's allowed range. */
  clamped: boolean;
}

function lifetimeProblem(name: string, value: unknown): string | undefined {
  if (typeof value !== 'number' || !Number.isInteger(value))
    return `${name} must be a whole number of milliseconds`;
  if (value <= 0) return `${name} must be positive`;
  if (value > MAX_LIFETIME_BOUND) return `${name} must be at most ${MAX_LIFETIME_BOUND} ms (100 years)`;
  return undefined;
}

/**
 * Why an `m.room.retention` content sent by a local client is refused (400 M_BAD_JSON), or
 * undefined when it is acceptable: each key given must be a positive whole number of ms up to
 * 100 years, at least one must be given, and min_lifetime may not exceed max_lifetime.
 */
export function retentionContentProblem(content: JsonObject): string | undefined {
  const hasMax = Object.hasOwn(content, 'max_lifetime');
  const hasMin = Object.hasOwn(content, 'min_lifetime');
  if (!hasMax && !hasMin) return 'm.room.retention needs max_lifetime or min_lifetime';
  if (hasMax) {
    const p = lifetimeProblem('max_lifetime', content.max_lifetime);
    if (p) return p;
  }
  if (hasMin) {
    const p = lifetimeProblem('min_lifetime', content.min_lifetime);
    if (p) return p;
  }
  if (hasMax && hasMin && (content.min_lifetime as number) > (content.max_lifetime as number))
    return 'min_lifetime may not exceed max_lifetime';
  return undefined;
}

/**
 * The policy an `m.room.retention` content states. Events from other servers are not checked at
 * send time, so a key with a bad value is ignored (as if absent) rather than refused.
 */
export function parseRoomRetention(content: unknown): RoomRetention {
  if (!isJsonObject(content)) return {};
  const out: RoomRetention = {};
  if (lifetimeProblem('max_lifetime', content.max_lifetime) === undefined)
    out.maxLifetime = content.max_lifetime as number;
  if (lifetimeProblem('min_lifetime', content.min_lifetime) === undefined)
    out.minLifetime = content.min_lifetime as number;
  return out;
}

export interface RetentionSettings {
  /** ms; 0: no default (rooms without a policy keep their events). */
  defaultMaxLifetime: number;
  /** The shortest max_lifetime a room may ask for (ms). */
  allowedMin: number;
  /** The longest max_lifetime a room may ask for (ms); 0: no upper bound. */
  allowedMax: number;
}

export function retentionSettings(config: Config): RetentionSettings {
  return {
    defaultMaxLifetime: config.retentionDefaultMaxLifetime,
    allowedMin: config.retentionAllowedMin,
    allowedMax: config.retentionAllowedMax,
  };
}

function clamp(value: number, s: RetentionSettings): number {
  let v = Math.max(value, s.allowedMin);
  if (s.allowedMax > 0) v = Math.min(v, s.allowedMax);
  return v;
}

/** The policy the purge job applies to a room whose retention event states `room`. */
export function effectivePolicy(room: RoomRetention, s: RetentionSettings): EffectivePolicy {
  const minLifetime = room.minLifetime !== undefined ? clamp(room.minLifetime, s) : null;
  if (room.maxLifetime !== undefined) {
    let max = clamp(room.maxLifetime, s);
    if (minLifetime !== null) max = Math.max(max, minLifetime);
    return { maxLifetime: max, minLifetime, source: 'room', clamped: max !== room.maxLifetime };
  }
  if (s.defaultMaxLifetime > 0) {
    let max = clamp(s.defaultMaxLifetime, s);
    if (minLifetime !== null) max = Math.max(max, minLifetime);
    return { maxLifetime: max, minLifetime, source: 'server_default', clamped: false };
  }
  return { maxLifetime: null, minLifetime, source: 'none', clamped: false };
}
