/**
 * Identifier grammars (appendices: Identifier Grammar): server names, user IDs, room IDs, room
 * aliases and event IDs. Every check is a pure function of the string.
 *
 * Identifiers from other servers are judged leniently where the spec asks us to (historical user
 * IDs); identifiers we mint are held to the current grammar (see {@link isValidLocalpart}).
 */
import type { RoomVersion } from './room-versions.ts';

/** User IDs, room IDs, room aliases and event IDs are limited to 255 bytes of UTF-8, sigil included. */
export const MAX_IDENTIFIER_BYTES = 255;

export interface ServerName {
  /** The host as written: a DNS name, a dotted quad, or an IPv6 literal with its brackets. */
  host: string;
  kind: 'dns' | 'ipv4' | 'ipv6';
  port?: number;
}

/** A user ID, room alias or `!opaque:domain` room ID split at its first colon. */
export interface NamespacedId {
  localpart: string;
  serverName: string;
}

// ---------------------------------------------------------------------------------------------
// Server names (appendices: Server Name)

const PORT = /^[0-9]{1,5}$/;
const DOTTED_QUAD = /^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$/;
const DNS_LABEL = /^[A-Za-z0-9-]+$/;
const IPV6_CHARS = /^[0-9A-Fa-f:.]{2,45}$/;
const IPV6_GROUP = /^[0-9A-Fa-f]{1,4}$/;

/**
 * Parses `hostname [":" port]`. The hostname is an IPv4 literal (four numbers 0-255), a
 * bracketed IPv6 literal (RFC 3513 text form), or a DNS name of at most 255 characters made of
 * non-empty labels of letters, digits and hyphens separated by dots. The port is 1 to 5 digits,
 * as the grammar says (so 99999 passes: the grammar does not bound it). Case is preserved:
 * server names compare case-sensitively.
 *
 * Stricter than the bare ABNF in one place, as the prose asks: a dotted quad with a number above
 * 255 is refused rather than read as a DNS name, and empty labels (`a..b`, a trailing dot) are
 * refused.
 */
export function parseServerName(name: string): ServerName | null {
  const split = splitHostPort(name);
  if (split === null) return null;
  const { host, portText } = split;
  if (portText !== undefined && !PORT.test(portText)) return null;
  const kind = hostKind(host);
  if (kind === null) return null;
  return portText === undefined ? { host, kind } : { host, kind, port: Number(portText) };
}

export function isValidServerName(name: string): boolean {
  return parseServerName(name) !== null;
}

function splitHostPort(name: string): { host: string; portText?: string } | null {
  if (name.startsWith('[')) {
    const close = name.indexOf(']');
    if (close < 0) return null;
    const rest = name.slice(close + 1);
    if (rest === '') return { host: name };
    if (!rest.startsWith(':')) return null;
    return { host: name.slice(0, close + 1), portText: rest.slice(1) };
  }
  // Neither DNS names nor IPv4 literals contain a colon, so the first one starts the port.
  const colon = name.indexOf(':');
  if (colon < 0) return { host: name };
  return { host: name.slice(0, colon), portText: name.slice(colon + 1) };
}

function hostKind(host: string): ServerName['kind'] | null {
  if (host.startsWith('[')) return host.endsWith(']') && isIpv6(host.slice(1, -1)) ? 'ipv6' : null;
  if (DOTTED_QUAD.test(host)) return isIpv4(host) ? 'ipv4' : null;
  return isDnsName(host) ? 'dns' : null;
}

function isDnsName(host: string): boolean {
  return host.length >= 1 && host.length <= 255 && host.split('.').every((label) => DNS_LABEL.test(label));
}

function isIpv4(text: string): boolean {
  const quad = DOTTED_QUAD.exec(text);
  if (!quad) return false;
  return quad.slice(1).every((part) => Number(part) <= 255);
}

