import { errors } from '../errors.ts';

/**
 * Conclave refuses control characters in the names clients give it: event types, state keys,
 * room alias localparts and user IDs. The spec allows any Unicode in most of them; we are
 * stricter on purpose (spec/limits.md), because such names are shown to people and written to
 * logs, where a line break or an escape sequence can pass for something it is not (a state type
 * "m.room.name\n", say). Checked where client input enters (routes and services); events from
 * other servers, once federation exists, are not refused for it.
 *
 * Control characters: C0 (U+0000-U+001F), DEL (U+007F) and C1 (U+0080-U+009F).
 */
export function hasControlCharacters(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c <= 0x1f || (c >= 0x7f && c <= 0x9f)) return true;
  }
  return false;
}

/** 400 M_INVALID_PARAM naming `what` when `text` holds a control character. */
export function refuseControlCharacters(text: string, what: string): void {
  if (hasControlCharacters(text)) {
    throw errors.invalidParam(`${what} may not contain control characters (U+0000-U+001F, U+007F-U+009F)`);
  }
}
