/**
 * Push rules (client-server API, Push Notifications): the types, and the server-default rule set
 * every user starts with. Pure: no I/O.
 *
 * The defaults are those of the current specification (v1.17 and later), which dropped the legacy
 * rules that looked for the user's name or display name in the `body` of a message
 * (`.m.rule.contains_display_name`, `.m.rule.contains_user_name`, `.m.rule.roomnotif`) in favour
 * of the `m.mentions` rules `.m.rule.is_user_mention` and `.m.rule.is_room_mention`. So only the
 * user ID enters the defaults, not the display name.
 */

export type PushTweak =
  | { set_tweak: 'sound'; value: string }
  | { set_tweak: 'highlight'; value?: boolean }
  | { set_tweak: string; value?: string | number | boolean | null };

/** `notify`, or a tweak. (`dont_notify` and `coalesce` are historical and mean nothing now.) */
export type PushAction = 'notify' | 'dont_notify' | 'coalesce' | PushTweak;

export interface PushCondition {
  kind: string;
  /** Dot-separated path into the event (event_match, event_property_is/contains) or a power-level key. */
  key?: string;
  /** Glob pattern for event_match. */
  pattern?: string;
  /** Member count comparison for room_member_count, e.g. "2" or ">=10". */
  is?: string;
  /** The value for event_property_is / event_property_contains. */
  value?: string | number | boolean | null;
}

export interface PushRule {
  rule_id: string;
  default: boolean;
  enabled: boolean;
  actions: PushAction[];
  /** override, postcontent and underride rules. */
  conditions?: PushCondition[];
  /** content rules. */
  pattern?: string;
}

export interface PushRuleset {
  override: PushRule[];
  content: PushRule[];
  /** MSC4306's kind, between content and room rules; no server-default rules here (below). */
  postcontent: PushRule[];
  room: PushRule[];
  sender: PushRule[];
  underride: PushRule[];
}

/** The kinds in the order they are evaluated. */
export const PUSH_RULE_KINDS = ['override', 'content', 'postcontent', 'room', 'sender', 'underride'] as const;
export type PushRuleKind = (typeof PUSH_RULE_KINDS)[number];

const soundDefault: PushTweak = { set_tweak: 'sound', value: 'default' };
const highlight: PushTweak = { set_tweak: 'highlight' };

function rule(ruleId: string, conditions: PushCondition[], actions: PushAction[], enabled = true): PushRule {
  return { rule_id: ruleId, default: true, enabled, conditions, actions };
}

function typeIs(type: string): PushCondition {
  return { kind: 'event_match', key: 'type', pattern: type };
}

const emptyStateKey: PushCondition = { kind: 'event_match', key: 'state_key', pattern: '' };
const oneToOne: PushCondition = { kind: 'room_member_count', is: '2' };

/**
 * The server-default push rules of a user, in the order the specification lists them (which is
 * their priority order within each kind). Every call returns fresh objects.
 */
export function defaultPushRules(userId: string): PushRuleset {
  return {
    override: [
      // Off by default; a user turns it on to silence everything.
      rule('.m.rule.master', [], [], false),
      rule(
        '.m.rule.suppress_notices',
        [{ kind: 'event_match', key: 'content.msgtype', pattern: 'm.notice' }],
        [],
      ),
      rule(
        '.m.rule.invite_for_me',
        [
          typeIs('m.room.member'),
          { kind: 'event_match', key: 'content.membership', pattern: 'invite' },
          { kind: 'event_match', key: 'state_key', pattern: userId },
        ],
        ['notify', { ...soundDefault }],
      ),
      rule('.m.rule.member_event', [typeIs('m.room.member')], []),
      rule(
        '.m.rule.is_user_mention',
        [{ kind: 'event_property_contains', key: 'content.m\\.mentions.user_ids', value: userId }],
        ['notify', { ...soundDefault }, { ...highlight }],
      ),
      rule(
        '.m.rule.is_room_mention',
        [
          { kind: 'event_property_is', key: 'content.m\\.mentions.room', value: true },
          { kind: 'sender_notification_permission', key: 'room' },
        ],
        ['notify', { ...highlight }],
      ),
      rule(
        '.m.rule.tombstone',
        [typeIs('m.room.tombstone'), { ...emptyStateKey }],
        ['notify', { ...highlight }],
      ),
      rule('.m.rule.reaction', [typeIs('m.reaction')], []),
      rule('.m.rule.room.server_acl', [typeIs('m.room.server_acl'), { ...emptyStateKey }], []),
      rule(
        '.m.rule.suppress_edits',
        [{ kind: 'event_property_is', key: 'content.m\\.relates_to.rel_type', value: 'm.replace' }],
        [],
      ),
    ],
    content: [],
    room: [],
    sender: [],
    // MSC4306 (thread subscriptions) puts its default rules here; this server has no thread
    // subscriptions, so there are none, but a user's own rules of the kind work.
    postcontent: [],
    underride: [
      rule('.m.rule.call', [typeIs('m.call.invite')], ['notify', { set_tweak: 'sound', value: 'ring' }]),
      rule(
        '.m.rule.encrypted_room_one_to_one',
        [{ ...oneToOne }, typeIs('m.room.encrypted')],
        ['notify', { ...soundDefault }],
      ),
      rule(
        '.m.rule.room_one_to_one',
        [{ ...oneToOne }, typeIs('m.room.message')],
        ['notify', { ...soundDefault }],
      ),
      rule('.m.rule.message', [typeIs('m.room.message')], ['notify']),
      rule('.m.rule.encrypted', [typeIs('m.room.encrypted')], ['notify']),
    ],
  };
}