/**
 * IPv6 text form (RFC 3513 section 2.2): eight groups of 1-4 hex digits, at most one `::`
 * standing for one or more zero groups, and optionally a dotted quad in place of the last two
 * groups. Zone IDs (`%eth0`) are not part of the server name grammar.
 */
export function isIpv6(text: string): boolean {
  if (!IPV6_CHARS.test(text)) return false;
  let groups = text;
  const lastColon = text.lastIndexOf(':');
  const tail = text.slice(lastColon + 1);
  if (tail.includes('.')) {
    if (lastColon < 0 || !isIpv4(tail)) return false;
    groups = `${text.slice(0, lastColon + 1)}0:0`; // the dotted quad fills two groups
  }
  const halves = groups.split('::');
  if (halves.length > 2) return false;
  if (halves.length === 1) return allGroups(groups.split(':'), 8);
  const [left = '', right = ''] = halves;
  const leftGroups = left === '' ? [] : left.split(':');
  const rightGroups = right === '' ? [] : right.split(':');
  return leftGroups.length + rightGroups.length <= 7 && allGroups([...leftGroups, ...rightGroups]);
}

function allGroups(groups: string[], exactly?: number): boolean {
  return (exactly === undefined || groups.length === exactly) && groups.every((g) => IPV6_GROUP.test(g));
}

// ---------------------------------------------------------------------------------------------
// User IDs (appendices: User Identifiers, Historical User IDs)

const STRICT_LOCALPART = /^[a-z0-9._=\-/+]+$/;
const COMPLIANT_LOCALPART = /^[\x21-\x7e]+$/;

/**
 * The current user ID localpart grammar: one or more of `a-z 0-9 . _ = - / +`. This is what we
 * require of user IDs we create (registration, bridges); remote ones get {@link isHistoricalLocalpart}.
 */
export function isValidLocalpart(localpart: string): boolean {
  return STRICT_LOCALPART.test(localpart);
}

/**
 * The spec's "compliant" localparts: non-empty and only U+0021..U+007E. Events from
 * non-compliant users are still accepted over federation, but such user IDs should not be passed
 * to clients outside an event (for example in device list updates).
 */
export function isCompliantLocalpart(localpart: string): boolean {
  return COMPLIANT_LOCALPART.test(localpart);
}

/**
 * What servers must still accept from others: any Unicode scalar values except `:` and NUL,
 * the empty string included.
 */
export function isHistoricalLocalpart(localpart: string): boolean {
  return !localpart.includes(':') && isOpaqueText(localpart);
}

/**
 * Splits `@localpart:server_name`, accepting historical localparts (so that rooms with old
 * senders keep working). Returns null if the sigil, server name or length is wrong. Use
 * {@link isValidUserId} with `strict` for IDs we are about to create.
 */
export function parseUserId(userId: string): NamespacedId | null {
  const parts = splitNamespaced(userId, '@');
  if (parts === null || !isHistoricalLocalpart(parts.localpart)) return null;
  return parts;
}

/** With `strict`, the localpart must also follow the current grammar ({@link isValidLocalpart}). */
export function isValidUserId(userId: string, options: { strict?: boolean } = {}): boolean {
  const parts = parseUserId(userId);
  if (parts === null) return false;
  return options.strict ? isValidLocalpart(parts.localpart) : true;
}

// ---------------------------------------------------------------------------------------------
// Room aliases (appendices: Room Aliases)

/**
 * Splits `#localpart:server_name`. The localpart may hold any Unicode scalar values except `:`
 * and NUL. The spec does not say whether it may be empty; we require at least one character,
 * as for room IDs.
 */
export function parseRoomAlias(alias: string): NamespacedId | null {
  const parts = splitNamespaced(alias, '#');
  if (parts === null || parts.localpart === '' || !isOpaqueText(parts.localpart)) return null;
  return parts;
}

export function isValidRoomAlias(alias: string): boolean {
  return parseRoomAlias(alias) !== null;
}

