/**
 * Server access control lists (client-server API: Server Access Control Lists; the
 * m.room.server_acl event schema; appendices: Glob-style matching).
 */
import { parseServerName } from './identifiers.ts';
import type { JsonObject, JsonValue } from './json.ts';

/**
 * Glob matching as the appendices define it: `*` matches any run of characters (also none), `?`
 * exactly one, everything else itself. The pattern is cut at each `*`; the pieces between must
 * appear in order, the first at the start and the last at the end. Placing each middle piece as
 * early as it fits is always right, so there is no backtracking.
 */
export function globMatch(pattern: string, value: string): boolean {
  const pieces = pattern.split('*');
  const fitsAt = (piece: string, at: number) => {
    if (at + piece.length > value.length) return false;
    for (let i = 0; i < piece.length; i++) {
      if (piece[i] !== '?' && piece[i] !== value[at + i]) return false;
    }
    return true;
  };
  const first = pieces[0]!;
  if (pieces.length === 1) return first.length === value.length && fitsAt(first, 0);
  const last = pieces[pieces.length - 1]!;
  if (!fitsAt(first, 0)) return false;
  const end = value.length - last.length;
  if (end < first.length || !fitsAt(last, end)) return false;
  let at = first.length;
  for (const piece of pieces.slice(1, -1)) {
    while (at + piece.length <= end && !fitsAt(piece, at)) at++;
    if (at + piece.length > end) return false;
    at += piece.length;
  }
  return true;
}

function patterns(value: JsonValue | undefined): string[] {
  return Array.isArray(value) ? value.filter((entry): entry is string => typeof entry === 'string') : [];
}

/**
 * Whether the server `serverName` may take part in a room whose m.room.server_acl content is
 * `aclContent` (undefined: the room has no ACL, so every server may). The port is ignored, the
 * patterns match case-insensitively; IP literals are refused when `allow_ip_literals` is false;
 * then `deny` wins over `allow`, and a server that `allow` does not name is refused. A server name
 * that is not valid is refused.
 */
export function serverAllowedByAcl(serverName: string, aclContent: JsonObject | undefined): boolean {
  if (aclContent === undefined) return true;
  const parsed = parseServerName(serverName);
  if (parsed === null) return false;
  if (parsed.kind !== 'dns' && aclContent.allow_ip_literals === false) return false;
  const host = parsed.host.toLowerCase();
  const matches = (list: JsonValue | undefined) =>
    patterns(list).some((pattern) => globMatch(pattern.toLowerCase(), host));
  if (matches(aclContent.deny)) return false;
  return matches(aclContent.allow);
}