// ---------------------------------------------------------------------------------------------
// Room IDs and event IDs (appendices: Room IDs, Event IDs; rooms: v4-event-ids)

/**
 * `sigil` + URL-safe unpadded base64 of a SHA-256 hash: 43 characters, the last of which carries
 * only 2 of the hash's bits, so its low 4 bits are zero (one of A E I M Q U Y c g k o s w 0 4 8).
 */
const REFERENCE_HASH = /^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$/;
/** The same in standard unpadded base64 (room version 3 event IDs). */
const REFERENCE_HASH_BASE64 = /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]$/;

/**
 * A room ID. In room version 12 it is `!` + the create event's reference hash; in earlier
 * versions (1 to 11) it is `!opaque:server_name` with a non-empty opaque part free of `:`
 * and NUL, at most 255 bytes in all. Without a room version, either form is accepted.
 */
export function isValidRoomId(roomId: string, roomVersion?: RoomVersion): boolean {
  if (!roomId.startsWith('!')) return false;
  const hashForm = REFERENCE_HASH.test(roomId.slice(1));
  if (roomVersion?.roomIdFromCreateEvent) return hashForm;
  const domainForm = parseDomainRoomId(roomId) !== null;
  return roomVersion === undefined ? hashForm || domainForm : domainForm;
}

/** Splits a room ID of the `!opaque:server_name` form (room versions before 12). */
export function parseDomainRoomId(roomId: string): NamespacedId | null {
  const parts = splitNamespaced(roomId, '!');
  if (parts === null || parts.localpart === '' || !isOpaqueText(parts.localpart)) return null;
  return parts;
}

/**
 * An event ID. With a room version, its format is checked: `$` + the URL-safe reference hash
 * (v4+), `$` + the reference hash in standard base64 (v3), or `$opaque:server_name` (v1, v2; the
 * opaque part non-empty, at most 255 bytes in all). Without one, only the grammar common to all
 * versions is checked: the `$` sigil, a non-empty rest, at most 255 bytes.
 */
export function isValidEventId(eventId: string, roomVersion?: RoomVersion): boolean {
  if (!eventId.startsWith('$')) return false;
  switch (roomVersion?.eventIdFormat) {
    case 'base64url':
      return REFERENCE_HASH.test(eventId.slice(1));
    case 'base64':
      return REFERENCE_HASH_BASE64.test(eventId.slice(1));
    case 'legacy': {
      const parts = splitNamespaced(eventId, '$');
      return parts !== null && parts.localpart !== '' && isOpaqueText(parts.localpart);
    }
    default:
      return eventId.length > 1 && isOpaqueText(eventId) && utf8Length(eventId) <= MAX_IDENTIFIER_BYTES;
  }
}

/**
 * The server name of a user ID, a v1-v11 room ID or a v1/v2 event ID: everything after the first
 * colon (not checked), or undefined without one.
 */
export function serverNameOf(id: string): string | undefined {
  const colon = id.indexOf(':');
  return colon === -1 ? undefined : id.slice(colon + 1);
}

// ---------------------------------------------------------------------------------------------
// Shared helpers

/** Splits `sigil localpart ":" server_name`, checking the server name and the 255-byte limit. */
function splitNamespaced(id: string, sigil: string): NamespacedId | null {
  if (!id.startsWith(sigil) || utf8Length(id) > MAX_IDENTIFIER_BYTES) return null;
  const colon = id.indexOf(':');
  if (colon < 0) return null;
  const serverName = id.slice(colon + 1);
  if (!isValidServerName(serverName)) return null;
  return { localpart: id.slice(sigil.length, colon), serverName };
}

/** No NUL and no unpaired surrogates: the text is a sequence of Unicode scalar values. */
function isOpaqueText(text: string): boolean {
  return !text.includes('\u0000') && !/[\uD800-\uDFFF]/u.test(text);
}

function utf8Length(text: string): number {
  return Buffer.byteLength(text, 'utf8');
}
